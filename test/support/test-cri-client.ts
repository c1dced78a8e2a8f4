/** The CRI calls only tests make (production never execs into a container), on top of kybernate's CRI client. */
import { CriClient, type CriClientOptions, RUNTIME_TIMEOUT_MARGIN_MS } from "../../src/cri/client.js";
import type { ExecSyncResponse, Image } from "../../src/cri/types.js";

export interface ExecResult {
  stdout: string;
  stderr: string;
  exitCode: number;
}

export class TestCriClient extends CriClient {
  constructor(socket?: string, options: CriClientOptions = {}) {
    super(socket, options);
  }

  /** ExecSync; stdout/stderr decoded as UTF-8. A non-zero exit code is a result, not an error. */
  async exec(containerId: string, cmd: string[], timeoutS = 10): Promise<ExecResult> {
    const res: ExecSyncResponse = await this.rpc(
      "ExecSync",
      { containerId, cmd, timeout: timeoutS },
      { timeoutMs: timeoutS * 1000 + RUNTIME_TIMEOUT_MARGIN_MS },
    );
    return {
      stdout: res.stdout.toString("utf8"),
      stderr: res.stderr.toString("utf8"),
      exitCode: res.exitCode,
    };
  }

  /** The image, or null when the runtime does not have it. */
  async imageStatus(image: string): Promise<Image | null> {
    return (await this.rpc("ImageStatus", { image: { image } })).image;
  }
}

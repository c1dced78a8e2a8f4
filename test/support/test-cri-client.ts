/**
 * The CRI calls only tests make (production never execs into a container), on top of
 * kybernate's CRI client.
 */
import { randomUUID } from "node:crypto";
import {
  CriClient,
  type CriClientOptions,
  type PodOptions,
  RUNTIME_TIMEOUT_MARGIN_MS,
  type RunningPod,
} from "../../src/cri/client.js";
import type { ExecSyncResponse, Image, In, PodSandboxConfig } from "../../src/cri/types.js";

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

  /**
   * A pod with its own network namespace on the runtime's CNI network (kubelet's default): containerd makes the
   * namespace and calls the plugins. `cgroupParent` as the kubelet gives it (the pod's own cgroup).
   */
  async runPodNetworkPod(
    name: string,
    namespace: string,
    options: PodOptions & { cgroupParent?: string } = {},
  ): Promise<RunningPod> {
    const config: In<PodSandboxConfig> = {
      metadata: { name, namespace, uid: options.uid ?? randomUUID(), attempt: 0 },
      hostname: name.slice(0, 63),
      labels: options.labels ?? {},
      annotations: options.annotations ?? {},
      logDirectory: options.logDirectory ?? "",
      linux: {
        cgroupParent: options.cgroupParent ?? "",
        securityContext: { namespaceOptions: { network: "POD", pid: "CONTAINER", ipc: "POD" } },
      },
    };
    return { podId: await this.runPodSandbox(config), config };
  }

  /** The pod's IP on its network; "" for a host-network pod. */
  async podIp(podId: string): Promise<string> {
    return (await this.podSandboxStatus(podId)).status?.network?.ip ?? "";
  }

  /** The image, or null when the runtime does not have it. */
  async imageStatus(image: string): Promise<Image | null> {
    return (await this.rpc("ImageStatus", { image: { image } })).image;
  }
}

import { basename } from "node:path";
import type { TaskRef } from "../containerd/tasks.js";
import type { ProcessIdentity } from "../host/proc.js";
import type { HostView } from "./stage-context.js";

/** The CRI plugin's containerd namespace, when runc's command line does not name one. */
const CRI_NAMESPACE = "k8s.io";

/**
 * Who is checkpointing a container, as pre-dump finds them: CRIU (the hook's parent), runc (CRIU's parent, run
 * by containerd's shim with `--root <runc root>/<containerd namespace>`) and the image directory containerd made
 * for CRIU. When the caller's deadline passes, containerd's shim kills runc while CRIU still works and removes
 * the image directory; containerd's own deferred resume then runs with the expired context and is lost. Seeing
 * runc die before CRIU is how kybernate knows.
 */
export class CheckpointCaller {
  /** runc died while CRIU still ran: containerd abandoned the checkpoint. */
  abandoned = false;
  private readonly controller = new AbortController();
  private timer: NodeJS.Timeout | undefined;

  private constructor(
    private readonly host: HostView,
    readonly criu: ProcessIdentity | undefined,
    readonly runc: ProcessIdentity | undefined,
    /** The task in containerd's terms, for its Tasks API. */
    readonly task: TaskRef,
    /** CRIU's image directory as a host path; undefined when CRIU gave none. */
    readonly imageDir: string | undefined,
    /** CRIU's log (runc names it dump.log in its work directory), where a failure after pre-dump is told. */
    readonly criuLog: string | undefined,
  ) {}

  static async find(
    host: HostView,
    request: { containerId: string; criuPid: number; imageDir?: string | undefined },
  ): Promise<CheckpointCaller> {
    // The container is frozen while this runs: what does not depend on another read is read at once.
    const [criu, runcPid, imageDir, criuFiles] = await Promise.all([
      host.identify(request.criuPid),
      host.parentOf(request.criuPid),
      request.imageDir ? host.realPath(request.imageDir) : undefined,
      host.openFiles(request.criuPid),
    ]);
    const [runc, args] =
      criu && runcPid ? await Promise.all([host.identify(runcPid), host.commandLine(runcPid)]) : [];
    const criuLog = criu ? criuFiles.find((p) => p.endsWith(".log")) : undefined;
    return new CheckpointCaller(
      host,
      criu,
      runc,
      { namespace: namespaceOf(args ?? []) ?? CRI_NAMESPACE, containerId: request.containerId },
      imageDir,
      criuLog,
    );
  }

  /** Aborts (with the reason) once containerd abandons the checkpoint: the GPU stage stops at its next step. */
  get signal(): AbortSignal {
    return this.controller.signal;
  }

  /** Looks again: is CRIU gone, did runc die first? */
  async poll(): Promise<{ criuGone: boolean }> {
    const criuGone = !this.criu || !(await this.host.isSameProcess(this.criu));
    if (!criuGone && this.runc && !this.abandoned && !(await this.host.isSameProcess(this.runc))) {
      this.abandoned = true;
      this.controller.abort(
        new Error(
          `containerd abandoned the checkpoint: runc (pid ${this.runc.pid}) was killed while CRIU (pid ${this.criu?.pid}) still ran — the caller's deadline passed (kubelet ?timeout=, crictl --timeout)`,
        ),
      );
    }
    return { criuGone };
  }

  /** Polls every `ms` until stop(): the GPU stage learns of an abandoned checkpoint while it runs. */
  watch(ms: number): void {
    const arm = () => {
      // A failed look is only a missed one: the next is armed all the same.
      this.timer = setTimeout(
        () =>
          void this.poll()
            .catch(() => undefined)
            .then(() => this.timer && arm()),
        ms,
      );
      this.timer.unref();
    };
    arm();
  }

  stop(): void {
    clearTimeout(this.timer);
    this.timer = undefined;
  }

  /**
   * How CRIU's dump ended, from the end of its log (read once CRIU is gone): CRIU ends a good dump with
   * "Dumping finished successfully" and names a failure in an "Error (file:line): …" line. Undefined when the
   * log cannot be read (none named, removed by containerd).
   */
  async criuOutcome(): Promise<{ ok: true } | { ok: false; error: string } | undefined> {
    if (!this.criuLog) return undefined;
    const tail = await this.host.readTail(this.criuLog, 64 * 1024);
    if (tail === undefined) return undefined;
    if (/Dumping finished successfully/.test(tail)) return { ok: true };
    // The last error before CRIU's closing "Dumping FAILED." is the one that names the cause.
    const errors = tail.split("\n").filter((line) => /\bError \(/.test(line) && !/Dumping FAILED/.test(line));
    const line = errors.at(-1) ?? tail.trim().split("\n").pop() ?? "no message";
    return { ok: false, error: line.replace(/^\(\d+\.\d+\)\s*/, "").slice(0, 400) };
  }

  /** Whether containerd is done with CRIU's images (it removes the directory when it has stored or dropped them). */
  async imagesGone(): Promise<boolean | undefined> {
    return this.imageDir ? !(await this.host.exists(this.imageDir)) : undefined;
  }
}

/** The containerd namespace from runc's `--root <dir>/<namespace>` (containerd's shim adds the namespace). */
export function namespaceOf(args: readonly string[]): string | undefined {
  for (let i = 0; i < args.length; i++) {
    const arg = args[i] ?? "";
    const root =
      arg === "--root" ? args[i + 1] : arg.startsWith("--root=") ? arg.slice("--root=".length) : undefined;
    if (root) return basename(root) || undefined;
  }
  return undefined;
}

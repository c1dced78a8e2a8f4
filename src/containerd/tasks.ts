import { isAbsolute } from "node:path";
import type { Client, Metadata, ServiceClientConstructor, ServiceError } from "@grpc/grpc-js";
import type { Deadline } from "../base/deadline.js";
import { protoDir } from "../base/paths.js";

export const DEFAULT_CONTAINERD_SOCKET = "/run/containerd/containerd.sock";

/** A task's status as containerd's Tasks service reports it (containerd.v1.types.Status). */
/** A container as containerd names it: its id within a containerd namespace (CRI's is "k8s.io"). */
export interface TaskRef {
  namespace: string;
  containerId: string;
}

type Unary = (
  req: unknown,
  meta: Metadata,
  opts: { deadline: number },
  cb: (err: ServiceError | null, res: unknown) => void,
) => void;

/**
 * containerd's own Tasks API on its gRPC socket, for the one thing CRI cannot do: resume a task containerd
 * believes paused. containerd pauses a container for a checkpoint and resumes it with the caller's context;
 * when that context is cancelled the resume is lost, and only Tasks/Resume (through the shim) clears the shim's
 * "paused" state — thawing the cgroup leaves exec refused ("cannot exec in a paused state").
 */
export class ContainerdTasks {
  private client: Client | undefined;

  constructor(readonly socket: string = DEFAULT_CONTAINERD_SOCKET) {
    if (!isAbsolute(socket))
      throw new Error(
        `containerd's socket must be an absolute path (e.g. ${DEFAULT_CONTAINERD_SOCKET}), got "${socket}"`,
      );
  }

  async resume(task: TaskRef, deadline: Deadline): Promise<void> {
    await this.call("Resume", task, { containerId: task.containerId }, deadline);
  }

  close(): void {
    this.client?.close();
    this.client = undefined;
  }

  private async call(
    method: "Get" | "Resume",
    task: TaskRef,
    request: object,
    deadline: Deadline,
  ): Promise<unknown> {
    // gRPC is loaded on the first call: kybernate needs containerd's API only after a checkpoint went wrong.
    const grpc = await import("@grpc/grpc-js");
    this.client ??= new (await tasksService())(`unix://${this.socket}`, grpc.credentials.createInsecure());
    const fn = (this.client as unknown as Record<string, Unary>)[method] as Unary;
    const meta = new grpc.Metadata();
    // containerd picks the namespace of every call from this header.
    meta.set("containerd-namespace", task.namespace);
    return new Promise((resolve, reject) => {
      fn.call(
        this.client,
        request,
        meta,
        { deadline: Math.min(deadline.at, Date.now() + 2 ** 31 - 1) },
        (err, res) => {
          if (!err) return resolve(res);
          const hint =
            err.code === grpc.status.UNAVAILABLE
              ? ` (is containerd listening on ${this.socket}? give kybernate run --containerd-socket)`
              : "";
          reject(
            new Error(
              `containerd's Tasks/${method} of ${task.containerId} in namespace ${task.namespace} on ${this.socket} failed: ${err.details || err.message}${hint}`,
            ),
          );
        },
      );
    });
  }
}

let cached: ServiceClientConstructor | undefined;

async function tasksService(): Promise<ServiceClientConstructor> {
  if (!cached) {
    const [{ loadPackageDefinition }, { loadSync }] = await Promise.all([
      import("@grpc/grpc-js"),
      import("@grpc/proto-loader"),
    ]);
    const definition = loadSync("containerd/tasks.proto", {
      includeDirs: [protoDir],
      keepCase: false,
      enums: String,
      defaults: true,
    });
    // biome-ignore lint/suspicious/noExplicitAny: loadPackageDefinition returns an untyped namespace tree.
    cached = (loadPackageDefinition(definition) as any).containerd.services.tasks.v1.Tasks;
  }
  return cached as ServiceClientConstructor;
}

import { status } from "@grpc/grpc-js";

/** A failed CRI call: names the call, the socket, the gRPC status and what to do about it. */
export class CriError extends Error {
  override readonly name = "CriError";

  constructor(
    readonly call: string,
    readonly address: string,
    /** gRPC status code (see @grpc/grpc-js `status`). */
    readonly code: number,
    readonly details: string,
    readonly deadlineMs: number,
  ) {
    super(
      `CRI ${call} on ${address} failed: ${statusName(code)}: ${details}${hint(call, code, address, deadlineMs)}`,
    );
  }
}

export function statusName(code: number): string {
  return (status as unknown as Record<number, string>)[code] ?? `status ${code}`;
}

function hint(call: string, code: number, address: string, deadlineMs: number): string {
  switch (code) {
    case status.UNIMPLEMENTED:
      if (call === "CheckpointContainer") return " (containerd >= 2.0 required)";
      return " (the runtime does not serve this CRI v1 call)";
    case status.UNAVAILABLE:
      return ` (is containerd running and listening on ${address}? Check the socket path and that you are root)`;
    case status.DEADLINE_EXCEEDED: {
      const s = `${Math.round(deadlineMs / 100) / 10} s`;
      if (call === "CheckpointContainer") {
        // containerd's deferred resume runs with the cancelled context when the client gives up.
        return ` (gave up after ${s}: containerd may leave the container paused; give the checkpoint more time)`;
      }
      return ` (gave up after ${s}; pass a longer timeout)`;
    }
    default:
      return "";
  }
}

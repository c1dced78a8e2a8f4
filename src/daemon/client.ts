import { connect } from "node:net";
import { Deadline } from "../base/deadline.js";
import type { DaemonReply, DaemonRequest } from "./protocol.js";

/** A hook's reply is a verdict and a short reason; anything near this is not the daemon talking. */
export const MAX_HOOK_REPLY_BYTES = 64 * 1024;
/** The status reply lists every managed container and its last operation. */
export const MAX_STATUS_REPLY_BYTES = 16 * 1024 * 1024;

/**
 * Sends one request to the daemon and waits for its one-line reply, at most `timeoutMs`. A reply longer than
 * `maxReplyBytes` (default by kind: MAX_HOOK_REPLY_BYTES, MAX_STATUS_REPLY_BYTES) is refused, not buffered.
 */
export function askDaemon(
  socketPath: string,
  request: DaemonRequest,
  timeoutMs: number,
  maxReplyBytes = request.kind === "hook" ? MAX_HOOK_REPLY_BYTES : MAX_STATUS_REPLY_BYTES,
): Promise<DaemonReply> {
  const deadline = Deadline.after(timeoutMs, { what: "the kybernate daemon's reply" });
  const socket = connect(socketPath);
  const chunks: Buffer[] = [];
  let size = 0;
  const reply = new Promise<DaemonReply>((resolve, reject) => {
    const fail = (error: Error) => {
      socket.destroy();
      reject(error);
    };
    socket.on("connect", () => socket.write(`${JSON.stringify(request)}\n`));
    socket.on("data", (chunk: Buffer) => {
      const newline = chunk.indexOf(0x0a);
      const end = newline < 0 ? chunk.length : newline;
      if (size + end > maxReplyBytes)
        return fail(
          new Error(
            `the kybernate daemon on ${socketPath} sent a reply of more than ${maxReplyBytes} bytes; refused (is something else listening on that socket?)`,
          ),
        );
      chunks.push(chunk.subarray(0, end));
      size += end;
      if (newline < 0) return;
      socket.end();
      try {
        resolve(JSON.parse(Buffer.concat(chunks).toString("utf8")) as DaemonReply);
      } catch {
        reject(new Error(`the kybernate daemon on ${socketPath} sent an unreadable reply`));
      }
    });
    socket.on("error", (error: NodeJS.ErrnoException) => {
      const why =
        error.code === "ENOENT" || error.code === "ECONNREFUSED"
          ? "is the kybernate daemon running? (kybernate run)"
          : error.message;
      fail(new Error(`cannot reach the kybernate daemon on ${socketPath}: ${why}`));
    });
    socket.on("close", () =>
      fail(new Error(`the kybernate daemon on ${socketPath} closed the connection without answering`)),
    );
  });
  return deadline
    .race(
      reply,
      () => new Error(`the kybernate daemon on ${socketPath} did not answer within ${timeoutMs} ms`),
    )
    .finally(() => {
      deadline.dispose();
      socket.destroy();
    });
}

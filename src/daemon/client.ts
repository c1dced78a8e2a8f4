import { connect } from "node:net";
import type { DaemonReply, DaemonRequest } from "./protocol.js";

/** Sends one request to the daemon and waits for its one-line reply, at most `timeoutMs`. */
export function askDaemon(
  socketPath: string,
  request: DaemonRequest,
  timeoutMs: number,
): Promise<DaemonReply> {
  return new Promise((resolve, reject) => {
    const socket = connect(socketPath);
    let buffered = "";
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new Error(`the kybernate daemon on ${socketPath} did not answer within ${timeoutMs} ms`));
    }, timeoutMs);
    const fail = (error: Error) => {
      clearTimeout(timer);
      socket.destroy();
      reject(error);
    };
    socket.setEncoding("utf8");
    socket.on("connect", () => socket.write(`${JSON.stringify(request)}\n`));
    socket.on("data", (chunk: string) => {
      buffered += chunk;
      const newline = buffered.indexOf("\n");
      if (newline < 0) return;
      clearTimeout(timer);
      socket.end();
      try {
        resolve(JSON.parse(buffered.slice(0, newline)) as DaemonReply);
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
}

import { chmod, mkdir, rm } from "node:fs/promises";
import { connect, createServer, type Server, type Socket } from "node:net";
import { dirname } from "node:path";
import { containerIdProblem } from "../base/container-id.js";
import type { Logger } from "../base/log.js";
import type { Coordinator } from "./coordinator.js";
import type { DaemonReply, DaemonRequest, DaemonStatusData } from "./protocol.js";

/** Status the CLI (`kybernate ps`) shows: what is in flight and how each container's last operation went. */
export type StatusProvider = () => DaemonStatusData;

const MAX_REQUEST_BYTES = 64 * 1024;

/**
 * Refuses to start beside a live daemon: a second kybernate would take over the hook's socket, and two
 * kybernate NRI plugins on one containerd make containerd fail every GPU container's creation (both set the
 * same annotations). A socket nobody answers on is what a crashed daemon left: it is replaced.
 */
export async function assertNoLiveDaemon(socketPath: string): Promise<void> {
  const live = await new Promise<boolean>((resolve) => {
    const probe = connect(socketPath);
    probe.once("connect", () => {
      probe.destroy();
      resolve(true);
    });
    probe.once("error", () => resolve(false));
  });
  if (live) {
    throw new Error(
      `another kybernate daemon is already serving ${socketPath}: stop it first (one kybernate per node: two would both adjust every GPU container, and containerd refuses that)`,
    );
  }
}

/**
 * The root-only socket through which CRIU's action hook asks the daemon for GPU state changes. Only root
 * may connect: the directory is 0700 and the socket 0600.
 */
export async function startDaemonServer(
  socketPath: string,
  coordinator: Coordinator,
  status: StatusProvider,
  log: Logger,
): Promise<Server> {
  await mkdir(dirname(socketPath), { recursive: true, mode: 0o700 });
  await chmod(dirname(socketPath), 0o700);
  await rm(socketPath, { force: true });
  const server = createServer((socket) => serve(socket, coordinator, status, log));
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(socketPath, () => resolve());
  });
  await chmod(socketPath, 0o600);
  return server;
}

/** One request per connection: once its line is in, nothing more is read into it, so it runs once. */
function serve(socket: Socket, coordinator: Coordinator, status: StatusProvider, log: Logger): void {
  let buffered = "";
  let taken = false;
  let answered = false;
  socket.setEncoding("utf8");
  const reply = (message: DaemonReply) => {
    if (answered) return;
    answered = true;
    socket.end(`${JSON.stringify(message)}\n`);
  };
  socket.on("error", (error) => log.debug({ err: error }, "hook connection error"));
  socket.on("data", (chunk: string) => {
    // Bytes after the request line are dropped (still read, so the connection closes normally).
    if (taken) return;
    buffered += chunk;
    const newline = buffered.indexOf("\n");
    if (newline < 0 && buffered.length <= MAX_REQUEST_BYTES) return;
    taken = true;
    const line = newline < 0 ? "" : buffered.slice(0, newline);
    buffered = "";
    if (newline < 0 || line.length > MAX_REQUEST_BYTES)
      return reply({ ok: false, error: "request too large" });
    let request: DaemonRequest;
    try {
      request = parseRequest(line);
    } catch (error) {
      return reply({ ok: false, error: (error as Error).message });
    }
    if (request.kind === "status") return reply({ ok: true, data: status() });
    coordinator.handle(request).then(reply, (error: Error) => {
      log.error({ err: error }, "hook request failed");
      reply({ ok: false, error: error.message });
    });
  });
}

function parseRequest(line: string): DaemonRequest {
  let value: unknown;
  try {
    value = JSON.parse(line);
  } catch {
    throw new Error("request is not JSON");
  }
  const request = value as Partial<DaemonRequest> & Record<string, unknown>;
  if (request.kind === "status") return { kind: "status" };
  if (request.kind !== "hook") throw new Error(`unknown request kind "${String(request.kind)}"`);
  if (request.action !== "pre-dump" && request.action !== "pre-restore" && request.action !== "post-resume") {
    throw new Error(`unknown hook action "${String(request.action)}"`);
  }
  const fields =
    request.action === "pre-restore"
      ? (["criuPid", "deadlineMs"] as const)
      : (["initPid", "criuPid", "deadlineMs"] as const);
  for (const field of fields) {
    if (!Number.isInteger(request[field]) || (request[field] as number) <= 0) {
      throw new Error(`hook request field ${field} must be a positive integer`);
    }
  }
  const problem = containerIdProblem(request.containerId);
  if (problem) throw new Error(`hook request field containerId: ${problem}`);
  return request as DaemonRequest;
}

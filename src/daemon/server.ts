import type { Stats } from "node:fs";
import { chmod, lstat, mkdir, rm } from "node:fs/promises";
import { connect, createServer, type Server, type Socket } from "node:net";
import { dirname } from "node:path";
import { containerIdProblem } from "../base/container-id.js";
import type { Logger } from "../base/log.js";
import type { Coordinator } from "./coordinator.js";
import {
  type DaemonReply,
  type DaemonRequest,
  type DaemonStatusData,
  HOOK_ACTIONS,
  type StoreRequest,
} from "./protocol.js";

/** Status the CLI (`kybernate ps`) shows: what is in flight and how each container's last operation went. */
export type StatusProvider = () => DaemonStatusData;

/** Answers `kybernate store` and `kybernate checkpoint`'s archive path (absent: no page store on this node). */
export type StoreHandler = (request: StoreRequest) => Promise<DaemonReply>;

const MAX_REQUEST_BYTES = 64 * 1024;

/** sun_path holds 108 bytes with its NUL; the kernel (and Node) silently cut a longer path. */
export const MAX_SOCKET_PATH_BYTES = 107;

/** Throws, naming the path and the fix, when the kernel would cut it and bind or reach another path. */
export function assertSocketPathFits(socketPath: string): void {
  const bytes = Buffer.byteLength(socketPath);
  if (bytes > MAX_SOCKET_PATH_BYTES)
    throw new Error(
      `--socket ${socketPath} is ${bytes} bytes long; a unix socket path may have at most ${MAX_SOCKET_PATH_BYTES}: give a shorter --socket`,
    );
}

/**
 * Refuses to start beside a live daemon: a second kybernate would take over the hook's socket, and two
 * kybernate NRI plugins on one containerd make containerd fail every GPU container's creation (both set the
 * same annotations). A socket nobody answers on is what a crashed daemon left: it is replaced.
 */
export async function assertNoLiveDaemon(socketPath: string): Promise<void> {
  assertSocketPathFits(socketPath);
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
 * The root-only socket through which CRIU's action hook asks the daemon for GPU state changes. Only root may
 * connect: the socket is 0600 from its bind on, in a directory only its owner may write to. A directory
 * kybernate creates is made 0700; one that exists is left as it is (`--socket /run/kybernate.sock` must not
 * make /run 0700), but refused when others may write to it (they could replace the socket). Whatever sits at
 * the path is removed only when it is a socket (one a crashed daemon left; assertNoLiveDaemon has checked
 * nobody answers on it).
 */
const connections = new WeakMap<Server, Set<Socket>>();

/**
 * Stops serving: no new connection, and the open ones (a hook waiting for its answer) are cut. A hook cut off
 * fails its CRIU stage, which fails the checkpoint cleanly; what the daemon had started stays in its journal.
 */
export async function closeDaemonServer(server: Server): Promise<void> {
  const closed = new Promise<void>((resolve) => server.close(() => resolve()));
  for (const socket of connections.get(server) ?? []) socket.destroy();
  await closed;
}

export async function startDaemonServer(
  socketPath: string,
  coordinator: Coordinator,
  status: StatusProvider,
  log: Logger,
  store?: StoreHandler,
): Promise<Server> {
  assertSocketPathFits(socketPath);
  await preparePrivateDir(dirname(socketPath));
  await removeStaleSocket(socketPath);
  const open = new Set<Socket>();
  const server = createServer((socket) => {
    open.add(socket);
    socket.once("close", () => open.delete(socket));
    serve(socket, coordinator, status, log, store);
  });
  connections.set(server, open);
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    // Node binds within listen(): with this umask the socket is never reachable by others, not even briefly.
    const umask = process.umask(0o177);
    try {
      server.listen(socketPath, () => resolve());
    } finally {
      process.umask(umask);
    }
  });
  await chmod(socketPath, 0o600);
  return server;
}

async function preparePrivateDir(dir: string): Promise<void> {
  let s: Stats;
  try {
    s = await lstat(dir);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== "ENOENT") throw error;
    await mkdir(dir, { recursive: true, mode: 0o700 });
    // mkdir's mode passes through the umask; this directory is kybernate's own.
    await chmod(dir, 0o700);
    return;
  }
  if (!s.isDirectory())
    throw new Error(`the socket's directory ${dir} is not a directory: give a --socket in a directory`);
  const uid = process.geteuid?.() ?? s.uid;
  if (s.uid !== uid && s.uid !== 0)
    throw new Error(
      `the socket's directory ${dir} belongs to uid ${s.uid}, who could replace the socket: give a --socket in a directory of root's (the default: /run/kybernate/)`,
    );
  if (s.mode & 0o022)
    throw new Error(
      `the socket's directory ${dir} is writable by others (mode ${(s.mode & 0o7777).toString(8)}), who could replace the socket: give a --socket in a private directory (the default: /run/kybernate/)`,
    );
}

async function removeStaleSocket(socketPath: string): Promise<void> {
  let s: Stats;
  try {
    s = await lstat(socketPath);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === "ENOENT") return;
    throw error;
  }
  if (!s.isSocket())
    throw new Error(
      `${socketPath} exists and is not a socket (${kindOf(s)}): kybernate does not remove it; move it away or give another --socket`,
    );
  await rm(socketPath, { force: true });
}

function kindOf(s: Stats): string {
  if (s.isFile()) return "a regular file";
  if (s.isDirectory()) return "a directory";
  if (s.isSymbolicLink()) return "a symbolic link";
  if (s.isFIFO()) return "a FIFO";
  return "a special file";
}

/** One request per connection: once its line is in, nothing more is read into it, so it runs once. */
function serve(
  socket: Socket,
  coordinator: Coordinator,
  status: StatusProvider,
  log: Logger,
  store: StoreHandler | undefined,
): void {
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
    if (request.kind === "store") {
      if (!store)
        return reply({
          ok: false,
          error: "kybernate runs without a page store on this node (kybernate run --page-store DIR)",
        });
      return void store(request).then(reply, (error: Error) => reply({ ok: false, error: error.message }));
    }
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
  if (request.kind === "store") return parseStoreRequest(request as Record<string, unknown>);
  if (request.kind !== "hook") throw new Error(`unknown request kind "${String(request.kind)}"`);
  if (!HOOK_ACTION_SET.has(String(request.action))) {
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

const HOOK_ACTION_SET = new Set<string>(HOOK_ACTIONS);

function parseStoreRequest(r: Record<string, unknown>): StoreRequest {
  if (r.op === "ls") return { kind: "store", op: "ls" };
  if (r.op === "gc") {
    if (r.keep !== undefined && !(Number.isInteger(r.keep) && (r.keep as number) >= 0))
      throw new Error("store request field keep must be a whole number >= 0");
    return { kind: "store", op: "gc", ...(r.keep !== undefined ? { keep: r.keep as number } : {}) };
  }
  if (r.op === "archive") {
    if (typeof r.checkpointId !== "string" || typeof r.path !== "string" || !r.path.startsWith("/"))
      throw new Error("store request archive needs checkpointId and an absolute path");
    return { kind: "store", op: "archive", checkpointId: r.checkpointId, path: r.path };
  }
  throw new Error(`unknown store request "${String(r.op)}"`);
}

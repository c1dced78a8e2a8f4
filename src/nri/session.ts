import { connect, type Socket } from "node:net";
import { Deadline } from "../base/deadline.js";
import type { Logger } from "../base/log.js";
import { Multiplexer } from "../wire/mux/multiplexer.js";
import { TtrpcClient } from "../wire/ttrpc/client.js";
import { TtrpcServer } from "../wire/ttrpc/server.js";
import { encode, PLUGIN_SERVICE, RUNTIME_SERVICE } from "./codec.js";
import type { NriHandlers } from "./handlers.js";
import { PluginService } from "./plugin-service.js";

/** NRI's multiplexer connection IDs: the plugin serves on 1 and calls the runtime on 2. */
const PLUGIN_CONN = 1;
const RUNTIME_CONN = 2;

export interface SessionOptions {
  socketPath: string;
  pluginName: string;
  pluginIndex: string;
  /** How long registration (RegisterPlugin + Configure + Synchronize) may take; containerd allows 5 s. */
  registrationTimeoutMs: number;
  log: Logger;
  /** Aborting closes the connection, whether registration is still under way or done. */
  signal?: AbortSignal;
}

/** One registered connection to the runtime; `closed` settles when the runtime goes away or drops us. */
export interface Session {
  readonly runtime: string;
  readonly closed: Promise<Error | undefined>;
  close(): void;
}

export async function openSession(handlers: NriHandlers, options: SessionOptions): Promise<Session> {
  const { socketPath, log } = options;
  const socket = await dial(socketPath);
  // Without this, stop() during registration would wait for the session it never sees to close by itself.
  if (options.signal?.aborted) socket.destroy();
  const onAbort = (): void => void socket.destroy();
  options.signal?.addEventListener("abort", onAbort, { once: true });
  socket.once("close", () => options.signal?.removeEventListener("abort", onAbort));
  const mux = new Multiplexer(socket);
  let failure: Error | undefined;
  const closed = new Promise<Error | undefined>((resolve) => {
    socket.once("error", (error) => {
      failure ??= error;
    });
    socket.once("close", () => resolve(failure));
  });
  let synchronized!: () => void;
  const whenSynchronized = new Promise<void>((resolve) => {
    synchronized = resolve;
  });
  const service = new PluginService(handlers, log, () => synchronized());
  const server = new TtrpcServer();
  server.register(PLUGIN_SERVICE, service.methods());
  const served = server.serve(mux.open(PLUGIN_CONN));
  const runtime = new TtrpcClient(mux.open(RUNTIME_CONN));
  // A channel closes alone on a header it cannot read. With the socket still up, containerd would keep the
  // plugin registered and wait out its request timeout on every call: end the session, so the stub reconnects.
  for (const channelClosed of [served.closed, runtime.closed]) {
    void channelClosed.then((reason) => {
      failure ??= reason;
      socket.destroy();
    });
  }

  const registration = Deadline.after(options.registrationTimeoutMs, {
    what: `NRI registration on ${socketPath}`,
  });
  try {
    await registration.race(
      (async () => {
        await runtime.call(
          RUNTIME_SERVICE,
          "RegisterPlugin",
          encode("RegisterPluginRequest", { pluginName: options.pluginName, pluginIdx: options.pluginIndex }),
          { timeoutMs: registration.remaining() },
        );
        await Promise.race([
          whenSynchronized,
          closed.then(() => Promise.reject(new Error("runtime closed the connection during registration"))),
        ]);
      })(),
      () =>
        new Error(`NRI registration on ${socketPath} took longer than ${options.registrationTimeoutMs} ms`),
    );
  } catch (error) {
    socket.destroy();
    throw error;
  } finally {
    registration.dispose();
  }
  const configured = service.configured;
  return {
    runtime: configured ? `${configured.runtimeName} ${configured.runtimeVersion}` : "unknown runtime",
    closed,
    close: () => socket.destroy(),
  };
}

function dial(socketPath: string): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const socket = connect(socketPath);
    socket.once("connect", () => {
      socket.removeAllListeners("error");
      resolve(socket);
    });
    socket.once("error", (error: NodeJS.ErrnoException) => {
      const hint =
        error.code === "ENOENT"
          ? ' (no NRI socket: is containerd running with NRI enabled? [plugins."io.containerd.nri.v1.nri"] disable = false)'
          : error.code === "EACCES"
            ? " (the NRI socket is root-only: run kybernate as root)"
            : "";
      reject(new Error(`cannot connect to NRI socket ${socketPath}: ${error.message}${hint}`));
    });
  });
}

// An NRI runtime stand-in (what containerd's NRI adaptation does) on a temp unix socket, built on src/wire:
// it serves nri.pkg.api.v1alpha1.Runtime on mux connection 2 and calls the plugin's Plugin service on
// connection 1. After RegisterPlugin it configures and synchronizes the plugin the way containerd 2.x does,
// including the split-sync check that makes containerd drop a plugin answering a partial Synchronize wrongly.
import { mkdtempSync, rmSync } from "node:fs";
import { createServer, type Server, type Socket } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { performance } from "node:perf_hooks";
import { decode, encode, PLUGIN_SERVICE, RUNTIME_SERVICE } from "../../src/nri/codec.js";
import type { Container, NriEvent, PodSandbox } from "../../src/nri/types.js";
import { Multiplexer } from "../../src/wire/mux/multiplexer.js";
import { TtrpcClient } from "../../src/wire/ttrpc/client.js";
import { TtrpcServer } from "../../src/wire/ttrpc/server.js";

export interface RegisterPluginRequest {
  pluginName: string;
  pluginIdx: string;
  NRIVersion: string;
}

export interface SynchronizeResponse {
  update: unknown[];
  more: boolean;
}

export interface CreateContainerResponse {
  adjust: { annotations: Record<string, string>; mounts: unknown[]; env: unknown[] } | null;
  update: unknown[];
  evict: unknown[];
}

export interface FakeRuntimeOptions {
  runtimeName?: string;
  runtimeVersion?: string;
  /** Sent in Configure and used as every call's deadline, as containerd does (plugin_request_timeout). */
  requestTimeoutMs?: number;
  registrationTimeoutMs?: number;
  /** false: never send Configure after RegisterPlugin (a runtime that hangs during registration). */
  configure?: boolean;
  /** The state sent in Synchronize, and how many pods and how many containers go in each message. */
  pods?: PodSandbox[];
  containers?: Container[];
  syncChunk?: number;
}

/** What one plugin connection went through during registration. */
export interface Handshake {
  events: number;
  sync: SynchronizeResponse[];
  /** performance.now() when the last Synchronize was answered: the plugin counts as registered from here. */
  syncedAt: number;
}

/** One accepted plugin connection. */
export class PluginConnection {
  readonly acceptedAt = performance.now();
  /** RegisterPlugin's request, once the plugin sent it. */
  readonly registered: Promise<RegisterPluginRequest>;
  /** Configure + Synchronize done; rejects when the plugin broke the protocol (the connection is then closed). */
  readonly handshake: Promise<Handshake>;
  /** Resolves when the socket closes, from either side. */
  readonly closed: Promise<void>;
  private readonly mux: Multiplexer;
  private readonly plugin: TtrpcClient;
  private resolveRegistered!: (request: RegisterPluginRequest) => void;

  constructor(
    readonly socket: Socket,
    private readonly options: Required<Omit<FakeRuntimeOptions, "pods" | "containers">> & {
      pods: PodSandbox[];
      containers: Container[];
    },
  ) {
    this.closed = new Promise((resolve) => socket.once("close", () => resolve()));
    this.registered = new Promise((resolve) => {
      this.resolveRegistered = resolve;
    });
    this.mux = new Multiplexer(socket);
    this.plugin = new TtrpcClient(this.mux.open(1));
    new TtrpcServer()
      .register(RUNTIME_SERVICE, {
        RegisterPlugin: (payload) => {
          this.resolveRegistered(decode<RegisterPluginRequest>("RegisterPluginRequest", payload));
          return encode("Empty", {});
        },
        UpdateContainers: () => encode("UpdateContainersResponse", {}),
      })
      .serve(this.mux.open(2));
    this.handshake = this.registered.then(async () => {
      if (!options.configure) return new Promise<Handshake>(() => undefined);
      try {
        return await this.configureAndSync();
      } catch (error) {
        this.drop();
        throw error;
      }
    });
    // A test that never looks at the handshake must not see an unhandled rejection.
    this.handshake.catch(() => undefined);
  }

  /** Calls a Plugin method with the runtime's request deadline and decodes the answer. */
  async call<T>(method: string, requestType: string, request: object, responseType: string): Promise<T> {
    const payload = await this.callRaw(method, encode(requestType, request));
    return decode<T>(responseType, payload);
  }

  callRaw(method: string, payload: Uint8Array, service = PLUGIN_SERVICE): Promise<Uint8Array> {
    return this.plugin.call(service, method, payload, { timeoutMs: this.options.requestTimeoutMs });
  }

  createContainer(pod: PodSandbox, container: Container): Promise<CreateContainerResponse> {
    return this.call(
      "CreateContainer",
      "CreateContainerRequest",
      { pod, container },
      "CreateContainerResponse",
    );
  }

  /** The NRI <= v0.11 way of delivering every event but Create/Update/Stop. */
  async stateChange(event: NriEvent, pod: PodSandbox, container?: Container): Promise<void> {
    await this.call("StateChange", "StateChangeEvent", { event, pod, container }, "Empty");
  }

  /** Writes `bytes` as one message on mux connection `connId` (1: the Plugin service, 2: the Runtime service). */
  writeRaw(connId: 1 | 2, bytes: Uint8Array): void {
    this.mux.open(connId).write(bytes);
  }

  /** Closes the socket, as containerd does when it drops a plugin or exits. */
  drop(): void {
    this.socket.destroy();
  }

  private async configureAndSync(): Promise<Handshake> {
    const o = this.options;
    const { events } = await this.call<{ events: number }>(
      "Configure",
      "ConfigureRequest",
      {
        config: "",
        runtimeName: o.runtimeName,
        runtimeVersion: o.runtimeVersion,
        registrationTimeout: o.registrationTimeoutMs,
        requestTimeout: o.requestTimeoutMs,
      },
      "ConfigureResponse",
    );
    if (events & ~0x7ff) {
      throw new Error(
        `plugin subscribed to events 0x${events.toString(16)}: containerd 2.0/2.1 reject bits above 0x7ff`,
      );
    }
    const sync: SynchronizeResponse[] = [];
    let pods = o.pods;
    let containers = o.containers;
    for (;;) {
      const request = {
        pods: pods.slice(0, o.syncChunk),
        containers: containers.slice(0, o.syncChunk),
        more: pods.length > o.syncChunk || containers.length > o.syncChunk,
      };
      const response = await this.call<SynchronizeResponse>(
        "Synchronize",
        "SynchronizeRequest",
        request,
        "SynchronizeResponse",
      );
      sync.push(response);
      if (!request.more) break;
      // containerd's check (nri pkg/adaptation/plugin.go synchronize): anything else drops the plugin.
      if (response.update.length > 0 || response.more !== true) {
        throw new Error("plugin does not handle split sync requests");
      }
      pods = pods.slice(o.syncChunk);
      containers = containers.slice(o.syncChunk);
    }
    return { events, sync, syncedAt: performance.now() };
  }
}

/** The runtime's listening socket; each plugin that dials it becomes a PluginConnection. */
export class FakeRuntime {
  /** Every plugin connection accepted so far, in order. */
  readonly connections: PluginConnection[] = [];
  private readonly unclaimed: PluginConnection[] = [];
  private readonly waiters: ((conn: PluginConnection) => void)[] = [];

  private constructor(
    readonly socketPath: string,
    private readonly dir: string,
    private readonly server: Server,
    private readonly options: ConstructorParameters<typeof PluginConnection>[1],
  ) {
    server.on("connection", (socket) => {
      const conn = new PluginConnection(socket, this.options);
      this.connections.push(conn);
      const waiter = this.waiters.shift();
      if (waiter) waiter(conn);
      else this.unclaimed.push(conn);
    });
  }

  static async start(options: FakeRuntimeOptions = {}): Promise<FakeRuntime> {
    const dir = mkdtempSync(join(tmpdir(), "kybernate-fake-nri-"));
    const socketPath = join(dir, "nri.sock");
    const server = createServer();
    await new Promise<void>((resolve, reject) => {
      server.once("error", reject);
      server.listen(socketPath, resolve);
    });
    return new FakeRuntime(socketPath, dir, server, {
      runtimeName: options.runtimeName ?? "fake-containerd",
      runtimeVersion: options.runtimeVersion ?? "v2.1.9",
      requestTimeoutMs: options.requestTimeoutMs ?? 2000,
      registrationTimeoutMs: options.registrationTimeoutMs ?? 5000,
      configure: options.configure ?? true,
      pods: options.pods ?? [],
      containers: options.containers ?? [],
      syncChunk: options.syncChunk ?? 1000,
    });
  }

  /** The next plugin connection not yet handed out (already accepted ones first); fails after `ms`. */
  nextConnection(ms = 3000): Promise<PluginConnection> {
    const ready = this.unclaimed.shift();
    if (ready) return Promise.resolve(ready);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        const index = this.waiters.indexOf(waiter);
        if (index >= 0) this.waiters.splice(index, 1);
        reject(new Error(`fake NRI runtime: no plugin connected to ${this.socketPath} within ${ms} ms`));
      }, ms);
      const waiter = (conn: PluginConnection): void => {
        clearTimeout(timer);
        resolve(conn);
      };
      this.waiters.push(waiter);
    });
  }

  /** Stops listening, drops every plugin and removes the socket's temp dir. */
  async close(): Promise<void> {
    for (const conn of this.connections) conn.drop();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
    rmSync(this.dir, { recursive: true, force: true });
  }
}

import { Deadline, DeadlineExceeded } from "../base/deadline.js";
import type { Logger } from "../base/log.js";
import type { CallContext, MethodHandler } from "../wire/ttrpc/server.js";
import { decode, encode } from "./codec.js";
import { EVENT_ROUTES, type EventRoute, subscriptionMask } from "./events.js";
import type { NriContext, NriHandlers } from "./handlers.js";
import type {
  ConfigureRequest,
  Container,
  ContainerAdjustment,
  NriEvent,
  PodSandbox,
  SynchronizeRequest,
} from "./types.js";

interface PodContainer {
  pod: PodSandbox;
  container: Container;
}

/** Default request timeout of containerd's NRI (plugin_request_timeout), used until Configure says otherwise. */
const DEFAULT_REQUEST_TIMEOUT_MS = 2000;

/**
 * The plugin's side of `nri.pkg.api.v1alpha1.Plugin`: decodes each call and calls the handlers with the
 * call's context. It owns one rule above all: nothing a handler does may fail or stall a container's creation.
 */
export class PluginService {
  private requestTimeoutMs = DEFAULT_REQUEST_TIMEOUT_MS;
  private pendingSync: SynchronizeRequest = { pods: [], containers: [], more: false };
  private readonly routes = new Map<NriEvent, EventRoute>(EVENT_ROUTES.map((route) => [route.event, route]));
  /** Set once Configure arrives; the session waits on it before counting itself registered. */
  configured?: ConfigureRequest;

  constructor(
    private readonly handlers: NriHandlers,
    private readonly log: Logger,
    private readonly onSynchronized: () => void,
  ) {}

  methods(): Record<string, MethodHandler> {
    const methods: Record<string, MethodHandler> = {
      Configure: (payload, call) => withContext(call, (ctx) => this.configure(payload, ctx)),
      Synchronize: (payload, call) => withContext(call, (ctx) => this.synchronize(payload, ctx)),
      Shutdown: (_payload, call) =>
        withContext(call, async (ctx) => {
          await this.handlers.shutdown?.(ctx);
          return encode("Empty", {});
        }),
      CreateContainer: (payload, call) => this.createContainer(payload, call),
      StateChange: (payload, call) => withContext(call, (ctx) => this.stateChange(payload, ctx)),
    };
    for (const route of EVENT_ROUTES) {
      methods[route.rpc] = (payload, call) =>
        withContext(call, async (ctx) => {
          const request = decode<{ pod: PodSandbox | null; container?: Container | null }>(
            `${route.rpc}Request`,
            payload,
          );
          await this.deliver(route, request.pod ?? emptyPod(), request.container ?? undefined, ctx);
          return encode(`${route.rpc}Response`, {});
        });
    }
    return methods;
  }

  private async configure(payload: Uint8Array, ctx: NriContext): Promise<Uint8Array> {
    const request = decode<ConfigureRequest>("ConfigureRequest", payload);
    if (request.requestTimeout > 0) this.requestTimeoutMs = request.requestTimeout;
    this.log.info(
      {
        runtime: request.runtimeName,
        version: request.runtimeVersion,
        requestTimeoutMs: request.requestTimeout,
      },
      "configured by runtime",
    );
    await this.handlers.configure?.(request, ctx);
    this.configured = request;
    return encode("ConfigureResponse", { events: subscriptionMask(this.handlers) });
  }

  /** The runtime may split the initial state over several calls; only the last one (more=false) is acted on. */
  private async synchronize(payload: Uint8Array, ctx: NriContext): Promise<Uint8Array> {
    const part = decode<SynchronizeRequest>("SynchronizeRequest", payload);
    this.pendingSync.pods.push(...part.pods);
    this.pendingSync.containers.push(...part.containers);
    if (part.more) return encode("SynchronizeResponse", { more: true });
    const { pods, containers } = this.pendingSync;
    this.pendingSync = { pods: [], containers: [], more: false };
    this.log.info({ pods: pods.length, containers: containers.length }, "synchronized with runtime");
    try {
      await this.handlers.synchronize?.(pods, containers, ctx);
    } catch (error) {
      this.log.error({ err: error }, "synchronize handler failed; continuing");
    }
    this.onSynchronized();
    return encode("SynchronizeResponse", {});
  }

  private async createContainer(payload: Uint8Array, call: CallContext): Promise<Uint8Array> {
    const { pod, container } = decode<PodContainer>("CreateContainerRequest", payload);
    const adjust = await this.guarded("CreateContainer", container, call, async (ctx) =>
      this.handlers.createContainer?.(pod, container, ctx),
    );
    return encode("CreateContainerResponse", adjust ? { adjust } : {});
  }

  /**
   * Runs a handler under a deadline well inside containerd's request timeout: a late or failed answer must
   * become "no adjustment", never an error status (which fails the container) nor a timeout (which makes
   * containerd drop the plugin). The handler sees that deadline, and its signal aborts when the guard gives up.
   */
  private async guarded(
    what: string,
    container: Container,
    call: CallContext,
    run: (ctx: NriContext) => Promise<ContainerAdjustment | undefined>,
  ): Promise<ContainerAdjustment | undefined> {
    const callDeadline = deadlineOf(call);
    // Deadline caps what a Node timer cannot hold: request_timeout is user configuration, and past 2^31 ms
    // a bare timer fires after 1 ms.
    const budgetMs = Math.max(
      50,
      Math.floor(Math.min(this.requestTimeoutMs, callDeadline.remaining()) * 0.75),
    );
    const guard = callDeadline.child(budgetMs, `${what} handler`);
    try {
      return await guard.race(run({ deadline: guard, signal: guard.signal }));
    } catch (error) {
      const gaveUp = guard.signal.aborted && error === guard.signal.reason;
      if (gaveUp && error instanceof DeadlineExceeded) {
        this.log.error(
          { container: container.name, id: container.id, budgetMs },
          `${what} handler too slow; no adjustment`,
        );
      } else if (gaveUp) {
        // The runtime gave up first (its deadline or the connection): nobody reads this answer.
        this.log.warn(
          { reason: String(error), container: container.name, id: container.id },
          `${what} abandoned by the runtime; no adjustment`,
        );
      } else {
        this.log.error(
          { err: error, container: container.name, id: container.id },
          `${what} handler failed; no adjustment`,
        );
      }
      return undefined;
    } finally {
      guard.dispose();
      callDeadline.dispose();
    }
  }

  private async stateChange(payload: Uint8Array, ctx: NriContext): Promise<Uint8Array> {
    const change = decode<{ event: NriEvent; pod: PodSandbox | null; container: Container | null }>(
      "StateChangeEvent",
      payload,
    );
    const route = this.routes.get(change.event);
    // Not subscribed here (CreateContainer never comes this way; 12+ are refused at Configure): nothing to do.
    if (route) await this.deliver(route, change.pod ?? emptyPod(), change.container ?? undefined, ctx);
    return encode("Empty", {});
  }

  private async deliver(
    route: EventRoute,
    pod: PodSandbox,
    container: Container | undefined,
    ctx: NriContext,
  ): Promise<void> {
    try {
      if (route.kind === "pod") await this.handlers[route.handler]?.(pod, ctx);
      else if (container) await this.handlers[route.handler]?.(pod, container, ctx);
      else this.log.warn({ event: route.rpc, pod: pod.id }, "container event without a container ignored");
    } catch (error) {
      // Events carry no answer the runtime acts on; an error status would only get the plugin dropped.
      this.log.error({ err: error, event: route.rpc, container: container?.name }, "event handler failed");
    }
  }
}

/** The call's own deadline (none when the runtime sent no timeout), ending too when the call is abandoned. */
function deadlineOf(call: CallContext): Deadline {
  const options = { parent: call.signal, what: `${call.service}/${call.method}` };
  return call.deadline !== undefined ? Deadline.at(call.deadline, options) : Deadline.never(options);
}

async function withContext<T>(call: CallContext, run: (ctx: NriContext) => Promise<T>): Promise<T> {
  const deadline = deadlineOf(call);
  try {
    return await run({ deadline, signal: deadline.signal });
  } finally {
    deadline.dispose();
  }
}

function emptyPod(): PodSandbox {
  return {
    id: "",
    name: "",
    uid: "",
    namespace: "",
    labels: {},
    annotations: {},
    runtimeHandler: "",
    pid: 0,
    ips: [],
  };
}

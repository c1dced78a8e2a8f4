import { Deadline } from "../base/deadline.js";
import type { Logger } from "../base/log.js";
import type { MethodHandler } from "../wire/index.js";
import { decode, encode } from "./codec.js";
import { eventMask } from "./events.js";
import type { NriHandlers } from "./handlers.js";
import type { Inventory } from "./inventory.js";
import {
  type ConfigureRequest,
  type Container,
  type ContainerAdjustment,
  type LifecycleEvent,
  NriEvent,
  type PodSandbox,
  type SynchronizeRequest,
} from "./types.js";

interface PodContainer {
  pod: PodSandbox;
  container: Container;
}

/** Default request timeout of containerd's NRI (plugin_request_timeout), used until Configure says otherwise. */
const DEFAULT_REQUEST_TIMEOUT_MS = 2000;

/**
 * The plugin's side of `nri.pkg.api.v1alpha1.Plugin`: decodes each call, keeps the inventory, and calls the
 * handlers. It owns one rule above all: nothing a handler does may fail or stall a container's creation.
 */
export class PluginService {
  private requestTimeoutMs = DEFAULT_REQUEST_TIMEOUT_MS;
  private pendingSync: SynchronizeRequest = { pods: [], containers: [], more: false };
  /** Set once Configure arrives; the session waits on it before counting itself registered. */
  configured?: ConfigureRequest;

  constructor(
    private readonly handlers: NriHandlers,
    private readonly inventory: Inventory,
    private readonly log: Logger,
    private readonly onSynchronized: () => void,
  ) {}

  methods(): Record<string, MethodHandler> {
    return {
      Configure: (payload) => this.configure(payload),
      Synchronize: (payload) => this.synchronize(payload),
      Shutdown: async () => {
        await this.handlers.shutdown?.();
        return encode("Empty", {});
      },
      CreateContainer: (payload) => this.createContainer(payload),
      UpdateContainer: (payload) =>
        this.dispatch(NriEvent.UpdateContainer, "UpdateContainerRequest", "UpdateContainerResponse", payload),
      StopContainer: (payload) =>
        this.dispatch(NriEvent.StopContainer, "StopContainerRequest", "StopContainerResponse", payload),
      StateChange: (payload) => this.stateChange(payload),
      RunPodSandbox: (payload) =>
        this.dispatch(NriEvent.RunPodSandbox, "RunPodSandboxRequest", "RunPodSandboxResponse", payload),
      StopPodSandbox: (payload) =>
        this.dispatch(NriEvent.StopPodSandbox, "StopPodSandboxRequest", "StopPodSandboxResponse", payload),
      RemovePodSandbox: (payload) =>
        this.dispatch(
          NriEvent.RemovePodSandbox,
          "RemovePodSandboxRequest",
          "RemovePodSandboxResponse",
          payload,
        ),
      PostCreateContainer: (payload) =>
        this.dispatch(
          NriEvent.PostCreateContainer,
          "PostCreateContainerRequest",
          "PostCreateContainerResponse",
          payload,
        ),
      StartContainer: (payload) =>
        this.dispatch(NriEvent.StartContainer, "StartContainerRequest", "StartContainerResponse", payload),
      PostStartContainer: (payload) =>
        this.dispatch(
          NriEvent.PostStartContainer,
          "PostStartContainerRequest",
          "PostStartContainerResponse",
          payload,
        ),
      PostUpdateContainer: (payload) =>
        this.dispatch(
          NriEvent.PostUpdateContainer,
          "PostUpdateContainerRequest",
          "PostUpdateContainerResponse",
          payload,
        ),
      RemoveContainer: (payload) =>
        this.dispatch(NriEvent.RemoveContainer, "RemoveContainerRequest", "RemoveContainerResponse", payload),
    };
  }

  private async configure(payload: Uint8Array): Promise<Uint8Array> {
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
    await this.handlers.configure?.(request);
    this.configured = request;
    const events = new Set(this.handlers.events);
    if (this.handlers.createContainer) events.add(NriEvent.CreateContainer);
    return encode("ConfigureResponse", { events: eventMask(events) });
  }

  /** The runtime may split the initial state over several calls; only the last one (more=false) is acted on. */
  private async synchronize(payload: Uint8Array): Promise<Uint8Array> {
    const part = decode<SynchronizeRequest>("SynchronizeRequest", payload);
    this.pendingSync.pods.push(...part.pods);
    this.pendingSync.containers.push(...part.containers);
    if (part.more) return encode("SynchronizeResponse", { more: true });
    const { pods, containers } = this.pendingSync;
    this.pendingSync = { pods: [], containers: [], more: false };
    this.inventory.reset(pods, containers);
    this.log.info({ pods: pods.length, containers: containers.length }, "synchronized with runtime");
    try {
      await this.handlers.synchronize?.(pods, containers);
    } catch (error) {
      this.log.error({ err: error }, "synchronize handler failed; continuing");
    }
    this.onSynchronized();
    return encode("SynchronizeResponse", {});
  }

  private async createContainer(payload: Uint8Array): Promise<Uint8Array> {
    const { pod, container } = decode<PodContainer>("CreateContainerRequest", payload);
    this.inventory.putContainer(container);
    const adjust = await this.guarded("CreateContainer", container, async () =>
      this.handlers.createContainer?.(pod, container),
    );
    return encode("CreateContainerResponse", adjust ? { adjust } : {});
  }

  /**
   * Runs a handler under a deadline well inside containerd's request timeout: a late or failed answer must
   * become "no adjustment", never an error status (which fails the container) nor a timeout (which makes
   * containerd drop the plugin).
   */
  private async guarded(
    what: string,
    container: Container,
    run: () => Promise<ContainerAdjustment | undefined>,
  ): Promise<ContainerAdjustment | undefined> {
    // Deadline caps what no Node timer can hold: request_timeout is user configuration, and above 2^31 ms a
    // bare setTimeout fires after 1 ms.
    const budgetMs = Math.max(50, Math.floor(this.requestTimeoutMs * 0.75));
    const guard = Deadline.after(budgetMs, { what: `${what} handler` });
    try {
      return await guard.race(run());
    } catch (error) {
      if (guard.signal.aborted && error === guard.signal.reason) {
        this.log.error(
          { container: container.name, id: container.id, budgetMs },
          `${what} handler too slow; no adjustment`,
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
    }
  }

  private async stateChange(payload: Uint8Array): Promise<Uint8Array> {
    const change = decode<{ event: NriEvent; pod: PodSandbox | null; container: Container | null }>(
      "StateChangeEvent",
      payload,
    );
    await this.deliver({
      event: change.event,
      pod: change.pod ?? emptyPod(),
      container: change.container ?? undefined,
    });
    return encode("Empty", {});
  }

  private async dispatch(event: NriEvent, requestType: string, responseType: string, payload: Uint8Array) {
    const request = decode<{ pod: PodSandbox | null; container?: Container | null }>(requestType, payload);
    await this.deliver({ event, pod: request.pod ?? emptyPod(), container: request.container ?? undefined });
    return encode(responseType, {});
  }

  private async deliver(event: LifecycleEvent): Promise<void> {
    this.track(event);
    try {
      await this.handlers.event?.(event);
    } catch (error) {
      // Events carry no answer the runtime acts on; an error status would only get the plugin dropped.
      this.log.error(
        { err: error, event: NriEvent[event.event], container: event.container?.name },
        "event handler failed",
      );
    }
  }

  private track({ event, pod, container }: LifecycleEvent): void {
    switch (event) {
      case NriEvent.RunPodSandbox:
        this.inventory.putPod(pod);
        break;
      case NriEvent.RemovePodSandbox:
        this.inventory.removePod(pod.id);
        break;
      case NriEvent.RemoveContainer:
        if (container) this.inventory.removeContainer(container.id);
        break;
      default:
        if (container) this.inventory.putContainer(container);
        if (pod.id) this.inventory.putPod(pod);
    }
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

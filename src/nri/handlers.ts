import type { Deadline } from "../base/deadline.js";
import type { ConfigureRequest, Container, ContainerAdjustment, PodSandbox } from "./types.js";

/** What a handler knows of the call it serves, as containerd/nri's Go stub hands its handlers a ctx. */
export interface NriContext {
  /**
   * When the answer stops mattering: the runtime's deadline for the call, or for CreateContainer the earlier
   * point where the stub gives up and answers "no adjustment" itself.
   */
  readonly deadline: Deadline;
  /** The deadline's signal: aborts when it passes or the runtime's connection closes. Stop work then. */
  readonly signal: AbortSignal;
}

type Done = void | Promise<void>;

/** Pod events. Implementing one subscribes to it. */
export interface PodEventHandlers {
  runPodSandbox?(pod: PodSandbox, ctx: NriContext): Done;
  stopPodSandbox?(pod: PodSandbox, ctx: NriContext): Done;
  removePodSandbox?(pod: PodSandbox, ctx: NriContext): Done;
}

/** Container events but CreateContainer. Implementing one subscribes to it. */
export interface ContainerEventHandlers {
  postCreateContainer?(pod: PodSandbox, container: Container, ctx: NriContext): Done;
  startContainer?(pod: PodSandbox, container: Container, ctx: NriContext): Done;
  postStartContainer?(pod: PodSandbox, container: Container, ctx: NriContext): Done;
  updateContainer?(pod: PodSandbox, container: Container, ctx: NriContext): Done;
  postUpdateContainer?(pod: PodSandbox, container: Container, ctx: NriContext): Done;
  stopContainer?(pod: PodSandbox, container: Container, ctx: NriContext): Done;
  removeContainer?(pod: PodSandbox, container: Container, ctx: NriContext): Done;
}

/**
 * What a plugin implements; every method is optional, and the stub subscribes exactly the events whose
 * handler is there (containerd/nri's setupHandlers): each subscribed event is one more call made under
 * containerd's global NRI lock. A throwing event handler is logged and answered OK, since an error status
 * would only get the plugin dropped.
 */
export interface NriHandlers extends PodEventHandlers, ContainerEventHandlers {
  configure?(request: ConfigureRequest, ctx: NriContext): Done;
  /** The runtime's whole state, once per (re)connection, even when it arrives split over several calls. */
  synchronize?(pods: PodSandbox[], containers: Container[], ctx: NriContext): Done;
  /**
   * Returns the adjustment for a container being created. Throwing, or answering after ctx.deadline, yields
   * an empty adjustment: an error status would fail the container's creation.
   */
  createContainer?(
    pod: PodSandbox,
    container: Container,
    ctx: NriContext,
  ): ContainerAdjustment | undefined | Promise<ContainerAdjustment | undefined>;
  /** The runtime is going away (NRI Shutdown); the stub reconnects by itself. */
  shutdown?(ctx: NriContext): Done;
}

import type { ContainerEventHandlers, NriHandlers, PodEventHandlers } from "./handlers.js";
import { NriEvent } from "./types.js";

/** containerd 2.0/2.1 (NRI v0.8) refuse a subscription with bits above REMOVE_CONTAINER. */
const HIGHEST_EVENT_ALL_RUNTIMES = NriEvent.RemoveContainer;

/** An event besides CreateContainer: the handler it goes to, and its v0.12 RPC (`<rpc>Request/Response`). */
export type EventRoute =
  | { kind: "pod"; event: NriEvent; handler: keyof PodEventHandlers; rpc: string }
  | { kind: "container"; event: NriEvent; handler: keyof ContainerEventHandlers; rpc: string };

const pod = (event: NriEvent, handler: keyof PodEventHandlers): EventRoute => ({
  kind: "pod",
  event,
  handler,
  rpc: NriEvent[event],
});
const ctr = (event: NriEvent, handler: keyof ContainerEventHandlers): EventRoute => ({
  kind: "container",
  event,
  handler,
  rpc: NriEvent[event],
});

/**
 * Every event a plugin can subscribe to apart from CreateContainer, which answers with an adjustment. NRI
 * <= v0.11 sends Update and Stop as RPCs and the others as StateChange; v0.12 uses an RPC for each.
 */
export const EVENT_ROUTES: readonly EventRoute[] = [
  pod(NriEvent.RunPodSandbox, "runPodSandbox"),
  pod(NriEvent.StopPodSandbox, "stopPodSandbox"),
  pod(NriEvent.RemovePodSandbox, "removePodSandbox"),
  ctr(NriEvent.PostCreateContainer, "postCreateContainer"),
  ctr(NriEvent.StartContainer, "startContainer"),
  ctr(NriEvent.PostStartContainer, "postStartContainer"),
  ctr(NriEvent.UpdateContainer, "updateContainer"),
  ctr(NriEvent.PostUpdateContainer, "postUpdateContainer"),
  ctr(NriEvent.StopContainer, "stopContainer"),
  ctr(NriEvent.RemoveContainer, "removeContainer"),
];

/** The events whose handler `handlers` implements, in event order. */
function subscribedEvents(handlers: NriHandlers): NriEvent[] {
  const events = EVENT_ROUTES.filter((route) => typeof handlers[route.handler] === "function").map(
    (route) => route.event,
  );
  if (typeof handlers.createContainer === "function") events.push(NriEvent.CreateContainer);
  return events.sort((a, b) => a - b);
}

/**
 * ConfigureResponse.events for `handlers`. Throws when they handle no event at all: containerd reads a mask
 * of 0 as "every event", so such a plugin would be called for everything (Go's stub refuses it too).
 */
export function subscriptionMask(handlers: NriHandlers): number {
  const events = subscribedEvents(handlers);
  if (events.length === 0) {
    throw new Error(
      "these NRI handlers subscribe to no event (a mask of 0 would make containerd send every event): implement createContainer, removeContainer or another event handler",
    );
  }
  return eventMask(events);
}

/** ConfigureResponse.events: bit (event - 1) per subscribed event. */
export function eventMask(events: Iterable<NriEvent>): number {
  let mask = 0;
  for (const event of events) {
    if (event < NriEvent.RunPodSandbox || event > HIGHEST_EVENT_ALL_RUNTIMES) {
      throw new Error(`NRI event ${event} cannot be subscribed: containerd 2.0/2.1 accept events 1..11 only`);
    }
    mask |= 1 << (event - 1);
  }
  return mask;
}

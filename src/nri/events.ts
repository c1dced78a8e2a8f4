import { NriEvent } from "./types.js";

/** containerd 2.0/2.1 (NRI v0.8) refuse a subscription with bits above REMOVE_CONTAINER. */
const HIGHEST_EVENT_ALL_RUNTIMES = NriEvent.RemoveContainer;

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

/** Whether a mask (0 = everything) includes an event. */
export function maskIncludes(mask: number, event: NriEvent): boolean {
  return mask === 0 || (mask & (1 << (event - 1))) !== 0;
}

import type { Logger } from "../log.js";
import type { NriHandlers } from "../nri/handlers.js";
import { type Container, type ContainerAdjustment, NriEvent, type PodSandbox } from "../nri/types.js";
import { version } from "../version.js";
import type { Selector } from "./selector.js";

export const VERSION_ANNOTATION = "kybernate.io/version";

/** kybernate's NRI handlers: marks the containers it takes care of; everything else passes untouched. */
export function kybernateHandlers(selector: Selector, log: Logger): NriHandlers {
  return {
    // Only what the plugin needs: each subscribed event is a call under containerd's global NRI lock.
    events: [
      NriEvent.CreateContainer,
      NriEvent.RemoveContainer,
      NriEvent.RunPodSandbox,
      NriEvent.RemovePodSandbox,
    ],
    createContainer(pod: PodSandbox, container: Container): ContainerAdjustment | undefined {
      if (!selector.matches(pod, container)) return undefined;
      log.info({ pod: `${pod.namespace}/${pod.name}`, container: container.name }, "container selected");
      return { annotations: { [VERSION_ANNOTATION]: version } };
    },
  };
}

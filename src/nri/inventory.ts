import type { Container, PodSandbox } from "./types.js";

/** The pods and containers the runtime has told this plugin about, rebuilt on every (re)synchronization. */
export class Inventory {
  readonly pods = new Map<string, PodSandbox>();
  readonly containers = new Map<string, Container>();

  reset(pods: PodSandbox[], containers: Container[]): void {
    this.pods.clear();
    this.containers.clear();
    for (const pod of pods) this.pods.set(pod.id, pod);
    for (const container of containers) this.containers.set(container.id, container);
  }

  putPod(pod: PodSandbox): void {
    this.pods.set(pod.id, pod);
  }

  removePod(podId: string): void {
    this.pods.delete(podId);
    for (const [id, container] of this.containers) {
      if (container.podSandboxId === podId) this.containers.delete(id);
    }
  }

  putContainer(container: Container): void {
    this.containers.set(container.id, container);
  }

  removeContainer(containerId: string): void {
    this.containers.delete(containerId);
  }

  podOf(container: Container): PodSandbox | undefined {
    return this.pods.get(container.podSandboxId);
  }
}

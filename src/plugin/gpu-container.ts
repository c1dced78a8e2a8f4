import type { Container, PodSandbox } from "../nri/types.js";

export const CHECKPOINT_ANNOTATION = "kybernate.io/checkpoint";
/** `"false"` on the pod or the container: its checkpoints stay self-contained although the node has a page store. */
export const PAGE_STORE_ANNOTATION = "kybernate.io/page-store";

/** Whether the container (or its pod) opted out of the node's page store; the container's word wins. */
export function pageStoreOptedOut(pod: PodSandbox, container: Container): boolean {
  return (container.annotations[PAGE_STORE_ANNOTATION] ?? pod.annotations[PAGE_STORE_ANNOTATION]) === "false";
}

export type GpuVerdict = { gpu: true; reason: string } | { gpu: false; reason: string };

const NVIDIA_DEVICE = /^\/dev\/nvidia(ctl|-uvm|-uvm-tools|\d+)$/;
const NVIDIA_CDI = /^(nvidia\.com|k8s\.device-plugin\.nvidia\.com)\//;
const NVIDIA_RUNTIME_HANDLER = /nvidia/i;

/**
 * Whether a container being created uses an NVIDIA GPU, by every route Kubernetes and containerd offer:
 * an explicit kybernate annotation first (either way), then the NVIDIA container toolkit's environment,
 * device nodes, CDI devices (field or cdi.k8s.io annotations) and the runtime handler.
 */
export function classifyContainer(pod: PodSandbox, container: Container): GpuVerdict {
  const explicit = container.annotations[CHECKPOINT_ANNOTATION] ?? pod.annotations[CHECKPOINT_ANNOTATION];
  if (explicit === "false") return { gpu: false, reason: `${CHECKPOINT_ANNOTATION}=false` };
  if (explicit === "true") return { gpu: true, reason: `${CHECKPOINT_ANNOTATION}=true` };

  for (const entry of container.env) {
    const [name, value = ""] = splitEnv(entry);
    if (name === "NVIDIA_VISIBLE_DEVICES" && !["", "void", "none"].includes(value)) {
      return { gpu: true, reason: `NVIDIA_VISIBLE_DEVICES=${value}` };
    }
  }
  const device = container.linux?.devices.find((d) => NVIDIA_DEVICE.test(d.path));
  if (device) return { gpu: true, reason: `device ${device.path}` };
  const mounted = container.mounts.find((m) => NVIDIA_DEVICE.test(m.destination));
  if (mounted) return { gpu: true, reason: `mount ${mounted.destination}` };
  const cdi = container.CDIDevices.find((d) => NVIDIA_CDI.test(d.name));
  if (cdi) return { gpu: true, reason: `CDI device ${cdi.name}` };
  for (const [key, value] of Object.entries(container.annotations)) {
    if (key.startsWith("cdi.k8s.io/") && value.split(",").some((name) => NVIDIA_CDI.test(name.trim()))) {
      return { gpu: true, reason: `annotation ${key}=${value}` };
    }
  }
  if (NVIDIA_RUNTIME_HANDLER.test(pod.runtimeHandler)) {
    return { gpu: true, reason: `runtime handler ${pod.runtimeHandler}` };
  }
  return { gpu: false, reason: "no NVIDIA device, CDI device, environment or runtime handler" };
}

function splitEnv(entry: string): [string, string] {
  const eq = entry.indexOf("=");
  return eq < 0 ? [entry, ""] : [entry.slice(0, eq), entry.slice(eq + 1)];
}

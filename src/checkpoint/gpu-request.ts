import { gpuMinorsOpenedBy, gpuNodeNumber, NVIDIA_MAJOR, visibleDevices } from "../host/nvidia.js";
import type { GpuInfo } from "../host/nvidia-smi.js";
import { PROC_ROOT } from "../host/proc.js";

/**
 * The pod annotation that asks a restore for an explicit UUID device map, `OLD=NEW,…` (checked by the restore
 * plan). A pod's, not a container's: containerd's restore (CRImportCheckpoint, 2.1.9) gives the restored
 * container the checkpoint's annotations and drops those of the restore request, so only the new pod can say it.
 */
export const DEVICE_MAP_ANNOTATION = "kybernate.io/device-map";

/**
 * What a container's spec says about its GPUs, as containerd hands it to NRI: the GPU device nodes (CRI
 * devices and CDI both put them in the spec) and NVIDIA_VISIBLE_DEVICES (the NVIDIA container toolkit's
 * legacy route, whose hook adds the nodes after NRI has seen the spec); and the device map its pod asks for.
 */
export interface GpuRequest {
  minors: number[];
  visibleDevices?: string;
  /** The pod's kybernate.io/device-map, as written (validated only against a checkpoint, at restore). */
  deviceMap?: string;
}

export function gpuRequestOf(
  devices: ReadonlyArray<{ path: string; major: number; minor: number }>,
  env: readonly string[],
  podAnnotations: Readonly<Record<string, string>> = {},
): GpuRequest {
  const minors = devices
    .filter((d) => d.major === NVIDIA_MAJOR && gpuNodeNumber(d.path) !== undefined)
    .map((d) => d.minor);
  const visible = visibleDevices(env);
  const deviceMap = podAnnotations[DEVICE_MAP_ANNOTATION];
  return {
    minors: [...new Set(minors)].sort((a, b) => a - b),
    ...(visible !== undefined ? { visibleDevices: visible } : {}),
    ...(deviceMap !== undefined ? { deviceMap } : {}),
  };
}

export type ResolvedGpus = { gpus: GpuInfo[]; source: string } | { error: string };

/**
 * The node GPUs a container is given. Device nodes win (they are what the container can open); then
 * NVIDIA_VISIBLE_DEVICES ("all", indices or UUIDs). Undefined when the spec says neither: the caller falls
 * back to the node's GPUs.
 */
export function resolveGpuRequest(
  request: GpuRequest | undefined,
  gpus: GpuInfo[],
): ResolvedGpus | undefined {
  if (!request) return undefined;
  if (request.minors.length) {
    const found = request.minors.map((minor) => gpus.find((g) => g.minor === minor));
    if (found.every((g): g is GpuInfo => g !== undefined))
      return { gpus: found, source: `devices ${request.minors.map((m) => `/dev/nvidia${m}`).join(", ")}` };
    if (gpus.some((g) => g.minor !== undefined))
      return {
        error: `the container's device /dev/nvidia${request.minors.find((_, i) => !found[i])} is no GPU of this node`,
      };
    // Minor numbers unknown (the driver's files unreadable): fall through to the variable, else the node's GPUs.
  }
  const value = request.visibleDevices?.trim();
  if (value === undefined || value === "") return undefined;
  if (value === "all") return { gpus, source: "NVIDIA_VISIBLE_DEVICES=all" };
  if (value === "none" || value === "void") return { gpus: [], source: `NVIDIA_VISIBLE_DEVICES=${value}` };
  const wanted = value.split(",").map((s) => s.trim());
  // A MIG instance is no whole GPU of the inventory: no plan can be made from it, so the node's GPUs decide.
  if (wanted.some((w) => /^MIG-/i.test(w) || w.includes(":"))) return undefined;
  const picked: GpuInfo[] = [];
  for (const w of wanted) {
    const gpu = /^\d+$/.test(w) ? gpus.find((g) => g.index === Number(w)) : gpus.find((g) => g.uuid === w);
    if (!gpu) return { error: `NVIDIA_VISIBLE_DEVICES names ${w}, which is no GPU of this node` };
    picked.push(gpu);
  }
  return { gpus: picked, source: `NVIDIA_VISIBLE_DEVICES=${value}` };
}

/**
 * The GPUs the processes hold open (their /dev/nvidiaN fds). The driver checkpoints every GPU a process opened,
 * not only the ones it computes on (CUDA_VISIBLE_DEVICES narrows CUDA's view, not the opens), and a restore's
 * device map must name each of them. Undefined when it cannot tell (minors unknown, no fd readable).
 */
export async function gpusOpenedBy(
  pids: number[],
  gpus: GpuInfo[],
  procRoot = PROC_ROOT,
): Promise<GpuInfo[] | undefined> {
  if (!gpus.some((g) => g.minor !== undefined)) return undefined;
  const minors = await gpuMinorsOpenedBy(pids, procRoot);
  if (!minors) return undefined;
  return gpus.filter((g) => g.minor !== undefined && minors.has(g.minor)).sort((a, b) => a.index - b.index);
}

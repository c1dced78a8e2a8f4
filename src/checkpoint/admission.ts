import type { MemoryUse } from "../host/cgroup.js";
import type { ComputeApp } from "../host/nvidia-smi.js";

const MiB = 1024 * 1024;

export interface VramEstimate {
  /** Total bytes the checkpoint will stage in host memory; undefined when nothing could say. */
  bytes?: number;
  perPid: Array<{ pid: number; bytes?: number }>;
  source: string;
}

/**
 * How much VRAM a freeze of these pids will copy into host memory, given nvidia-smi's compute apps (already
 * queried once for the checkpoint's metadata: not asked again while the checkpoint waits). Injectable: the GPU
 * double has no nvidia-smi.
 */
export type VramEstimator = (pids: number[], apps: ComputeApp[]) => Promise<VramEstimate>;

/** A fixed number per CUDA process (nodes without nvidia-smi; tests). */
export function fixedEstimator(bytesPerProcess: number): VramEstimator {
  return async (pids) => ({
    bytes: bytesPerProcess * pids.length,
    perPid: pids.map((pid) => ({ pid, bytes: bytesPerProcess })),
    source: `fixed ${Math.round(bytesPerProcess / MiB)} MiB per process (--vram-estimate-mib)`,
  });
}

/** nvidia-smi's per-process used memory: the driver's own accounting of what a checkpoint moves. */
export function computeAppsEstimator(): VramEstimator {
  return async (pids, apps) => {
    if (apps.length === 0) return { perPid: pids.map((pid) => ({ pid })), source: "nvidia-smi (no data)" };
    const perPid = pids.map((pid) => {
      const mine = apps.filter((a) => a.pid === pid);
      return mine.length ? { pid, bytes: mine.reduce((s, a) => s + a.usedBytes, 0) } : { pid };
    });
    const known = perPid.filter((p) => p.bytes !== undefined);
    return {
      ...(known.length ? { bytes: known.reduce((s, p) => s + (p.bytes ?? 0), 0) } : {}),
      perPid,
      source: "nvidia-smi --query-compute-apps",
    };
  };
}

/** Room left under a memory limit: the staged VRAM becomes the process's own memory, charged to its cgroup. */
export function cgroupRoom(memory: MemoryUse | undefined): { room: number; limit: number } | undefined {
  if (memory?.limit === undefined) return undefined;
  return { room: Math.max(0, memory.limit - memory.usage), limit: memory.limit };
}

export interface AdmissionInput {
  containerId: string;
  estimate: VramEstimate;
  memAvailable: number;
  headroom: number;
  cgroup?: { room: number; limit: number };
}

export type AdmissionVerdict = { ok: true; note?: string } | { ok: false; error: string };

const mib = (bytes: number): string => `${Math.round(bytes / MiB)} MiB`;

/** Whether host memory can take the staged VRAM: MemAvailable minus a headroom, and the container's limit. */
export function decideAdmission(input: AdmissionInput): AdmissionVerdict {
  const { estimate, memAvailable, headroom } = input;
  if (estimate.bytes === undefined)
    return {
      ok: true,
      note: `VRAM to stage unknown (${estimate.source}); admitted without a check: give --vram-estimate-mib to check anyway`,
    };
  if (estimate.bytes + headroom > memAvailable)
    return {
      ok: false,
      error: `host-RAM admission refused the checkpoint of container ${input.containerId}: its GPU processes hold ${mib(estimate.bytes)} of VRAM (${estimate.source}) to stage in host memory, but MemAvailable is ${mib(memAvailable)} and kybernate keeps ${mib(headroom)} free (--admission-headroom-mib); the container keeps running untouched. Free host memory, move the pod to a node with more RAM, or lower the headroom`,
    };
  if (input.cgroup && estimate.bytes > input.cgroup.room)
    return {
      ok: false,
      error: `host-RAM admission refused the checkpoint of container ${input.containerId}: its GPU processes hold ${mib(estimate.bytes)} of VRAM (${estimate.source}), which becomes host memory charged to the container, but only ${mib(input.cgroup.room)} is left under its memory limit of ${mib(input.cgroup.limit)}; the container keeps running untouched. Raise the container's memory limit by at least ${mib(estimate.bytes - input.cgroup.room)}`,
    };
  return { ok: true };
}

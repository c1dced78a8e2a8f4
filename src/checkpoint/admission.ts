import type { MemoryLevel } from "../host/cgroup.js";
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

/** One memory limit file to raise for the GPU stage, and the text to write back afterwards. */
export interface LimitRaise {
  dir: string;
  file: string;
  from: string;
  to: string;
}

/**
 * The staged VRAM becomes the processes' own memory, charged to the container's memory cgroup and to every one
 * above it (the kubelet's pod cgroup): each level whose room under its limits is below the staged bytes gets
 * every limit file raised by them, outermost level first. Levels with room enough are left alone.
 */
export function limitRaises(
  levels: readonly MemoryLevel[],
  stagedBytes: number,
  /** Memory still to come besides the staged bytes (a restore: what the container used at checkpoint). */
  comingBytes = 0,
): LimitRaise[] {
  const raises: LimitRaise[] = [];
  for (const level of [...levels].reverse()) {
    const finite = level.limits.filter((l) => l.bytes !== undefined);
    if (finite.length === 0) continue;
    const room = Math.min(...finite.map((l) => (l.bytes ?? 0) - level.usage - comingBytes));
    if (room >= stagedBytes) continue;
    // The kernel keeps limits in pages: a value it would round is one kybernate could not recognise later.
    const by = Math.ceil(stagedBytes / 4096) * 4096;
    for (const l of finite)
      raises.push({ dir: level.dir, file: l.file, from: l.text, to: String((l.bytes ?? 0) + by) });
  }
  return raises;
}

export interface AdmissionInput {
  containerId: string;
  estimate: VramEstimate;
  memAvailable: number;
  headroom: number;
  /** A restore stages the checkpoint's VRAM again (CRIU restores it into host memory first). */
  stage?: "checkpoint" | "restore";
}

export type AdmissionVerdict = { ok: true; note?: string } | { ok: false; error: string };

const mib = (bytes: number): string => `${Math.round(bytes / MiB)} MiB`;

/**
 * Whether the node's memory can take the staged VRAM: MemAvailable minus a headroom. A container's (or its
 * pod's) memory limit is no reason to refuse: kybernate raises it for the GPU stage (limitRaises).
 */
export function decideAdmission(input: AdmissionInput): AdmissionVerdict {
  const { estimate, memAvailable, headroom } = input;
  if (estimate.bytes === undefined)
    return {
      ok: true,
      note: `VRAM to stage unknown (${estimate.source}); admitted without a check and no memory limit raised (a limit below the staged VRAM OOM-kills the container): give --vram-estimate-mib to check anyway`,
    };
  if (estimate.bytes + headroom > memAvailable) {
    const restore = input.stage === "restore";
    return {
      ok: false,
      error: `host-RAM admission refused the ${restore ? "restore" : "checkpoint"} of container ${input.containerId}: its GPU processes ${restore ? "staged" : "hold"} ${mib(estimate.bytes)} of VRAM (${estimate.source}) to stage in host memory, but MemAvailable is ${mib(memAvailable)} and kybernate keeps ${mib(headroom)} free (--admission-headroom-mib); ${restore ? "nothing is restored" : "the container keeps running untouched"}. Free host memory, move the pod to a node with more RAM, or lower the headroom`,
    };
  }
  return { ok: true };
}

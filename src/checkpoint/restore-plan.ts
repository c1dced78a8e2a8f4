import type { DeviceMap } from "../gpu/types.js";
import type { GpuInventory } from "../host/nvidia-smi.js";
import type { ResolvedGpus } from "./gpu-request.js";
import type { CheckpointMetadata } from "./metadata.js";

export type RestorePlan =
  | {
      ok: true;
      deviceMap: DeviceMap;
      reason: string;
      /** What the checkpoint staged in host memory (CRIU restores it there first), when it says. */
      stagedBytes?: number;
      /** What the container's memory cgroup held before the staging (CRIU restores that too). */
      usageBytes?: number;
    }
  | { ok: false; error: string };

const driverMajor = (version: string | undefined): number | undefined => {
  const n = Number.parseInt(version ?? "", 10);
  return Number.isFinite(n) ? n : undefined;
};

const describeGpus = (gpus: Array<{ name: string; uuid: string }>): string =>
  gpus.length ? gpus.map((g) => `${g.name} ${g.uuid}`).join(", ") : "none";

/**
 * Whether a checkpoint can be restored onto the GPUs the restored container is given (the node's GPUs when
 * its spec does not say), and with which UUID map. The driver restores only onto the same chip type and
 * count; onto other GPUs of the same model it needs old→new UUID pairs (driver ≥ 580) naming every
 * checkpointed GPU. Each checkpointed GPU keeps its own UUID when the container has it; the rest take the
 * container's other GPUs of the same model, in index order.
 */
export function planRestore(
  metadata: CheckpointMetadata | undefined,
  node: GpuInventory,
  container?: ResolvedGpus,
): RestorePlan {
  if (!metadata || metadata.gpus.length === 0)
    return { ok: true, deviceMap: [], reason: "the checkpoint records no GPU; restoring as is" };
  if (node.gpus.length === 0)
    return {
      ok: true,
      deviceMap: [],
      reason: `this node's GPUs are unknown (${node.error ?? "nvidia-smi listed none"}); restoring without a compatibility check`,
    };
  if (container && "error" in container)
    return {
      ok: false,
      error: `refusing to restore: ${container.error}; fix the restored container's GPU request`,
    };
  const wanted = metadata.gpus;
  const given = container ? container.gpus : node.gpus;
  const where = container ? `the restored container (${container.source})` : "this node";
  if (given.length < wanted.length)
    return {
      ok: false,
      error: `refusing to restore: the checkpoint was taken with ${wanted.length} GPU(s) (${describeGpus(wanted)}) and ${where} has ${given.length} (${describeGpus(given)}); the driver restores onto the same GPU count: give the container ${wanted.length}× ${wanted[0]?.name}`,
    };
  const free = [...given].sort((a, b) => a.index - b.index);
  const taken = new Set<string>();
  const pairs: Array<{ from: string; to: string }> = [];
  for (const gpu of wanted) {
    const same = free.find((t) => t.uuid === gpu.uuid && !taken.has(t.uuid));
    if (same) {
      taken.add(same.uuid);
      pairs.push({ from: gpu.uuid, to: same.uuid });
    }
  }
  for (const gpu of wanted) {
    if (pairs.some((p) => p.from === gpu.uuid)) continue;
    const other = free.find(
      (t) => t.name === gpu.name && !taken.has(t.uuid) && !wanted.some((w) => w.uuid === t.uuid),
    );
    if (!other)
      return {
        ok: false,
        error: `refusing to restore: the checkpoint was taken on ${describeGpus(wanted)} and ${where} has no free GPU of model "${gpu.name}" for ${gpu.uuid} (its GPUs: ${describeGpus(given)}); the driver restores only onto the same GPU model and count: restore on a node with ${wanted.length}× ${gpu.name}`,
      };
    taken.add(other.uuid);
    pairs.push({ from: gpu.uuid, to: other.uuid });
  }
  const moved = pairs.filter((p) => p.from !== p.to);
  if (moved.length === 0) return { ok: true, deviceMap: [], reason: "same GPUs as at checkpoint" };
  const major = driverMajor(node.driverVersion);
  if (major !== undefined && major < 580)
    return {
      ok: false,
      error: `refusing to restore: the checkpoint's GPUs (${moved.map((p) => p.from).join(", ")}) are not ${container ? "the restored container's" : "on this node"} and a restore onto other GPUs needs a UUID device map, which driver ${node.driverVersion} lacks: upgrade the driver to 580 or later, or restore onto the original GPUs`,
    };
  // The driver maps every device of the process, so the pairs cover each checkpointed GPU, moved or not.
  return {
    ok: true,
    deviceMap: pairs,
    reason: `other GPUs of the same model: ${moved.map((p) => `${p.from}→${p.to}`).join(", ")}`,
  };
}

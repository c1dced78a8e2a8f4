import type { DeviceMap } from "../gpu/types.js";
import type { GpuInfo, GpuInventory } from "../host/nvidia-smi.js";
import { DEVICE_MAP_ANNOTATION, type ResolvedGpus } from "./gpu-request.js";
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
 * container's other GPUs of the same model, in index order. `requested` (the pod's kybernate.io/device-map)
 * replaces that choice with the user's, once checked: the only way to ask for a swap, since the order of the
 * container's devices or NVIDIA_VISIBLE_DEVICES does not reach CUDA (it enumerates the GPUs it can open in its own
 * order), so a container given the same two GPUs "the other way round" restores as is.
 */
export function planRestore(
  metadata: CheckpointMetadata | undefined,
  node: GpuInventory,
  container?: ResolvedGpus,
  requested?: string,
): RestorePlan {
  // A map the user asked for is applied only once checked: without the checkpoint's GPUs or the node's, it cannot be.
  if (requested !== undefined && (!metadata || metadata.gpus.length === 0 || node.gpus.length === 0))
    return {
      ok: false,
      error: `refusing to restore: the pod asks for a device map (${DEVICE_MAP_ANNOTATION}) that cannot be checked: ${!metadata || metadata.gpus.length === 0 ? "the checkpoint records no GPU" : `this node's GPUs are unknown (${node.error ?? "nvidia-smi listed none"})`}; remove the annotation or restore a checkpoint kybernate wrote on a node whose nvidia-smi works`,
    };
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
  if (requested !== undefined) return planRequested(requested, wanted, given, where, node.driverVersion);
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
  const tooOld = driverTooOld(
    node.driverVersion,
    moved,
    container ? "the restored container's" : "on this node",
  );
  if (tooOld) return tooOld;
  // The driver maps every device of the process, so the pairs cover each checkpointed GPU, moved or not.
  return {
    ok: true,
    deviceMap: pairs,
    reason: `other GPUs of the same model: ${moved.map((p) => `${p.from}→${p.to}`).join(", ")}`,
  };
}

function driverTooOld(
  version: string | undefined,
  moved: Array<{ from: string }>,
  whose: string,
): RestorePlan | undefined {
  const major = driverMajor(version);
  if (major === undefined || major >= 580) return undefined;
  return {
    ok: false,
    error: `refusing to restore: the checkpoint's GPUs (${moved.map((p) => p.from).join(", ")}) are not ${whose} and a restore onto other GPUs needs a UUID device map, which driver ${version} lacks: upgrade the driver to 580 or later, or restore onto the original GPUs`,
  };
}

const UUID = /^GPU-[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

/**
 * The user's map, checked against what the driver takes (shown on the two-GPU H200: a map naming only some of
 * the GPUs the process held open is refused, CUDA_ERROR_INVALID_VALUE) and what the container was given: one
 * pair for every checkpointed GPU, each target one of the container's GPUs, of the same model, none twice.
 * Everything is refused here, before any process exists, rather than by the driver at post-resume.
 */
function planRequested(
  text: string,
  wanted: CheckpointMetadata["gpus"],
  given: GpuInfo[],
  where: string,
  driverVersion: string | undefined,
): RestorePlan {
  const refuse = (why: string): RestorePlan => ({
    ok: false,
    error: `refusing to restore: the pod's ${DEVICE_MAP_ANNOTATION} ${why}; write it as OLD=NEW,… with one pair for each GPU of the checkpoint (${describeGpus(wanted)}), each NEW one of ${where}'s GPUs (${describeGpus(given)})`,
  });
  const entries = text
    .split(",")
    .map((e) => e.trim())
    .filter(Boolean);
  if (entries.length === 0) return refuse("is empty");
  const pairs: Array<{ from: string; to: string }> = [];
  for (const entry of entries) {
    const parts = entry.split("=").map((s) => s.trim());
    const [from = "", to = ""] = parts;
    // Only the shape is quoted back, never more than a UUID's length of what the user wrote.
    if (parts.length !== 2 || !UUID.test(from) || !UUID.test(to))
      return refuse(`has an entry that is not OLD_UUID=NEW_UUID (${entry.slice(0, 90)})`);
    pairs.push({ from, to });
  }
  const same = (a: string, b: string) => a.toLowerCase() === b.toLowerCase();
  for (const [i, p] of pairs.entries()) {
    if (pairs.some((q, j) => j < i && same(q.from, p.from))) return refuse(`names ${p.from} twice`);
    if (pairs.some((q, j) => j < i && same(q.to, p.to))) return refuse(`maps two GPUs onto ${p.to}`);
    if (!wanted.some((w) => same(w.uuid, p.from)))
      return refuse(`names ${p.from}, which is no GPU of the checkpoint`);
  }
  const missing = wanted.filter((w) => !pairs.some((p) => same(p.from, w.uuid)));
  if (missing.length)
    return refuse(
      `leaves out ${missing.map((g) => g.uuid).join(", ")}: the driver takes a map only when it names every GPU the processes held open`,
    );
  const deviceMap: Array<{ from: string; to: string }> = [];
  for (const gpu of wanted) {
    const pair = pairs.find((p) => same(p.from, gpu.uuid)) as { from: string; to: string };
    const target = given.find((g) => same(g.uuid, pair.to));
    if (!target) return refuse(`maps ${gpu.uuid} onto ${pair.to}, which is not one of ${where}'s GPUs`);
    if (target.name !== gpu.name)
      return refuse(
        `maps ${gpu.uuid} (${gpu.name}) onto ${target.uuid} (${target.name}): the driver restores only onto the same GPU model`,
      );
    deviceMap.push({ from: gpu.uuid, to: target.uuid });
  }
  const moved = deviceMap.filter((p) => p.from !== p.to);
  if (moved.length === 0)
    return {
      ok: true,
      deviceMap: [],
      reason: `${DEVICE_MAP_ANNOTATION} names the same GPUs as at checkpoint`,
    };
  const tooOld = driverTooOld(driverVersion, moved, `where ${DEVICE_MAP_ANNOTATION} puts them`);
  if (tooOld) return tooOld;
  return {
    ok: true,
    deviceMap,
    reason: `${DEVICE_MAP_ANNOTATION}: ${moved.map((p) => `${p.from}→${p.to}`).join(", ")}`,
  };
}

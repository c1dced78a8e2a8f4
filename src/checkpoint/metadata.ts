import { readdir, readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import type { DeviceMap } from "../gpu/types.js";
import type { ComputeApp, GpuInfo, GpuInventory } from "../host/nvidia-smi.js";
import type { ResolvedGpus } from "./gpu-request.js";

/** The file kybernate leaves in CRIU's image directory; it travels in the checkpoint's `checkpoint/` folder. */
export const METADATA_FILE = "kybernate.json";

export interface CheckpointMetadata {
  schema: 1;
  kybernateVersion: string;
  createdAt: string;
  containerId: string;
  pod?: string;
  container?: string;
  driverVersion?: string;
  /**
   * The GPUs the driver checkpointed: every GPU the processes held open (else the ones they computed on, else
   * all of the node's). A restore's device map must name each of them.
   */
  gpus: Array<Pick<GpuInfo, "uuid" | "name" | "memoryMiB">>;
  processes: Array<{ pid: number; gpuUuids: string[]; vramBytes?: number }>;
  /** What the checkpoint moved to host memory, as the engine measured it. */
  vramBytesMoved?: number;
}

export function buildMetadata(input: {
  version: string;
  containerId: string;
  pod?: string;
  container?: string;
  inventory: GpuInventory;
  apps: ComputeApp[];
  pids: number[];
  /** The GPUs the processes held open, when known: the driver checkpoints each of them. */
  opened?: GpuInfo[];
  vramBytesMoved?: number;
  now?: Date;
}): CheckpointMetadata {
  const mine = input.apps.filter((a) => input.pids.includes(a.pid));
  const used = new Set(input.opened?.length ? input.opened.map((g) => g.uuid) : mine.map((a) => a.gpuUuid));
  const gpus = (used.size ? input.inventory.gpus.filter((g) => used.has(g.uuid)) : input.inventory.gpus).map(
    (g) => ({ uuid: g.uuid, name: g.name, memoryMiB: g.memoryMiB }),
  );
  return {
    schema: 1,
    kybernateVersion: input.version,
    createdAt: (input.now ?? new Date()).toISOString(),
    containerId: input.containerId,
    ...(input.pod ? { pod: input.pod } : {}),
    ...(input.container ? { container: input.container } : {}),
    ...(input.inventory.driverVersion ? { driverVersion: input.inventory.driverVersion } : {}),
    gpus,
    processes: input.pids.map((pid) => {
      const apps = mine.filter((a) => a.pid === pid);
      return {
        pid,
        gpuUuids: apps.map((a) => a.gpuUuid),
        ...(apps.length ? { vramBytes: apps.reduce((s, a) => s + a.usedBytes, 0) } : {}),
      };
    }),
    ...(input.vramBytesMoved !== undefined ? { vramBytesMoved: input.vramBytesMoved } : {}),
  };
}

export async function writeMetadata(imageDir: string, metadata: CheckpointMetadata): Promise<string> {
  const path = join(imageDir, METADATA_FILE);
  await writeFile(path, `${JSON.stringify(metadata, null, 2)}\n`, { mode: 0o644 });
  return path;
}

/** The checkpoint's metadata, or undefined when it has none (taken without kybernate's metadata). */
export async function readMetadata(imageDir: string): Promise<CheckpointMetadata | undefined> {
  let text: string;
  try {
    text = await readFile(join(imageDir, METADATA_FILE), "utf8");
  } catch {
    return undefined;
  }
  const value = JSON.parse(text) as Partial<CheckpointMetadata>;
  if (value.schema !== 1 || !Array.isArray(value.gpus))
    throw new Error(
      `${join(imageDir, METADATA_FILE)} is not kybernate checkpoint metadata of schema 1: written by a newer kybernate? Upgrade kybernate on this node`,
    );
  return value as CheckpointMetadata;
}

async function parentOf(pid: number): Promise<number | undefined> {
  const stat = await readFile(`/proc/${pid}/stat`, "utf8").catch(() => "");
  const ppid = Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1]);
  return ppid > 1 ? ppid : undefined;
}

/**
 * The directory a restore's images were read from. At post-resume CRIU has already closed the image
 * directory that CRTOOLS_IMAGE_DIR names, but runc (CRIU's parent, waiting for it) still holds the fd it
 * passed to CRIU; so each directory fd of CRIU and of runc is tried for kybernate.json.
 */
export async function findMetadataDir(
  imageDir: string | undefined,
  criuPid?: number,
): Promise<string | undefined> {
  const candidates = imageDir ? [imageDir] : [];
  const runc = criuPid ? await parentOf(criuPid) : undefined;
  for (const pid of [criuPid, runc]) {
    if (!pid) continue;
    const fds = await readdir(`/proc/${pid}/fd`).catch(() => [] as string[]);
    candidates.push(...fds.map((fd) => `/proc/${pid}/fd/${fd}`));
  }
  for (const dir of candidates) {
    try {
      await readFile(join(dir, METADATA_FILE), { flag: "r" });
      return dir;
    } catch {}
  }
  return undefined;
}

export type RestorePlan = { ok: true; deviceMap: DeviceMap; reason: string } | { ok: false; error: string };

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

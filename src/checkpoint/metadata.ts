import { readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import type { ComputeApp, GpuInfo, GpuInventory } from "../host/nvidia-smi.js";
import { openFds, parentOf } from "../host/proc.js";

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
    candidates.push(...(await openFds(pid)).map((fd) => fd.procPath));
  }
  for (const dir of candidates) {
    try {
      await readFile(join(dir, METADATA_FILE), { flag: "r" });
      return dir;
    } catch {}
  }
  return undefined;
}

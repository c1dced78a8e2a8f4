import { writeFile } from "node:fs/promises";
import { isIP } from "node:net";
import { join } from "node:path";
import { FileRefused, readSmallRegularFile } from "../host/files.js";
import type { ComputeApp, GpuInfo, GpuInventory } from "../host/nvidia-smi.js";
import { openFds, parentOf } from "../host/proc.js";

/** The file kybernate leaves in CRIU's image directory; it travels in the checkpoint's `checkpoint/` folder. */
export const METADATA_FILE = "kybernate.json";

/** kybernate writes a few KiB; anything near this is not its file. */
export const MAX_METADATA_BYTES = 1024 * 1024;

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
  /** What admission expected to stage in host memory (a restore raises memory limits by it when unmeasured). */
  stagedBytesEstimate?: number;
  /** The container's memory cgroup usage before the staging: a restore brings it back on top of the staged bytes. */
  memoryUsageBytes?: number;
  /**
   * Files of the pod's /dev/shm the processes map under a name since unlinked (glibc's sem_open maps a temporary
   * file it renames): CRIU keeps them through link-remap links that live in the original pod's /dev/shm only
   * while it dumps, so no restore can open them.
   */
  unrestorableShm?: string[];
  /**
   * The pod's IPs and the local addresses of the container's TCP sockets at checkpoint: a restore keeps the
   * connections only in a pod that has those addresses (loopback is in every pod).
   */
  network?: {
    tcp?: "established" | "close";
    podIps: string[];
    tcpEstablished: string[];
    tcpListening: string[];
  };
}

/**
 * What the checkpoint staged in host memory: the engine's own figure, else admission's estimate, else nvidia-smi's
 * per process; undefined when the checkpoint does not say.
 */
export function stagedBytesOf(m: CheckpointMetadata): number | undefined {
  if (m.vramBytesMoved !== undefined) return m.vramBytesMoved;
  if (m.stagedBytesEstimate !== undefined) return m.stagedBytesEstimate;
  return m.processes.some((p) => p.vramBytes !== undefined)
    ? m.processes.reduce((s, p) => s + (p.vramBytes ?? 0), 0)
    : undefined;
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
  stagedBytesEstimate?: number;
  memoryUsageBytes?: number;
  unrestorableShm?: string[];
  network?: CheckpointMetadata["network"];
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
    ...(input.stagedBytesEstimate !== undefined ? { stagedBytesEstimate: input.stagedBytesEstimate } : {}),
    ...(input.memoryUsageBytes !== undefined ? { memoryUsageBytes: input.memoryUsageBytes } : {}),
    ...(input.unrestorableShm?.length ? { unrestorableShm: input.unrestorableShm } : {}),
    ...(input.network ? { network: input.network } : {}),
  };
}

export async function writeMetadata(imageDir: string, metadata: CheckpointMetadata): Promise<string> {
  const path = join(imageDir, METADATA_FILE);
  await writeFile(path, `${JSON.stringify(metadata, null, 2)}\n`, { mode: 0o644 });
  return path;
}

/**
 * The checkpoint's metadata, or undefined when it has none (taken without kybernate's metadata). The archive
 * may come from anywhere (a registry), so the file is read as untrusted: a link, a FIFO, a device, more than
 * MAX_METADATA_BYTES, bad JSON or a field of the wrong type throw an Error that names the path and the
 * problem and never quotes the content.
 */
export async function readMetadata(imageDir: string): Promise<CheckpointMetadata | undefined> {
  const path = join(imageDir, METADATA_FILE);
  let bytes: Buffer;
  try {
    bytes = await readSmallRegularFile(path, MAX_METADATA_BYTES);
  } catch (error) {
    if (error instanceof FileRefused && error.problem === "missing") return undefined;
    throw new Error(`the checkpoint's metadata cannot be used: ${(error as Error).message}`);
  }
  let value: unknown;
  try {
    value = JSON.parse(bytes.toString("utf8"));
  } catch {
    // V8's message quotes the text around the error: never put a file's bytes into an error.
    throw new Error(`the checkpoint's metadata cannot be used: ${path} is not JSON`);
  }
  const problem = metadataProblem(value);
  if (problem) throw new Error(`the checkpoint's metadata cannot be used: ${path}: ${problem}`);
  return value as CheckpointMetadata;
}

// ---- schema 1, every field a restore reads; a problem names the field, never its value ----

const GPU_UUID = /^GPU-[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
const MAX_TEXT = 256;
const MAX_ITEMS = 1024;

/** The problem of a value at `field` (the whole sentence), or undefined when it fits. */
type Check = (value: unknown, field: string) => string | undefined;

const text: Check = (v, f) => {
  if (typeof v !== "string") return `field ${f} must be a string`;
  return v.length > MAX_TEXT ? `field ${f} must be at most ${MAX_TEXT} characters` : undefined;
};
const gpuUuid: Check = (v, f) =>
  typeof v === "string" && GPU_UUID.test(v)
    ? undefined
    : `field ${f} must be a GPU UUID (GPU-xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx)`;
const count: Check = (v, f) =>
  typeof v === "number" && Number.isSafeInteger(v) && v >= 0
    ? undefined
    : `field ${f} must be a whole number >= 0`;
const pid: Check = (v, f) =>
  typeof v === "number" && Number.isSafeInteger(v) && v > 0
    ? undefined
    : `field ${f} must be a process id (a whole number > 0)`;
const address: Check = (v, f) =>
  typeof v === "string" && isIP(v) !== 0 ? undefined : `field ${f} must be an IP address`;
const tcpMode: Check = (v, f) =>
  v === "established" || v === "close" ? undefined : `field ${f} must be established or close`;
const schemaOne: Check = (v, f) =>
  v === 1 ? undefined : `field ${f} must be 1 (written by a newer kybernate? Upgrade kybernate on this node)`;

const list =
  (item: Check): Check =>
  (v, f) => {
    if (!Array.isArray(v)) return `field ${f} must be a list`;
    if (v.length > MAX_ITEMS) return `field ${f} must have at most ${MAX_ITEMS} entries`;
    for (const [i, entry] of v.entries()) {
      const problem = item(entry, `${f}[${i}]`);
      if (problem) return problem;
    }
    return undefined;
  };

const object =
  (fields: Record<string, { check: Check; optional?: true }>): Check =>
  (v, f) => {
    if (typeof v !== "object" || v === null || Array.isArray(v))
      return f ? `field ${f} must be an object` : "it is not a JSON object";
    const o = v as Record<string, unknown>;
    for (const [name, { check, optional }] of Object.entries(fields)) {
      const field = f ? `${f}.${name}` : name;
      if (!Object.hasOwn(o, name)) {
        if (optional) continue;
        return `field ${field} is missing`;
      }
      const problem = check(o[name], field);
      if (problem) return problem;
    }
    return undefined;
  };

const metadataShape = object({
  schema: { check: schemaOne },
  kybernateVersion: { check: text },
  createdAt: { check: text },
  containerId: { check: text },
  pod: { check: text, optional: true },
  container: { check: text, optional: true },
  driverVersion: { check: text, optional: true },
  gpus: {
    check: list(object({ uuid: { check: gpuUuid }, name: { check: text }, memoryMiB: { check: count } })),
  },
  processes: {
    check: list(
      object({
        pid: { check: pid },
        gpuUuids: { check: list(text) },
        vramBytes: { check: count, optional: true },
      }),
    ),
  },
  vramBytesMoved: { check: count, optional: true },
  stagedBytesEstimate: { check: count, optional: true },
  memoryUsageBytes: { check: count, optional: true },
  unrestorableShm: { check: list(text), optional: true },
  network: {
    check: object({
      tcp: { check: tcpMode, optional: true },
      podIps: { check: list(address) },
      tcpEstablished: { check: list(address) },
      tcpListening: { check: list(address) },
    }),
    optional: true,
  },
});

/** What is wrong with a parsed kybernate.json (its first problem), or undefined when it is schema 1. */
export function metadataProblem(value: unknown): string | undefined {
  return metadataShape(value, "");
}

/**
 * The directory a restore's images were read from. At post-resume CRIU has already closed the image
 * directory that CRTOOLS_IMAGE_DIR names, but runc (CRIU's parent, waiting for it) still holds the fd it
 * passed to CRIU; so each directory fd of CRIU and of runc is tried for kybernate.json. Each probe is the
 * untrusted reader's (a FIFO or a link there must not block or mislead it): a kybernate.json that is there
 * but refused still names its directory, so that readMetadata refuses the restore with the reason.
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
      await readSmallRegularFile(join(dir, METADATA_FILE), MAX_METADATA_BYTES);
      return dir;
    } catch (error) {
      if (error instanceof FileRefused && error.problem === "missing") continue;
      return dir;
    }
  }
  return undefined;
}

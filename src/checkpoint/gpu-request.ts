import { readdir, readFile, stat } from "node:fs/promises";
import { join } from "node:path";
import type { GpuInfo } from "../host/nvidia-smi.js";

/** The character-device major of /dev/nvidia0…N, /dev/nvidiactl (255) and /dev/nvidia-modeset (254). */
export const NVIDIA_MAJOR = 195;
const GPU_NODE = /^nvidia(\d+)$/;

/**
 * What a container's spec says about its GPUs, as containerd hands it to NRI: the GPU device nodes (CRI
 * devices and CDI both put them in the spec) and NVIDIA_VISIBLE_DEVICES (the NVIDIA container toolkit's
 * legacy route, whose hook adds the nodes after NRI has seen the spec).
 */
export interface GpuRequest {
  minors: number[];
  visibleDevices?: string;
}

export function gpuRequestOf(
  devices: ReadonlyArray<{ path: string; major: number; minor: number }>,
  env: readonly string[],
): GpuRequest {
  const minors = devices
    .filter((d) => d.major === NVIDIA_MAJOR && GPU_NODE.test(d.path.split("/").pop() ?? ""))
    .map((d) => d.minor);
  // The last definition wins, as in execve's environment.
  const entry = [...env].reverse().find((e) => e.startsWith("NVIDIA_VISIBLE_DEVICES="));
  return {
    minors: [...new Set(minors)].sort((a, b) => a - b),
    ...(entry !== undefined ? { visibleDevices: entry.slice("NVIDIA_VISIBLE_DEVICES=".length) } : {}),
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
    // Minor numbers unknown (no /proc/driver/nvidia): fall through to the variable, else the node's GPUs.
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
 * UUID → device minor, from the driver's /proc/driver/nvidia/gpus/<bus>/information ("Device Minor",
 * "GPU UUID"): nvidia-smi's index is not the minor number, and only the minor ties a /dev node to a GPU.
 */
export async function readDeviceMinors(root = "/proc/driver/nvidia/gpus"): Promise<Map<string, number>> {
  const out = new Map<string, number>();
  const buses = await readdir(root).catch(() => [] as string[]);
  for (const bus of buses) {
    const text = await readFile(join(root, bus, "information"), "utf8").catch(() => "");
    const minor = /^Device Minor:\s*(\d+)/m.exec(text)?.[1];
    const uuid = /^GPU UUID:\s*(\S+)/m.exec(text)?.[1];
    if (minor !== undefined && uuid) out.set(uuid, Number(minor));
  }
  return out;
}

/**
 * The GPUs the processes hold open (their /dev/nvidiaN fds, stat'ed through /proc so a container's own /dev
 * needs no reading). The driver checkpoints every GPU a process opened, not only the ones it computes on
 * (CUDA_VISIBLE_DEVICES narrows CUDA's view, not the opens), and a restore's device map must name each of
 * them. Undefined when it cannot tell (minors unknown, no fd readable).
 */
export async function gpusOpenedBy(
  pids: number[],
  gpus: GpuInfo[],
  procRoot = "/proc",
): Promise<GpuInfo[] | undefined> {
  if (!gpus.some((g) => g.minor !== undefined)) return undefined;
  const opened = new Set<GpuInfo>();
  let readable = false;
  for (const pid of pids) {
    const fdDir = join(procRoot, String(pid), "fd");
    const fds = await readdir(fdDir).catch(() => undefined);
    if (!fds) continue;
    readable = true;
    for (const fd of fds) {
      const st = await stat(join(fdDir, fd)).catch(() => undefined);
      if (!st?.isCharacterDevice() || major(st.rdev) !== NVIDIA_MAJOR) continue;
      const gpu = gpus.find((g) => g.minor === minor(st.rdev));
      if (gpu) opened.add(gpu);
    }
  }
  return readable ? [...opened].sort((a, b) => a.index - b.index) : undefined;
}

// Linux's dev_t encoding (glibc gnu_dev_major/minor).
const major = (rdev: number): number => Number((BigInt(rdev) >> 8n) & 0xfffn);
const minor = (rdev: number): number => Number((BigInt(rdev) & 0xffn) | ((BigInt(rdev) >> 12n) & 0xfff00n));

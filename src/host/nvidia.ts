// What makes something NVIDIA's on a host: its device nodes, the toolkit's NVIDIA_VISIBLE_DEVICES, and the
// driver's own files under /proc/driver/nvidia. The one place these rules are written.
import { readdir, readFile } from "node:fs/promises";
import { join } from "node:path";
import { fdsReadable, openCharDevices, PROC_ROOT } from "./proc.js";

/** The character-device major of /dev/nvidia0…N, /dev/nvidiactl (255) and /dev/nvidia-modeset (254). */
export const NVIDIA_MAJOR = 195;

/** The driver's device nodes: nvidiactl, nvidiaN, nvidia-uvm(-tools), nvidia-modeset, nvidia-caps/…. */
export const isNvidiaDevicePath = (path: string): boolean => /^\/dev\/nvidia/.test(path);

/** The GPU number of a /dev/nvidiaN node (its minor, by the driver's naming), else undefined. */
export function gpuNodeNumber(path: string): number | undefined {
  const n = /^\/dev\/nvidia(\d+)$/.exec(path)?.[1];
  return n === undefined ? undefined : Number(n);
}

export const NVIDIA_VISIBLE_DEVICES = "NVIDIA_VISIBLE_DEVICES";

/**
 * NVIDIA_VISIBLE_DEVICES as the NVIDIA container toolkit reads it from a spec's environment: the last
 * definition wins (it builds a map of the list), and the toolkit's hook is what decides the devices.
 */
export function visibleDevices(env: readonly string[]): string | undefined {
  const prefix = `${NVIDIA_VISIBLE_DEVICES}=`;
  const entry = env.findLast((e) => e.startsWith(prefix));
  return entry === undefined ? undefined : entry.slice(prefix.length);
}

/** Whether that value gives the container GPUs ("", "void" and "none" give none). */
export const visibleDevicesGiveGpus = (value: string | undefined): value is string =>
  value !== undefined && !["", "void", "none"].includes(value.trim());

/** The driver's directory in /proc. */
export const driverProcDir = (procRoot = PROC_ROOT): string => join(procRoot, "driver", "nvidia");

/**
 * UUID → device minor, from the driver's gpus/<bus>/information ("Device Minor", "GPU UUID"): nvidia-smi's
 * index is not the minor number, and only the minor ties a /dev node to a GPU.
 */
export async function readDeviceMinors(procRoot = PROC_ROOT): Promise<Map<string, number>> {
  const out = new Map<string, number>();
  const root = join(driverProcDir(procRoot), "gpus");
  const buses = await readdir(root).catch(() => [] as string[]);
  for (const bus of buses) {
    const text = await readFile(join(root, bus, "information"), "utf8").catch(() => "");
    const minor = /^Device Minor:\s*(\d+)/m.exec(text)?.[1];
    const uuid = /^GPU UUID:\s*(\S+)/m.exec(text)?.[1];
    if (minor !== undefined && uuid) out.set(uuid, Number(minor));
  }
  return out;
}

/** The driver's version file ("NVRM version: … Kernel Module  580.159.04  …"). */
export const driverVersionFile = (procRoot = PROC_ROOT): string => join(driverProcDir(procRoot), "version");

/** The driver version a version file names, or undefined when it names none (or is absent). */
export async function readDriverVersionFile(path: string): Promise<string | undefined> {
  const text = await readFile(path, "utf8").catch(() => "");
  return /Kernel Module(?: for [\w-]+)?\s+(\d+\.\d+(?:\.\d+)?)/.exec(text)?.[1];
}

export const driverVersion = (procRoot = PROC_ROOT): Promise<string | undefined> =>
  readDriverVersionFile(driverVersionFile(procRoot));

// Linux's dev_t encoding (glibc gnu_dev_major/minor).
export const devMajor = (rdev: number): number => Number((BigInt(rdev) >> 8n) & 0xfffn);
export const devMinor = (rdev: number): number =>
  Number((BigInt(rdev) & 0xffn) | ((BigInt(rdev) >> 12n) & 0xfff00n));

/**
 * The minors of the NVIDIA device nodes (major 195: a GPU's minor, nvidiactl's 255, modeset's 254) the processes
 * hold open, stat'ed through /proc so a container's own /dev needs no reading. Undefined when no process's fds
 * could be read at all.
 */
export async function gpuMinorsOpenedBy(
  pids: readonly number[],
  procRoot = PROC_ROOT,
): Promise<Set<number> | undefined> {
  const minors = new Set<number>();
  let readable = false;
  for (const pid of pids) {
    if (!(await fdsReadable(pid, procRoot))) continue;
    readable = true;
    for (const rdev of await openCharDevices(pid, procRoot))
      if (devMajor(rdev) === NVIDIA_MAJOR) minors.add(devMinor(rdev));
  }
  return readable ? minors : undefined;
}

import { execFile } from "node:child_process";
import { promisify } from "node:util";
import { driverVersion as procDriverVersion, readDeviceMinors } from "./nvidia.js";
import { PROC_ROOT } from "./proc.js";

const run = promisify(execFile);

export interface GpuInfo {
  index: number;
  /** `GPU-xxxxxxxx-…`, as nvidia-smi -L shows it. */
  uuid: string;
  /** The product name, e.g. "NVIDIA H200": restore needs the same chip type. */
  name: string;
  memoryMiB: number;
  persistenceMode?: boolean;
  /** The minor number of its /dev/nvidiaN node (from the driver's own files): how a container's devices name it. */
  minor?: number;
}

export interface GpuInventory {
  driverVersion?: string;
  gpus: GpuInfo[];
  /** Why the inventory is empty or partial (nvidia-smi missing, failed), for logs and doctor. */
  error?: string;
}

export interface ComputeApp {
  pid: number;
  gpuUuid: string;
  usedBytes: number;
}

/** What kybernate asks of the node's GPUs; tests substitute their own. */
export interface GpuProbe {
  inventory(): Promise<GpuInventory>;
  /** Host pids using a GPU and how much VRAM each holds; empty when unknown. */
  computeApps(): Promise<ComputeApp[]>;
}

const MiB = 1024 * 1024;

/** `nvidia-smi --format=csv,noheader,nounits` rows → cells; "[N/A]" and "[Not Supported]" become "". */
export function parseCsv(text: string): string[][] {
  return text
    .split("\n")
    .map((line) => line.trim())
    .filter(Boolean)
    .map((line) => line.split(",").map((cell) => cell.trim().replace(/^\[.*\]$/, "")));
}

export function parseGpuRows(text: string): { driverVersion?: string; gpus: GpuInfo[] } {
  let driverVersion: string | undefined;
  const gpus = parseCsv(text).map((cells): GpuInfo => {
    const [index, uuid, name, memory, driver, persistence] = cells;
    if (!uuid || !name) throw new Error(`unexpected nvidia-smi --query-gpu line: ${cells.join(", ")}`);
    if (driver) driverVersion ??= driver;
    return {
      index: Number(index),
      uuid,
      name,
      memoryMiB: Number(memory) || 0,
      ...(persistence ? { persistenceMode: /^enabled$/i.test(persistence) } : {}),
    };
  });
  return { ...(driverVersion ? { driverVersion } : {}), gpus };
}

export function parseComputeApps(text: string): ComputeApp[] {
  return parseCsv(text)
    .map(([pid, gpuUuid, used]) => ({
      pid: Number(pid),
      gpuUuid: gpuUuid ?? "",
      usedBytes: (Number(used) || 0) * MiB,
    }))
    .filter((app) => Number.isInteger(app.pid) && app.pid > 0);
}

/**
 * GPU facts through nvidia-smi (it ships with every driver install and speaks for NVML, which the driver API
 * lacks: the checkpoint API has no per-process VRAM query). Missing nvidia-smi is not an error here: the
 * inventory says why it is empty and callers decide.
 */
export class NvidiaSmiProbe implements GpuProbe {
  constructor(
    private readonly binary = "nvidia-smi",
    private readonly timeoutMs = 10_000,
    private readonly procRoot = PROC_ROOT,
  ) {}

  async inventory(): Promise<GpuInventory> {
    try {
      const { stdout } = await run(
        this.binary,
        [
          "--query-gpu=index,uuid,name,memory.total,driver_version,persistence_mode",
          "--format=csv,noheader,nounits",
        ],
        { timeout: this.timeoutMs },
      );
      const parsed = parseGpuRows(stdout);
      const minors = await readDeviceMinors(this.procRoot);
      for (const gpu of parsed.gpus) {
        const minor = minors.get(gpu.uuid);
        if (minor !== undefined) gpu.minor = minor;
      }
      const driverVersion = parsed.driverVersion ?? (await procDriverVersion(this.procRoot));
      return { ...parsed, ...(driverVersion ? { driverVersion } : {}) };
    } catch (error) {
      const driverVersion = await procDriverVersion(this.procRoot);
      return {
        gpus: [],
        ...(driverVersion ? { driverVersion } : {}),
        error: `${this.binary} failed: ${describeExecError(error)}`,
      };
    }
  }

  async computeApps(): Promise<ComputeApp[]> {
    try {
      const { stdout } = await run(
        this.binary,
        ["--query-compute-apps=pid,gpu_uuid,used_memory", "--format=csv,noheader,nounits"],
        { timeout: this.timeoutMs },
      );
      return parseComputeApps(stdout);
    } catch {
      return [];
    }
  }
}

export function describeExecError(error: unknown): string {
  const e = error as NodeJS.ErrnoException & { stderr?: string };
  if (e.code === "ENOENT") return "not found (not installed, or not on PATH)";
  return (e.stderr?.trim() || e.message).split("\n")[0] ?? String(error);
}

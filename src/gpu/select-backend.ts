import type { Logger } from "../base/log.js";
import type { GpuBackend } from "./backend.js";
import { BinaryBackend } from "./binary-backend.js";
import { DriverBackend } from "./driver-backend.js";

export type BackendKind = "auto" | "driver" | "binary";

export interface BackendOptions {
  kind?: BackendKind;
  /** libcuda.so.1 path (default: $KYBERNATE_LIBCUDA, else the loader's search and common driver dirs). */
  libcuda?: string;
  /** cuda-checkpoint path (default: $KYBERNATE_CUDA_CHECKPOINT, else `cuda-checkpoint` on PATH). */
  cudaCheckpoint?: string;
  logger?: Logger;
  /** The driver backend's threads: how many calls may run at once (default 16), and as many may be stuck. */
  driverThreads?: number;
}

/** auto: the driver API when libcuda.so.1 loads (and cuInit succeeds), else NVIDIA's cuda-checkpoint tool. */
export function openBackend(opts: BackendOptions = {}): GpuBackend {
  const kind = opts.kind ?? "auto";
  const libcuda = opts.libcuda ?? (process.env.KYBERNATE_LIBCUDA || undefined);
  const tool = opts.cudaCheckpoint ?? (process.env.KYBERNATE_CUDA_CHECKPOINT || "cuda-checkpoint");
  if (kind === "binary") return new BinaryBackend(tool);
  try {
    return new DriverBackend(
      libcuda,
      opts.driverThreads ? { maxThreads: opts.driverThreads, maxStuck: opts.driverThreads } : {},
    );
  } catch (err) {
    if (kind === "driver") throw err;
    opts.logger?.info(
      { reason: (err as Error).message, tool },
      "driver API unavailable, using cuda-checkpoint",
    );
    return new BinaryBackend(tool);
  }
}

import type { Argv } from "yargs";
import type { GpuBackend } from "../gpu/backend.js";
import { type BackendKind, openBackend } from "../gpu/select-backend.js";

export interface GpuBackendArgs {
  gpuBackend: BackendKind;
  libcuda?: string;
  cudaCheckpoint?: string;
}

/** The options that pick how the driver is reached, as `kybernate run` spells them. */
export function withGpuBackend<T>(yargs: Argv<T>): Argv<T & GpuBackendArgs> {
  return yargs
    .option("gpu-backend", {
      type: "string",
      default: "auto",
      choices: ["auto", "driver", "binary"],
      describe: "auto: the driver API when libcuda.so.1 loads, else NVIDIA's cuda-checkpoint",
    })
    .option("libcuda", { type: "string", describe: "path of libcuda.so.1 for the driver backend" })
    .option("cuda-checkpoint", {
      type: "string",
      describe: "path of NVIDIA's cuda-checkpoint for the binary backend",
    }) as unknown as Argv<T & GpuBackendArgs>;
}

export function openGpuBackend(args: GpuBackendArgs): GpuBackend {
  return openBackend({
    kind: args.gpuBackend,
    ...(args.libcuda ? { libcuda: args.libcuda } : {}),
    ...(args.cudaCheckpoint ? { cudaCheckpoint: args.cudaCheckpoint } : {}),
  });
}

export type { CallOptions, GpuBackend } from "./backend.js";
export { BinaryBackend } from "./binary-backend.js";
export { type GpuCommandOptions, type GpuCommandResult, runGpuCommand, summary } from "./command.js";
export {
  cgroupOfPid,
  type Discovery,
  discoverCudaProcesses,
  holdsDevice,
  isNvidiaDevice,
  processesOfCgroup,
  resolveCgroupDir,
} from "./discovery.js";
export { DriverBackend, libcudaCandidates } from "./driver-backend.js";
export { type EngineOptions, GpuEngine, type OperationRecord, type ProcessRecord } from "./engine.js";
export { type BackendKind, type BackendOptions, openBackend } from "./select-backend.js";
export * from "./types.js";

// The CUresult values kybernate reasons about (cuda.h, CUDA 13): number, name and the driver's own text
// (cuGetErrorString), in one table, so both backends report a failure the same way.

export const CUDA_ERRORS = [
  { result: 0, name: "CUDA_SUCCESS", message: "no error" },
  { result: 1, name: "CUDA_ERROR_INVALID_VALUE", message: "invalid argument" },
  { result: 3, name: "CUDA_ERROR_NOT_INITIALIZED", message: "initialization error" },
  {
    result: 304,
    name: "CUDA_ERROR_OPERATING_SYSTEM",
    message: "OS call failed or operation not supported on this OS",
  },
  {
    result: 401,
    name: "CUDA_ERROR_ILLEGAL_STATE",
    message: "the operation cannot be performed in the present state",
  },
  { result: 600, name: "CUDA_ERROR_NOT_READY", message: "device not ready" },
  { result: 801, name: "CUDA_ERROR_NOT_SUPPORTED", message: "operation not supported" },
  { result: 909, name: "CUDA_ERROR_TIMEOUT", message: "the operation timed out" },
  { result: 999, name: "CUDA_ERROR_UNKNOWN", message: "unknown error" },
] as const;

export type CudaError = (typeof CUDA_ERRORS)[number];

export const cudaErrorByResult = (result: number): CudaError | undefined =>
  CUDA_ERRORS.find((e) => e.result === result);

/** The entry whose driver text this is (the cuda-checkpoint tool prints only the text). */
export const cudaErrorByMessage = (message: string): CudaError | undefined =>
  CUDA_ERRORS.find((e) => e.message === message);

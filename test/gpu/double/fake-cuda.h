/*
 * The GPU test double's shared definitions: the driver's codes and texts (from CUDA 13's cuda.h and the
 * texts cuGetErrorString returns) and the control protocol between a controller (fake libcuda.so.1,
 * fake cuda-checkpoint) and the fake workload. TEST ONLY: none of this ever talks to a GPU.
 */
#ifndef FAKE_CUDA_H
#define FAKE_CUDA_H

#define CUDA_SUCCESS 0
#define CUDA_ERROR_INVALID_VALUE 1
#define CUDA_ERROR_NOT_INITIALIZED 3
#define CUDA_ERROR_OPERATING_SYSTEM 304
#define CUDA_ERROR_ILLEGAL_STATE 401
#define CUDA_ERROR_NOT_FOUND 500
#define CUDA_ERROR_NOT_READY 600
#define CUDA_ERROR_NOT_SUPPORTED 801
#define CUDA_ERROR_TIMEOUT 909
#define CUDA_ERROR_UNKNOWN 999

enum { ST_RUNNING = 0, ST_LOCKED = 1, ST_CHECKPOINTED = 2, ST_FAILED = 3 };

/* Where a workload listens, inside its own mount namespace: <dir>/<ns pid>.sock (and <ns pid>.json). */
#define FAKE_CUDA_DEFAULT_DIR "/tmp/fake-cuda"

const char *fake_cuda_dir(void);
const char *fake_error_string(int code);
const char *fake_error_name(int code);

/*
 * One control call to the workload whose HOST pid is `pid`. `op` is state|lock|checkpoint|restore|unlock|tid,
 * `arg` an operation argument (lock: timeout ms, restore: number of GPU pairs). Lock waits at most
 * timeout_ms for the answer (0 = forever), like the driver; every other call waits forever, like the driver.
 * Returns a CUresult; *value gets the state (state) or thread id (tid).
 */
int fake_call(int pid, const char *op, unsigned arg, unsigned timeout_ms, int *value);

#endif

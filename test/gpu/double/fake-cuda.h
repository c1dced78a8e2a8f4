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

/* The same with a text argument after `arg` (restore: the device map "old=new,old=new", as the tool writes it). */
int fake_call_text(int pid, const char *op, unsigned arg, const char *text, unsigned timeout_ms, int *value);

/* The longest request line: a restore naming a few GPU pairs (81 bytes each) fits. */
#define FAKE_REQ_MAX 1024

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

/*
 * FAKE_CUDA_DEBUG_LOG=FILE: both sides append every control call that goes unanswered, with the reason
 * (flaky-test hunting). `who` names the side ("ctl", "workload"). In the header: the workload links no other file.
 */
__attribute__((unused, format(printf, 2, 3))) static void fake_debug(const char *who, const char *fmt, ...) {
  const char *path = getenv("FAKE_CUDA_DEBUG_LOG");
  if (!path) return;
  FILE *f = fopen(path, "a");
  if (!f) return;
  va_list ap;
  va_start(ap, fmt);
  fprintf(f, "%s[%d] ", who, (int)getpid());
  vfprintf(f, fmt, ap);
  fputc('\n', f);
  va_end(ap);
  fclose(f);
}

#endif

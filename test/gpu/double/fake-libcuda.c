/*
 * Fake libcuda.so.1 for the GPU test double. TEST ONLY, never install it as a driver.
 * Exports the driver entry points kybernate uses, with the real signatures, codes and texts; the checkpoint
 * calls drive a fake-cuda-workload through its control socket (fake-ctl.c).
 */
#define _GNU_SOURCE
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "fake-cuda.h"

typedef int CUresult;
typedef struct {
  char bytes[16];
} CUuuid;
typedef struct {
  unsigned int timeoutMs;
  unsigned int reserved0;
  uint64_t reserved1[7];
} CUcheckpointLockArgs;
typedef struct {
  uint64_t reserved[8];
} CUcheckpointCheckpointArgs;
typedef struct {
  CUuuid oldUuid, newUuid;
} CUcheckpointGpuPair;
typedef struct {
  CUcheckpointGpuPair *gpuPairs;
  unsigned int gpuPairsCount;
  char reserved[52 - sizeof(CUcheckpointGpuPair *)];
  uint64_t reserved1;
} CUcheckpointRestoreArgs;
typedef struct {
  uint64_t reserved[8];
} CUcheckpointUnlockArgs;

_Static_assert(sizeof(CUcheckpointLockArgs) == 64, "lock args layout");
_Static_assert(sizeof(CUcheckpointRestoreArgs) == 64, "restore args layout");

CUresult cuInit(unsigned int flags) { return flags == 0 ? CUDA_SUCCESS : CUDA_ERROR_INVALID_VALUE; }

CUresult cuDriverGetVersion(int *version) {
  if (!version) return CUDA_ERROR_INVALID_VALUE;
  const char *v = getenv("FAKE_CUDA_DRIVER_VERSION");
  *version = v ? atoi(v) : 13000;
  return CUDA_SUCCESS;
}

CUresult cuGetErrorString(CUresult error, const char **str) {
  if (!str) return CUDA_ERROR_INVALID_VALUE;
  *str = fake_error_string(error);
  return *str ? CUDA_SUCCESS : CUDA_ERROR_INVALID_VALUE;
}

CUresult cuGetErrorName(CUresult error, const char **str) {
  if (!str) return CUDA_ERROR_INVALID_VALUE;
  *str = fake_error_name(error);
  return *str ? CUDA_SUCCESS : CUDA_ERROR_INVALID_VALUE;
}

static int all_zero(const void *p, size_t n) {
  const unsigned char *b = p;
  for (size_t i = 0; i < n; i++)
    if (b[i]) return 0;
  return 1;
}

CUresult cuCheckpointProcessGetState(int pid, int *state) {
  if (!state) return CUDA_ERROR_INVALID_VALUE;
  return fake_call(pid, "state", 0, 0, state);
}

CUresult cuCheckpointProcessGetRestoreThreadId(int pid, int *tid) {
  if (!tid) return CUDA_ERROR_INVALID_VALUE;
  return fake_call(pid, "tid", 0, 0, tid);
}

CUresult cuCheckpointProcessLock(int pid, CUcheckpointLockArgs *args) {
  if (args && (args->reserved0 || !all_zero(args->reserved1, sizeof args->reserved1))) return CUDA_ERROR_INVALID_VALUE;
  unsigned t = args ? args->timeoutMs : 0;
  return fake_call(pid, "lock", t, t, NULL);
}

CUresult cuCheckpointProcessCheckpoint(int pid, CUcheckpointCheckpointArgs *args) {
  if (args && !all_zero(args, sizeof *args)) return CUDA_ERROR_INVALID_VALUE;
  return fake_call(pid, "checkpoint", 0, 0, NULL);
}

static void print_uuid(FILE *f, const CUuuid *u) {
  const unsigned char *b = (const unsigned char *)u->bytes;
  fprintf(f, "GPU-");
  for (int i = 0; i < 16; i++) fprintf(f, "%02x%s", b[i], (i == 3 || i == 5 || i == 7 || i == 9) ? "-" : "");
}

/* The pairs as text, "old=new,...", exactly as the bytes reached the "driver". */
static void format_pairs(FILE *f, const CUcheckpointRestoreArgs *args) {
  for (unsigned i = 0; i < args->gpuPairsCount; i++) {
    if (i) fputc(',', f);
    print_uuid(f, &args->gpuPairs[i].oldUuid);
    fputc('=', f);
    print_uuid(f, &args->gpuPairs[i].newUuid);
  }
}

/* What reached the driver, byte for byte: one line per restore with a map, "pid old=new,..." (tests read it). */
static void log_pairs(int pid, const CUcheckpointRestoreArgs *args) {
  const char *path = getenv("FAKE_CUDA_PAIRS_LOG");
  if (!path || !args->gpuPairsCount) return;
  FILE *f = fopen(path, "a");
  if (!f) return;
  fprintf(f, "%d ", pid);
  format_pairs(f, args);
  fputc('\n', f);
  fclose(f);
}

CUresult cuCheckpointProcessRestore(int pid, CUcheckpointRestoreArgs *args) {
  unsigned pairs = 0;
  char text[FAKE_REQ_MAX] = "";
  if (args) {
    if (!all_zero(args->reserved, sizeof args->reserved) || args->reserved1) return CUDA_ERROR_INVALID_VALUE;
    if (args->gpuPairsCount && !args->gpuPairs) return CUDA_ERROR_INVALID_VALUE;
    pairs = args->gpuPairsCount;
    if (pairs) {
      log_pairs(pid, args);
      /* The workload applies the map to the GPUs it holds, as the driver does (and refuses one naming too few). */
      FILE *f = fmemopen(text, sizeof text - 1, "w");
      if (!f) return CUDA_ERROR_OPERATING_SYSTEM;
      format_pairs(f, args);
      fclose(f);
    }
  }
  return fake_call_text(pid, "restore", pairs, text, 0, NULL);
}

CUresult cuCheckpointProcessUnlock(int pid, CUcheckpointUnlockArgs *args) {
  if (args && !all_zero(args, sizeof *args)) return CUDA_ERROR_INVALID_VALUE;
  return fake_call(pid, "unlock", 0, 0, NULL);
}

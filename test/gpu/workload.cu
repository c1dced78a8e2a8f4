// kybernate's real CUDA workload for the GPU machine: allocates N GiB with cudaMalloc (never managed memory,
// which the driver cannot checkpoint), fills a pattern, keeps a kernel incrementing a device counter, and
// verifies the pattern periodically (and on SIGUSR1). It rewrites a status file (--status PATH) with one
// JSON line: pid, counter, verify results, so a test can see work going on and the VRAM intact after a
// checkpoint/restore.
// Build: nvcc -arch=sm_90 -cudart static -O2 -o workload test/gpu/workload.cu
#include <cuda_runtime.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define CHECK(x)                                                                                   \
  do {                                                                                             \
    cudaError_t e_ = (x);                                                                          \
    if (e_ != cudaSuccess) {                                                                       \
      fprintf(stderr, "workload[%d]: %s failed: %s\n", getpid(), #x, cudaGetErrorString(e_));      \
      exit(2);                                                                                     \
    }                                                                                              \
  } while (0)

__device__ __forceinline__ uint64_t pattern(uint64_t i) {
  uint64_t z = i * 0x9E3779B97F4A7C15ull;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  return z ^ (z >> 31);
}

__global__ void fill(uint64_t *p, uint64_t n) {
  for (uint64_t i = blockIdx.x * (uint64_t)blockDim.x + threadIdx.x; i < n; i += (uint64_t)gridDim.x * blockDim.x)
    p[i] = pattern(i);
}

__global__ void check(const uint64_t *p, uint64_t n, unsigned long long *bad) {
  for (uint64_t i = blockIdx.x * (uint64_t)blockDim.x + threadIdx.x; i < n; i += (uint64_t)gridDim.x * blockDim.x)
    if (p[i] != pattern(i)) atomicAdd(bad, 1ull);
}

__global__ void tick(unsigned long long *counter) { atomicAdd(counter, 1ull); }

static volatile sig_atomic_t stop_flag, verify_now;
static void on_term(int) { stop_flag = 1; }
static void on_usr1(int) { verify_now = 1; }

static double now_s() {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec + t.tv_nsec / 1e9;
}

int main(int argc, char **argv) {
  double gib = 1;
  const char *status = NULL;
  double verify_every = 5;
  for (int i = 1; i + 1 < argc; i += 2) {
    if (!strcmp(argv[i], "--gib")) gib = atof(argv[i + 1]);
    else if (!strcmp(argv[i], "--status")) status = argv[i + 1];
    else if (!strcmp(argv[i], "--verify-every")) verify_every = atof(argv[i + 1]);
    else {
      fprintf(stderr, "usage: workload [--gib N] [--status PATH] [--verify-every SECONDS]\n");
      return 64;
    }
  }
  signal(SIGTERM, on_term);
  signal(SIGINT, on_term);
  signal(SIGUSR1, on_usr1);

  uint64_t n = (uint64_t)(gib * (1ull << 30)) / 8;
  uint64_t *buf;
  unsigned long long *counter, *bad, host_bad = 0, host_counter = 0;
  CHECK(cudaMalloc(&buf, n * 8));
  CHECK(cudaMalloc(&counter, sizeof *counter));
  CHECK(cudaMalloc(&bad, sizeof *bad));
  CHECK(cudaMemset(counter, 0, sizeof *counter));
  fill<<<1024, 256>>>(buf, n);
  CHECK(cudaDeviceSynchronize());
  printf("ready pid=%d gib=%.2f\n", getpid(), gib);
  fflush(stdout);

  unsigned verified = 0, verify_failures = 0;
  unsigned long long last_bad = 0;
  double last_verify = now_s(), last_status = 0;
  while (!stop_flag) {
    tick<<<1, 1>>>(counter);
    CHECK(cudaMemcpy(&host_counter, counter, sizeof host_counter, cudaMemcpyDeviceToHost));
    if (verify_now || now_s() - last_verify >= verify_every) {
      CHECK(cudaMemset(bad, 0, sizeof *bad));
      check<<<1024, 256>>>(buf, n, bad);
      CHECK(cudaMemcpy(&host_bad, bad, sizeof host_bad, cudaMemcpyDeviceToHost));
      if (host_bad) verify_failures++, last_bad = host_bad;
      else verified++;
      verify_now = 0;
      last_verify = now_s();
    }
    if (status && now_s() - last_status >= 0.1) {
      char tmp[4096];
      snprintf(tmp, sizeof tmp, "%s.tmp", status);
      FILE *f = fopen(tmp, "w");
      if (f) {
        fprintf(f,
                "{\"pid\":%d,\"gib\":%.2f,\"counter\":%llu,\"verified\":%u,\"verifyFailures\":%u,\"lastBadWords\":%llu}\n",
                getpid(), gib, host_counter, verified, verify_failures, last_bad);
        fclose(f);
        rename(tmp, status);
      }
      last_status = now_s();
    }
    usleep(10000);
  }
  return verify_failures ? 1 : 0;
}

// kybernate's two-GPU CUDA workload (issue 15): one process holding VRAM on two GPUs with peer access between
// them. It fills a buffer on each device with that device's own pattern (--gib0, --gib1: different sizes, so
// nvidia-smi's per-GPU memory of the process tells which physical GPU holds which buffer), enables peer access
// both ways, and keeps running: a counter kernel on each device, and periodically a check of each buffer by a
// kernel on its own device AND by a kernel on the other device reading it across the peer mapping. It rewrites
// a status file (--status PATH) with one JSON line: counters, verify results, the UUID the driver now gives
// each of its CUDA devices (re-read at every check through the driver API, so a restore through a device map
// that swapped the GPUs shows), and whether peer access is on. Never managed memory (the driver cannot
// checkpoint it).
//
//   workload-2gpu [--gib0 N] [--gib1 N] [--devices 0,1] [--status PATH] [--verify-every SECONDS]
//
// --devices 0,0 puts both buffers on one GPU (no peer access; the "across" check reads the same device): a
// smoke run of this program on a one-GPU machine, not the two-GPU case.
// Build: nvcc -arch=sm_90 -cudart static -O2 -o workload-2gpu test/gpu/workload-2gpu.cu -ldl
#include <cuda_runtime.h>
#include <dlfcn.h>
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
      fprintf(stderr, "workload-2gpu[%d]: %s failed: %s\n", getpid(), #x, cudaGetErrorString(e_)); \
      exit(2);                                                                                     \
    }                                                                                              \
  } while (0)

// Each device's buffer has its own pattern (the seed), so a buffer read from the wrong place never verifies.
__device__ __forceinline__ uint64_t pattern(uint64_t i, uint64_t seed) {
  uint64_t z = (i ^ (seed << 56)) * 0x9E3779B97F4A7C15ull;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  return z ^ (z >> 31);
}

__global__ void fill(uint64_t *p, uint64_t n, uint64_t seed) {
  for (uint64_t i = blockIdx.x * (uint64_t)blockDim.x + threadIdx.x; i < n; i += (uint64_t)gridDim.x * blockDim.x)
    p[i] = pattern(i, seed);
}

// Runs on any device; `p` may live on the other one (read across the peer mapping).
__global__ void check(const uint64_t *p, uint64_t n, uint64_t seed, unsigned long long *bad) {
  for (uint64_t i = blockIdx.x * (uint64_t)blockDim.x + threadIdx.x; i < n; i += (uint64_t)gridDim.x * blockDim.x)
    if (p[i] != pattern(i, seed)) atomicAdd(bad, 1ull);
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

// The driver API's view of a device's UUID, asked anew each time: after a restore through a device map the
// driver gives the new GPU's UUID (the runtime's device properties may keep what they read at start).
typedef int (*cuDeviceGet_t)(int *, int);
typedef int (*cuDeviceGetUuid_t)(unsigned char *, int);
static cuDeviceGet_t p_cuDeviceGet;
static cuDeviceGetUuid_t p_cuDeviceGetUuid;

static void load_driver_api() {
  void *h = dlopen("libcuda.so.1", RTLD_NOW | RTLD_NOLOAD);
  if (!h) h = dlopen("libcuda.so.1", RTLD_NOW);
  if (!h) return;
  p_cuDeviceGet = (cuDeviceGet_t)dlsym(h, "cuDeviceGet");
  p_cuDeviceGetUuid = (cuDeviceGetUuid_t)dlsym(h, "cuDeviceGetUuid_v2");
  if (!p_cuDeviceGetUuid) p_cuDeviceGetUuid = (cuDeviceGetUuid_t)dlsym(h, "cuDeviceGetUuid");
}

static void uuid_of(int ordinal, char *out, size_t len) {
  unsigned char b[16];
  int dev = 0;
  snprintf(out, len, "unknown");
  if (!p_cuDeviceGet || !p_cuDeviceGetUuid || p_cuDeviceGet(&dev, ordinal) != 0 || p_cuDeviceGetUuid(b, dev) != 0)
    return;
  snprintf(out, len, "GPU-%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", b[0], b[1], b[2],
           b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11], b[12], b[13], b[14], b[15]);
}

struct Side {
  int ordinal;
  double gib;
  uint64_t n;
  uint64_t *buf;
  unsigned long long *counter, *bad;
  unsigned long long host_counter;
  char uuid[48];
};

// Bad words of buffer `of` as read by a kernel on device `on` (0 when it verifies).
static unsigned long long verify(Side *on, Side *of, uint64_t seed) {
  unsigned long long bad = 0;
  CHECK(cudaSetDevice(on->ordinal));
  CHECK(cudaMemset(on->bad, 0, sizeof *on->bad));
  check<<<1024, 256>>>(of->buf, of->n, seed, on->bad);
  CHECK(cudaMemcpy(&bad, on->bad, sizeof bad, cudaMemcpyDeviceToHost));
  return bad;
}

int main(int argc, char **argv) {
  const char *status = NULL, *devices = "0,1";
  double verify_every = 5, gib0 = 1, gib1 = -1;
  for (int i = 1; i + 1 < argc; i += 2) {
    if (!strcmp(argv[i], "--gib0")) gib0 = atof(argv[i + 1]);
    else if (!strcmp(argv[i], "--gib1")) gib1 = atof(argv[i + 1]);
    else if (!strcmp(argv[i], "--devices")) devices = argv[i + 1];
    else if (!strcmp(argv[i], "--status")) status = argv[i + 1];
    else if (!strcmp(argv[i], "--verify-every")) verify_every = atof(argv[i + 1]);
    else {
      fprintf(stderr,
              "usage: workload-2gpu [--gib0 N] [--gib1 N] [--devices 0,1] [--status PATH] [--verify-every S]\n");
      return 64;
    }
  }
  if (gib1 < 0) gib1 = gib0 / 2;
  Side s[2] = {};
  if (sscanf(devices, "%d,%d", &s[0].ordinal, &s[1].ordinal) != 2) {
    fprintf(stderr, "workload-2gpu: --devices wants two CUDA ordinals, e.g. 0,1\n");
    return 64;
  }
  s[0].gib = gib0;
  s[1].gib = gib1;
  signal(SIGTERM, on_term);
  signal(SIGINT, on_term);
  signal(SIGUSR1, on_usr1);
  int count = 0;
  CHECK(cudaGetDeviceCount(&count));
  if (s[0].ordinal >= count || s[1].ordinal >= count) {
    fprintf(stderr, "workload-2gpu: --devices %s but CUDA sees %d device(s)\n", devices, count);
    return 2;
  }
  load_driver_api();

  for (int d = 0; d < 2; d++) {
    Side *x = &s[d];
    x->n = (uint64_t)(x->gib * (1ull << 30)) / 8;
    if (x->n == 0) x->n = 1;
    CHECK(cudaSetDevice(x->ordinal));
    CHECK(cudaMalloc(&x->buf, x->n * 8));
    CHECK(cudaMalloc(&x->counter, sizeof *x->counter));
    CHECK(cudaMalloc(&x->bad, sizeof *x->bad));
    CHECK(cudaMemset(x->counter, 0, sizeof *x->counter));
    fill<<<1024, 256>>>(x->buf, x->n, (uint64_t)d + 1);
    CHECK(cudaDeviceSynchronize());
  }
  // Peer access both ways: the across checks then read the other device's memory directly.
  int peer = 0;
  if (s[0].ordinal != s[1].ordinal) {
    int can01 = 0, can10 = 0;
    CHECK(cudaDeviceCanAccessPeer(&can01, s[0].ordinal, s[1].ordinal));
    CHECK(cudaDeviceCanAccessPeer(&can10, s[1].ordinal, s[0].ordinal));
    if (!can01 || !can10) {
      fprintf(stderr, "workload-2gpu: devices %d and %d cannot access each other (peer access %d/%d)\n",
              s[0].ordinal, s[1].ordinal, can01, can10);
      return 2;
    }
    CHECK(cudaSetDevice(s[0].ordinal));
    CHECK(cudaDeviceEnablePeerAccess(s[1].ordinal, 0));
    CHECK(cudaSetDevice(s[1].ordinal));
    CHECK(cudaDeviceEnablePeerAccess(s[0].ordinal, 0));
    peer = 1;
  }
  for (int d = 0; d < 2; d++) uuid_of(s[d].ordinal, s[d].uuid, sizeof s[d].uuid);
  printf("ready pid=%d devices=%d,%d gib=%.2f,%.2f peer=%d uuids=%s,%s\n", getpid(), s[0].ordinal, s[1].ordinal,
         gib0, gib1, peer, s[0].uuid, s[1].uuid);
  fflush(stdout);

  unsigned verified = 0, verify_failures = 0, cross_verified = 0, cross_failures = 0;
  unsigned long long last_bad = 0;
  double last_verify = 0, last_status = 0;
  while (!stop_flag) {
    for (int d = 0; d < 2; d++) {
      CHECK(cudaSetDevice(s[d].ordinal));
      tick<<<1, 1>>>(s[d].counter);
      CHECK(cudaMemcpy(&s[d].host_counter, s[d].counter, sizeof s[d].host_counter, cudaMemcpyDeviceToHost));
    }
    if (verify_now || now_s() - last_verify >= verify_every) {
      unsigned long long own = verify(&s[0], &s[0], 1) + verify(&s[1], &s[1], 2);
      unsigned long long across = verify(&s[0], &s[1], 2) + verify(&s[1], &s[0], 1);
      if (own) verify_failures++, last_bad = own;
      else verified++;
      if (across) cross_failures++, last_bad = across;
      else cross_verified++;
      for (int d = 0; d < 2; d++) uuid_of(s[d].ordinal, s[d].uuid, sizeof s[d].uuid);
      verify_now = 0;
      last_verify = now_s();
    }
    if (status && now_s() - last_status >= 0.1) {
      char tmp[4096];
      snprintf(tmp, sizeof tmp, "%s.tmp", status);
      FILE *f = fopen(tmp, "w");
      if (f) {
        // counter/verified/verifyFailures: the fields every kybernate workload reports (the e2e reads them);
        // a failed across check counts as a verify failure too.
        fprintf(f,
                "{\"pid\":%d,\"counter\":%llu,\"counter1\":%llu,\"verified\":%u,\"verifyFailures\":%u,"
                "\"crossVerified\":%u,\"crossFailures\":%u,\"lastBadWords\":%llu,\"peer\":%s,"
                "\"devices\":[{\"ordinal\":%d,\"gib\":%.2f,\"uuid\":\"%s\"},{\"ordinal\":%d,\"gib\":%.2f,\"uuid\":\"%s\"}]}\n",
                getpid(), s[0].host_counter, s[1].host_counter, verified, verify_failures + cross_failures,
                cross_verified, cross_failures, last_bad, peer ? "true" : "false", s[0].ordinal, s[0].gib,
                s[0].uuid, s[1].ordinal, s[1].gib, s[1].uuid);
        fclose(f);
        rename(tmp, status);
      }
      last_status = now_s();
    }
    usleep(10000);
  }
  return verify_failures || cross_failures ? 1 : 0;
}

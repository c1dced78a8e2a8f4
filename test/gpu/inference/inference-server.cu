// kybernate's inference-shaped CUDA workload for the GPU machine: an HTTP server (http-serve.h, the same protocol
// as the GPU double's --serve) whose "model" is --gib GiB of weights in VRAM (cudaMalloc, never managed memory):
// L layers of D x D floats; a request's 64 inputs are spread over D and pushed through every layer,
// h = tanh(W h), and the first 64 outputs are the answer. Each row is reduced by one block in a fixed order, so the
// same weights give bit-identical answers on the same GPU, before and after a checkpoint. The weights are
// checksummed at start and every --verify-s seconds; the status file (--status) says how that went.
// Build: nvcc -arch=sm_90 -cudart static -O2 -o inference-server test/gpu/inference/inference-server.cu \
//          test/gpu/inference/http-serve.c
#include <cuda_runtime.h>
#include <math.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "http-serve.h"

#define CHECK(x)                                                                              \
  do {                                                                                        \
    cudaError_t e_ = (x);                                                                     \
    if (e_ != cudaSuccess) {                                                                  \
      fprintf(stderr, "inference-server[%d]: %s failed: %s\n", getpid(), #x, cudaGetErrorString(e_)); \
      exit(2);                                                                                \
    }                                                                                         \
  } while (0)

static const int D = 4096;
static const int THREADS = 256;

__device__ __forceinline__ float weight(uint64_t i) {
  uint64_t z = (i + 1) * 0x9E3779B97F4A7C15ull;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z ^= z >> 31;
  return ((float)(z >> 40) / 16777216.0f * 2.0f - 1.0f) / 64.0f;
}

__global__ void fill(float *w, uint64_t n) {
  for (uint64_t i = blockIdx.x * (uint64_t)blockDim.x + threadIdx.x; i < n; i += (uint64_t)gridDim.x * blockDim.x)
    w[i] = weight(i);
}

__global__ void checksum(const float *w, uint64_t n, unsigned long long *bad) {
  for (uint64_t i = blockIdx.x * (uint64_t)blockDim.x + threadIdx.x; i < n; i += (uint64_t)gridDim.x * blockDim.x)
    if (w[i] != weight(i)) atomicAdd(bad, 1ull);
}

// One block per output row; a fixed tree reduction, so the result never depends on scheduling.
__global__ void layer(const float *w, const float *in, float *out) {
  __shared__ float part[THREADS];
  const float *row = w + (uint64_t)blockIdx.x * D;
  float acc = 0;
  for (int j = threadIdx.x; j < D; j += THREADS) acc += row[j] * in[j];
  part[threadIdx.x] = acc;
  __syncthreads();
  for (int s = THREADS / 2; s > 0; s >>= 1) {
    if (threadIdx.x < s) part[threadIdx.x] += part[threadIdx.x + s];
    __syncthreads();
  }
  if (threadIdx.x == 0) out[blockIdx.x] = tanhf(part[0]);
}

static float *weights, *h0, *h1;
static uint64_t nweights;
static int layers;
static unsigned verified, verify_failures;
static volatile sig_atomic_t stop;

static int infer(const double *x, double *y) {
  static float host[4096];
  for (int j = 0; j < D; j++) host[j] = (float)x[j % INFER_DIM] * (1.0f + (float)(j / INFER_DIM) / 64.0f);
  CHECK(cudaMemcpy(h0, host, sizeof(float) * D, cudaMemcpyHostToDevice));
  float *a = h0, *b = h1;
  for (int l = 0; l < layers; l++) {
    layer<<<D, THREADS>>>(weights + (uint64_t)l * D * D, a, b);
    float *t = a;
    a = b;
    b = t;
  }
  CHECK(cudaMemcpy(host, a, sizeof(float) * INFER_DIM, cudaMemcpyDeviceToHost));
  for (int i = 0; i < INFER_DIM; i++) y[i] = host[i];
  return 0;
}

static void verify(void) {
  unsigned long long *bad, h = 0;
  CHECK(cudaMalloc(&bad, sizeof *bad));
  CHECK(cudaMemset(bad, 0, sizeof *bad));
  checksum<<<1024, 256>>>(weights, nweights, bad);
  CHECK(cudaMemcpy(&h, bad, sizeof h, cudaMemcpyDeviceToHost));
  CHECK(cudaFree(bad));
  if (h == 0) verified++;
  else verify_failures++;
}

static void write_status(const char *path) {
  if (!path) return;
  char tmp[512];
  snprintf(tmp, sizeof tmp, "%s.tmp", path);
  FILE *f = fopen(tmp, "w");
  if (!f) return;
  const struct serve_stats *s = serve_stats();
  fprintf(f,
          "{\"pid\":%d,\"state\":\"running\",\"gib\":%.3f,\"layers\":%d,\"verified\":%u,\"verifyFailures\":%u,"
          "\"served\":%lu,\"accepted\":%u,\"closed\":%u,\"open\":%u}\n",
          getpid(), (double)nweights * 4 / (1 << 30), layers, verified, verify_failures, s->served, s->accepted,
          s->closed, s->open);
  fclose(f);
  rename(tmp, path);
}

static double now_s(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec + t.tv_nsec / 1e9;
}

static void on_signal(int s) {
  (void)s;
  stop = 1;
}

int main(int argc, char **argv) {
  double gib = 1, verify_s = 10;
  int port = 8080;
  const char *status = NULL;
  for (int i = 1; i + 1 < argc; i += 2) {
    if (!strcmp(argv[i], "--gib")) gib = atof(argv[i + 1]);
    else if (!strcmp(argv[i], "--port")) port = atoi(argv[i + 1]);
    else if (!strcmp(argv[i], "--status")) status = argv[i + 1];
    else if (!strcmp(argv[i], "--verify-s")) verify_s = atof(argv[i + 1]);
    else {
      fprintf(stderr, "usage: inference-server [--gib N] [--port P] [--status PATH] [--verify-s S]\n");
      return 64;
    }
  }
  layers = (int)(gib * (1 << 30) / (4.0 * D * D));
  if (layers < 1) layers = 1;
  nweights = (uint64_t)layers * D * D;
  CHECK(cudaMalloc(&weights, nweights * sizeof(float)));
  CHECK(cudaMalloc(&h0, D * sizeof(float)));
  CHECK(cudaMalloc(&h1, D * sizeof(float)));
  fill<<<4096, 256>>>(weights, nweights);
  CHECK(cudaDeviceSynchronize());
  verify();
  if (serve_listen(port) != 0) {
    perror("inference-server: listen");
    return 2;
  }
  signal(SIGPIPE, SIG_IGN);
  struct sigaction sa = {};
  sa.sa_handler = on_signal;
  sigaction(SIGTERM, &sa, NULL);
  sigaction(SIGINT, &sa, NULL);
  write_status(status);
  printf("ready pid=%d layers=%d gib=%.3f port=%d\n", getpid(), layers, (double)nweights * 4 / (1 << 30), port);
  fflush(stdout);
  double last_verify = now_s(), last_status = 0;
  while (!stop) {
    struct pollfd fds[1 + SERVE_MAX_CONNS];
    int n = serve_pollfds(fds, 1 + SERVE_MAX_CONNS);
    poll(fds, (nfds_t)n, 50);
    serve_events(fds, n, infer);
    if (now_s() - last_verify >= verify_s) {
      verify();
      last_verify = now_s();
    }
    if (now_s() - last_status >= 0.1) {
      write_status(status);
      last_status = now_s();
    }
  }
  return 0;
}

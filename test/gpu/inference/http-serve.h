/*
 * A tiny HTTP/1.1 "inference" server, shared by the GPU double's workload (--serve) and the real CUDA server
 * (test/gpu/inference/inference-server.cu). TEST ONLY. Keep-alive connections, one poll loop, no threads:
 *
 *   POST /infer   body: INFER_DIM numbers (text)  ->  200, body: INFER_DIM numbers, %.17g (bit-exact doubles)
 *   GET  /healthz                                ->  200 "ok"
 *
 * The host program owns the model: `infer` computes y from x with the weights it keeps in (fake) VRAM and
 * returns 0, or -1 when it cannot compute now (the GPU is locked or checkpointed): the request then waits, as
 * a CUDA call waits while the driver holds the process locked.
 */
#ifndef KYB_HTTP_SERVE_H
#define KYB_HTTP_SERVE_H

#include <poll.h>

#ifdef __cplusplus
extern "C" {
#endif

#define INFER_DIM 64
#define SERVE_MAX_CONNS 32

typedef int (*infer_fn)(const double *x, double *y);

struct serve_stats {
  unsigned long served;
  unsigned accepted;
  /* Connections that ended from the other side or with an error (a restore with tcp-close ends them here). */
  unsigned closed;
  unsigned open;
};

/* Listens on 0.0.0.0:port; returns 0, or -1 with errno. */
int serve_listen(int port);
/* Fills fds with the listener and the connections; returns how many. */
int serve_pollfds(struct pollfd *fds, int max);
/* Handles what poll reported on the fds serve_pollfds gave, and answers what `infer` can answer now. */
void serve_events(const struct pollfd *fds, int n, infer_fn infer);
const struct serve_stats *serve_stats(void);

#ifdef __cplusplus
}
#endif
#endif

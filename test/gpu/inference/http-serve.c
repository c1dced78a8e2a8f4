/* The "inference" HTTP server of http-serve.h. TEST ONLY. */
#define _GNU_SOURCE
#include "http-serve.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define BUF 16384

struct conn {
  int fd;
  size_t len;
  char in[BUF];
};

static int listen_fd = -1;
static struct conn conns[SERVE_MAX_CONNS];
static struct serve_stats stats;

int serve_listen(int port) {
  for (int i = 0; i < SERVE_MAX_CONNS; i++) conns[i].fd = -1;
  listen_fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (listen_fd < 0) return -1;
  int one = 1;
  setsockopt(listen_fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((unsigned short)port), .sin_addr.s_addr = htonl(INADDR_ANY)};
  if (bind(listen_fd, (struct sockaddr *)&a, sizeof a) != 0 || listen(listen_fd, 64) != 0) return -1;
  return 0;
}

int serve_pollfds(struct pollfd *fds, int max) {
  int n = 0;
  if (listen_fd < 0 || max < 1) return 0;
  fds[n++] = (struct pollfd){.fd = listen_fd, .events = POLLIN};
  for (int i = 0; i < SERVE_MAX_CONNS && n < max; i++)
    if (conns[i].fd >= 0) fds[n++] = (struct pollfd){.fd = conns[i].fd, .events = POLLIN | POLLRDHUP};
  return n;
}

const struct serve_stats *serve_stats(void) { return &stats; }

static void drop(struct conn *c) {
  close(c->fd);
  c->fd = -1;
  c->len = 0;
  stats.closed++;
  stats.open--;
}

static int write_all(int fd, const char *p, size_t n) {
  while (n > 0) {
    ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
    if (w < 0 && errno == EINTR) continue;
    if (w < 0 && errno == EAGAIN) {
      struct pollfd p1 = {.fd = fd, .events = POLLOUT};
      poll(&p1, 1, 1000);
      continue;
    }
    if (w <= 0) return -1;
    p += w;
    n -= (size_t)w;
  }
  return 0;
}

static int reply(struct conn *c, int code, const char *body) {
  char head[160];
  int hl = snprintf(head, sizeof head, "HTTP/1.1 %d %s\r\nContent-Length: %zu\r\nConnection: keep-alive\r\n\r\n", code,
                    code == 200 ? "OK" : code == 404 ? "Not Found" : "Bad Request", strlen(body));
  return write_all(c->fd, head, (size_t)hl) || write_all(c->fd, body, strlen(body)) ? -1 : 0;
}

/* One complete request at the start of c->in: answers it (or leaves it for later); returns its length, 0 when
 * it is not complete yet or must wait, -1 on a protocol error. */
static long one_request(struct conn *c, infer_fn infer) {
  c->in[c->len < BUF ? c->len : BUF - 1] = 0;
  char *end = strstr(c->in, "\r\n\r\n");
  if (!end) return c->len >= BUF - 1 ? -1 : 0;
  size_t head = (size_t)(end - c->in) + 4;
  size_t body_len = 0;
  char *cl = strcasestr(c->in, "\r\nContent-Length:");
  if (cl && cl < end) body_len = strtoul(cl + 17, NULL, 10);
  if (head + body_len >= BUF) return -1;
  if (c->len < head + body_len) return 0;
  if (strncmp(c->in, "GET /healthz ", 13) == 0) return reply(c, 200, "ok") ? -1 : (long)(head + body_len);
  if (strncmp(c->in, "POST /infer ", 12) != 0) return reply(c, 404, "no such path") ? -1 : (long)(head + body_len);
  double x[INFER_DIM], y[INFER_DIM];
  char body[BUF];
  memcpy(body, c->in + head, body_len);
  body[body_len] = 0;
  char *p = body;
  for (int i = 0; i < INFER_DIM; i++) {
    char *next;
    x[i] = strtod(p, &next);
    if (next == p) return reply(c, 400, "want 64 numbers") ? -1 : (long)(head + body_len);
    p = next;
  }
  if (infer(x, y) != 0) return 0; /* not on the GPU now: the request waits */
  char out[INFER_DIM * 26];
  size_t o = 0;
  for (int i = 0; i < INFER_DIM; i++) o += (size_t)snprintf(out + o, sizeof out - o, i ? " %.17g" : "%.17g", y[i]);
  stats.served++;
  return reply(c, 200, out) ? -1 : (long)(head + body_len);
}

static void answer(struct conn *c, infer_fn infer) {
  for (;;) {
    long used = one_request(c, infer);
    if (used < 0) return drop(c);
    if (used == 0) return;
    memmove(c->in, c->in + used, c->len - (size_t)used);
    c->len -= (size_t)used;
  }
}

void serve_events(const struct pollfd *fds, int n, infer_fn infer) {
  if (n == 0) return;
  if (fds[0].revents & POLLIN) {
    int fd;
    while ((fd = accept4(listen_fd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK)) >= 0) {
      int slot = -1;
      for (int i = 0; i < SERVE_MAX_CONNS; i++)
        if (conns[i].fd < 0) {
          slot = i;
          break;
        }
      if (slot < 0) {
        close(fd);
        continue;
      }
      int one = 1;
      setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
      conns[slot].fd = fd;
      conns[slot].len = 0;
      stats.accepted++;
      stats.open++;
    }
  }
  for (int k = 1; k < n; k++) {
    if (!fds[k].revents) continue;
    for (int i = 0; i < SERVE_MAX_CONNS; i++) {
      struct conn *c = &conns[i];
      if (c->fd != fds[k].fd) continue;
      ssize_t r = recv(c->fd, c->in + c->len, BUF - 1 - c->len, 0);
      /* EOF or an error (a connection a restore closed: tcp-close shuts it down): the connection is over. */
      if (r == 0 || (r < 0 && errno != EAGAIN && errno != EINTR)) {
        drop(c);
        break;
      }
      if (r > 0) c->len += (size_t)r;
      break;
    }
  }
  /* Requests that waited for the GPU are answered as soon as `infer` can. */
  for (int i = 0; i < SERVE_MAX_CONNS; i++)
    if (conns[i].fd >= 0 && conns[i].len > 0) answer(&conns[i], infer);
}

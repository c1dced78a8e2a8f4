/*
 * inference-client: the client pod of the inference-shaped tests. TEST ONLY. Static, so it runs in a busybox pod.
 *
 *   inference-client --server IP:PORT [--status FILE] [--interval-ms 20] [--inputs 8] [--timeout-ms 30000]
 *   inference-client --server IP:PORT --print [--inputs 8]
 *
 * Loop mode keeps ONE keep-alive connection and POSTs input k = i % inputs every interval; each answer must be
 * byte-identical to the first answer for that input. A request that fails (connect error, reset, EOF, timeout,
 * non-200) counts as failed and the next one reconnects. The status file (one JSON line, rewritten every
 * 100 ms) has the counts and the longest time one request took: the pause the client saw.
 * --print queries each input once on a fresh connection and prints "k <answer>" lines (to compare two servers).
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <math.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define DIM 64
#define MAX_INPUTS 64

static struct sockaddr_in server;
static const char *status_path;
static int timeout_ms = 30000;
static char *first[MAX_INPUTS];
static unsigned long requests, ok, failed, mismatches, connects;
static double max_ms, last_ms;
static char last_error[160] = "";
static volatile sig_atomic_t stop;

static double now_ms(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec * 1e3 + (double)t.tv_nsec / 1e6;
}

static int body_for(int k, char *out, size_t size) {
  size_t o = 0;
  for (int j = 0; j < DIM; j++) o += (size_t)snprintf(out + o, size - o, j ? " %.17g" : "%.17g", sin(0.37 * k + 0.11 * j) * (1 + k % 3));
  return (int)o;
}

static int dial(void) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  if (connect(fd, (struct sockaddr *)&server, sizeof server) != 0) {
    snprintf(last_error, sizeof last_error, "connect: %s", strerror(errno));
    close(fd);
    return -1;
  }
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  connects++;
  return fd;
}

/* One POST on fd; the answer's body into `answer`. 0, or -1 with last_error set. */
static int post(int fd, int k, char *answer, size_t size) {
  char body[DIM * 26], req[DIM * 26 + 200];
  int bl = body_for(k, body, sizeof body);
  int rl = snprintf(req, sizeof req, "POST /infer HTTP/1.1\r\nHost: server\r\nContent-Length: %d\r\n\r\n%s", bl, body);
  if (send(fd, req, (size_t)rl, MSG_NOSIGNAL) != rl) {
    snprintf(last_error, sizeof last_error, "send: %s", strerror(errno));
    return -1;
  }
  char in[8192];
  size_t len = 0;
  double until = now_ms() + timeout_ms;
  for (;;) {
    in[len] = 0;
    char *end = strstr(in, "\r\n\r\n");
    if (end) {
      char *cl = strcasestr(in, "Content-Length:");
      size_t need = (size_t)(end - in) + 4 + (cl ? strtoul(cl + 15, NULL, 10) : 0);
      if (len >= need) {
        if (strncmp(in, "HTTP/1.1 200", 12) != 0) {
          snprintf(last_error, sizeof last_error, "status: %.40s", in);
          return -1;
        }
        snprintf(answer, size, "%.*s", (int)(need - (size_t)(end - in) - 4), end + 4);
        return 0;
      }
    }
    int left = (int)(until - now_ms());
    struct pollfd p = {.fd = fd, .events = POLLIN};
    if (left <= 0 || poll(&p, 1, left) == 0) {
      snprintf(last_error, sizeof last_error, "timeout after %d ms", timeout_ms);
      return -1;
    }
    ssize_t r = recv(fd, in + len, sizeof in - 1 - len, 0);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) {
      snprintf(last_error, sizeof last_error, r == 0 ? "connection closed by the server" : "recv: %s", strerror(errno));
      return -1;
    }
    len += (size_t)r;
    if (len >= sizeof in - 1) {
      snprintf(last_error, sizeof last_error, "answer too long");
      return -1;
    }
  }
}

static void write_status(void) {
  if (!status_path) return;
  char tmp[300];
  snprintf(tmp, sizeof tmp, "%s.tmp", status_path);
  FILE *f = fopen(tmp, "w");
  if (!f) return;
  fprintf(f,
          "{\"requests\":%lu,\"ok\":%lu,\"failed\":%lu,\"mismatches\":%lu,\"connects\":%lu,\"maxLatencyMs\":%.1f,"
          "\"lastLatencyMs\":%.1f,\"lastError\":\"%s\"}\n",
          requests, ok, failed, mismatches, connects, max_ms, last_ms, last_error);
  fclose(f);
  rename(tmp, status_path);
}

static void on_signal(int s) {
  (void)s;
  stop = 1;
}

static void usage(void) {
  fprintf(stderr, "usage: inference-client --server IP:PORT [--status FILE] [--interval-ms N] [--inputs K] [--timeout-ms N] [--print]\n");
  exit(64);
}

int main(int argc, char **argv) {
  const char *target = NULL;
  int interval = 20, inputs = 8, print = 0;
  for (int i = 1; i < argc; i++) {
    if (strcmp(argv[i], "--print") == 0) {
      print = 1;
      continue;
    }
    if (i + 1 >= argc) usage();
    if (strcmp(argv[i], "--server") == 0) target = argv[++i];
    else if (strcmp(argv[i], "--status") == 0) status_path = argv[++i];
    else if (strcmp(argv[i], "--interval-ms") == 0) interval = atoi(argv[++i]);
    else if (strcmp(argv[i], "--inputs") == 0) inputs = atoi(argv[++i]);
    else if (strcmp(argv[i], "--timeout-ms") == 0) timeout_ms = atoi(argv[++i]);
    else usage();
  }
  if (!target || inputs < 1 || inputs > MAX_INPUTS) usage();
  char host[64];
  const char *colon = strrchr(target, ':');
  if (!colon || (size_t)(colon - target) >= sizeof host) usage();
  snprintf(host, sizeof host, "%.*s", (int)(colon - target), target);
  server.sin_family = AF_INET;
  server.sin_port = htons((unsigned short)atoi(colon + 1));
  if (inet_pton(AF_INET, host, &server.sin_addr) != 1) usage();
  signal(SIGPIPE, SIG_IGN);
  struct sigaction sa = {.sa_handler = on_signal};
  sigaction(SIGTERM, &sa, NULL);
  sigaction(SIGINT, &sa, NULL);
  static char answer[8192];

  if (print) {
    int fd = dial();
    if (fd < 0) {
      fprintf(stderr, "inference-client: %s\n", last_error);
      return 1;
    }
    for (int k = 0; k < inputs; k++) {
      if (post(fd, k, answer, sizeof answer) != 0) {
        fprintf(stderr, "inference-client: input %d: %s\n", k, last_error);
        return 1;
      }
      printf("%d %s\n", k, answer);
    }
    return 0;
  }

  int fd = -1;
  double last_status = 0;
  for (unsigned long i = 0; !stop; i++) {
    int k = (int)(i % (unsigned long)inputs);
    double t0 = now_ms();
    if (fd < 0) fd = dial();
    int rc = fd < 0 ? -1 : post(fd, k, answer, sizeof answer);
    last_ms = now_ms() - t0;
    if (last_ms > max_ms) max_ms = last_ms;
    requests++;
    if (rc == 0) {
      ok++;
      if (!first[k]) first[k] = strdup(answer);
      else if (strcmp(first[k], answer) != 0) {
        mismatches++;
        snprintf(last_error, sizeof last_error, "input %d: answer differs from its first answer", k);
      }
    } else {
      failed++;
      if (fd >= 0) close(fd);
      fd = -1;
    }
    if (now_ms() - last_status >= 100) {
      write_status();
      last_status = now_ms();
    }
    usleep((useconds_t)interval * 1000);
  }
  write_status();
  return 0;
}

/*
 * Controller side of the double's control channel, shared by the fake libcuda.so.1 and the fake
 * cuda-checkpoint. The workload may live in another pid and mount namespace (a container): we know its host
 * pid, read its namespace pid from /proc/<pid>/status (NSpid, last field) and reach its socket through
 * /proc/<pid>/root, so no bind mount or shared directory is needed.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "fake-cuda.h"

const char *fake_cuda_dir(void) {
  const char *d = getenv("FAKE_CUDA_DIR");
  return d && *d ? d : FAKE_CUDA_DEFAULT_DIR;
}

const char *fake_error_string(int code) {
  switch (code) {
    case CUDA_SUCCESS: return "no error";
    case CUDA_ERROR_INVALID_VALUE: return "invalid argument";
    case CUDA_ERROR_NOT_INITIALIZED: return "initialization error";
    case CUDA_ERROR_OPERATING_SYSTEM: return "OS call failed or operation not supported on this OS";
    case CUDA_ERROR_ILLEGAL_STATE: return "the operation cannot be performed in the present state";
    case CUDA_ERROR_NOT_FOUND: return "named symbol not found";
    case CUDA_ERROR_NOT_READY: return "device not ready";
    case CUDA_ERROR_NOT_SUPPORTED: return "operation not supported";
    case CUDA_ERROR_TIMEOUT: return "the operation timed out";
    case CUDA_ERROR_UNKNOWN: return "unknown error";
    default: return NULL;
  }
}

const char *fake_error_name(int code) {
  switch (code) {
    case CUDA_SUCCESS: return "CUDA_SUCCESS";
    case CUDA_ERROR_INVALID_VALUE: return "CUDA_ERROR_INVALID_VALUE";
    case CUDA_ERROR_NOT_INITIALIZED: return "CUDA_ERROR_NOT_INITIALIZED";
    case CUDA_ERROR_OPERATING_SYSTEM: return "CUDA_ERROR_OPERATING_SYSTEM";
    case CUDA_ERROR_ILLEGAL_STATE: return "CUDA_ERROR_ILLEGAL_STATE";
    case CUDA_ERROR_NOT_FOUND: return "CUDA_ERROR_NOT_FOUND";
    case CUDA_ERROR_NOT_READY: return "CUDA_ERROR_NOT_READY";
    case CUDA_ERROR_NOT_SUPPORTED: return "CUDA_ERROR_NOT_SUPPORTED";
    case CUDA_ERROR_TIMEOUT: return "CUDA_ERROR_TIMEOUT";
    case CUDA_ERROR_UNKNOWN: return "CUDA_ERROR_UNKNOWN";
    default: return NULL;
  }
}

static int ns_pid_of(int pid) {
  char path[64], line[256];
  snprintf(path, sizeof path, "/proc/%d/status", pid);
  FILE *f = fopen(path, "r");
  if (!f) return -1;
  int ns = -1;
  while (fgets(line, sizeof line, f)) {
    if (strncmp(line, "NSpid:", 6) == 0) {
      /* strtok_r: kybernate's driver backend calls into this library from several threads at once. */
      char *save = NULL;
      char *tok = strtok_r(line + 6, " \t\n", &save);
      while (tok) {
        ns = atoi(tok);
        tok = strtok_r(NULL, " \t\n", &save);
      }
      break;
    }
  }
  fclose(f);
  return ns;
}

/* FAKE_CUDA_CALL_LOG=FILE: one line "op pid" per call, appended before anything else, so a test sees which
 * calls reached the "driver" at all (e.g. none for a stopped process). */
static void log_call(const char *op, int pid) {
  const char *path = getenv("FAKE_CUDA_CALL_LOG");
  if (!path) return;
  FILE *f = fopen(path, "a");
  if (!f) return;
  fprintf(f, "%s %d\n", op, pid);
  fclose(f);
}

int fake_call(int pid, const char *op, unsigned arg, unsigned timeout_ms, int *value) {
  return fake_call_text(pid, op, arg, NULL, timeout_ms, value);
}

int fake_call_text(int pid, const char *op, unsigned arg, const char *text, unsigned timeout_ms, int *value) {
  log_call(op, pid);
  char procdir[64];
  struct stat st;
  snprintf(procdir, sizeof procdir, "/proc/%d", pid);
  if (pid <= 0 || stat(procdir, &st) != 0) return CUDA_ERROR_OPERATING_SYSTEM;
  int ns = ns_pid_of(pid);
  if (ns <= 0) {
    fake_debug("ctl", "%s %d: no NSpid", op, pid);
    return CUDA_ERROR_OPERATING_SYSTEM;
  }

  struct sockaddr_un addr = {.sun_family = AF_UNIX};
  int n = snprintf(addr.sun_path, sizeof addr.sun_path, "/proc/%d/root%s/%d.sock", pid, fake_cuda_dir(), ns);
  if (n >= (int)sizeof addr.sun_path) return CUDA_ERROR_INVALID_VALUE;
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return CUDA_ERROR_OPERATING_SYSTEM;
  /* No socket, or nobody listening: the process never initialised "CUDA", as the driver says for any pid. */
  if (connect(fd, (struct sockaddr *)&addr, sizeof addr) != 0) {
    fake_debug("ctl", "%s %d: connect %s: %s", op, pid, addr.sun_path, strerror(errno));
    close(fd);
    return CUDA_ERROR_NOT_INITIALIZED;
  }
  char req[FAKE_REQ_MAX];
  int len = snprintf(req, sizeof req, text && *text ? "%s %u %s\n" : "%s %u\n", op, arg, text);
  if (len >= (int)sizeof req) {
    close(fd);
    return CUDA_ERROR_INVALID_VALUE;
  }
  if (write(fd, req, len) != len) {
    fake_debug("ctl", "%s %d: write: %s", op, pid, strerror(errno));
    close(fd);
    return CUDA_ERROR_OPERATING_SYSTEM;
  }
  char buf[128];
  size_t got = 0;
  for (;;) {
    struct pollfd p = {.fd = fd, .events = POLLIN};
    int r = poll(&p, 1, timeout_ms ? (int)timeout_ms : -1);
    if (r < 0 && errno == EINTR) continue;
    if (r == 0) {
      /* Lock timed out: closing tells the workload to drop the request; the process stays RUNNING. cuda.h
       * lists CUDA_ERROR_NOT_READY among cuCheckpointProcessLock's results and nothing else that fits a
       * timeout, so the double answers that (not yet confirmed against the real driver). */
      close(fd);
      return CUDA_ERROR_NOT_READY;
    }
    ssize_t k = read(fd, buf + got, sizeof buf - 1 - got);
    if (k < 0 && errno == EINTR) continue;
    if (k <= 0) {
      fake_debug("ctl", "%s %d: read %zd: %s", op, pid, k, k < 0 ? strerror(errno) : "EOF");
      close(fd);
      /* The workload went away (or dropped a hung call) before answering. */
      return stat(procdir, &st) == 0 ? CUDA_ERROR_UNKNOWN : CUDA_ERROR_OPERATING_SYSTEM;
    }
    got += (size_t)k;
    buf[got] = 0;
    if (strchr(buf, '\n') || got >= sizeof buf - 1) break;
  }
  close(fd);
  int code = CUDA_ERROR_UNKNOWN, v = 0;
  if (sscanf(buf, "%d %d", &code, &v) < 1) return CUDA_ERROR_UNKNOWN;
  if (value) *value = v;
  return code;
}

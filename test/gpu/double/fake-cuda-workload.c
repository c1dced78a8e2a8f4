/*
 * fake-cuda-workload: a stand-in for a CUDA program, for machines without a GPU. TEST ONLY.
 *
 * While "on the GPU" (RUNNING or LOCKED) it holds what the real driver holds and CRIU cannot dump in its
 * place: an io_uring ring mapped into its memory (CRIU: "Unknown shit 600 (anon_inode:[io_uring])") and an
 * open fd of its "device" (/dev/nvidiactl when present, else --device PATH). Its "VRAM" is a memfd read and
 * written with pread/pwrite, so it is not part of VmRSS, like device memory. CHECKPOINT copies the VRAM into
 * an anonymous mapping ("host copy", VmRSS grows by its size, as with the driver), then releases the memfd,
 * the ring and the device. RESTORE takes them back, writes the copy back and verifies every word of the
 * pattern. Word 0 of the VRAM is a counter incremented while RUNNING, so a test sees the work go on.
 *
 * Control: a unix socket <dir>/<ns pid>.sock (dir: --dir, else $FAKE_CUDA_DIR, else /tmp/fake-cuda), one
 * request per connection ("op arg\n" -> "code value\n"); no connection is kept, so once released the process
 * is dumpable by CRIU. Status: <dir>/<ns pid>.json, rewritten every 100 ms.
 *
 * --gpus UUID,UUID: the GPUs it holds (each UUID as nvidia-smi names one). A restore with a device map must name
 * every one of them, as the driver's does (a map naming only some is refused, CUDA_ERROR_INVALID_VALUE, and the
 * process stays CHECKPOINTED); the map moves each to its new UUID, and the status shows where they are now.
 * --library PATH: maps PATH read-only for good, as the loader maps a shared library (a stand-in for libnccl.so).
 *
 * Faults (--fault-file PATH, "%p" in PATH -> ns pid), read at each request, one rule a line:
 *   OP fail [COUNT]   answer CUDA_ERROR_UNKNOWN, state unchanged (COUNT times, default always)
 *   OP failed [COUNT] enter FAILED and answer CUDA_ERROR_UNKNOWN
 *   OP hang [COUNT]   never answer and do nothing (the connection is dropped when the caller closes it)
 *   OP delay MS       take MS milliseconds before doing OP
 * OP is state|lock|checkpoint|restore|unlock|tid.
 *
 * --serve PORT: also an "inference server" (../inference/http-serve.h) whose model weights are the VRAM's
 * pattern words: it answers only while on the GPU (RUNNING); requests that come while LOCKED or CHECKPOINTED
 * wait, as CUDA calls wait while the driver holds the process.
 *
 * --traits 1: also holds UDP and unix sockets, eventfd/epoll/timerfd, POSIX shm and a semaphore in /dev/shm and
 * 16 threads (fake-traits.c), checked every 200 ms while RUNNING; the status says which first failed.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/io_uring.h>
#include <math.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "fake-cuda.h"
#include "../inference/http-serve.h"
#include "fake-traits.h"

static const char *dir;
static const char *device_opt;
static const char *fault_file;
static int serve_port;
static int traits;
static unsigned trait_checks;
static char trait_state[128] = "off";
static const char *library;
#define MAX_GPUS 8
#define UUID_LEN 40
static char gpus[MAX_GPUS][UUID_LEN + 1];
static int ngpus;
static size_t vram_bytes = 16u << 20;
static volatile sig_atomic_t stop;

static int state = ST_RUNNING;
static int vram_fd = -1, ring_fd = -1, dev_fd = -1;
static void *ring_map;
static size_t ring_len;
static uint64_t *host_copy;
static uint64_t counter;
static unsigned verified, verify_failures, checkpoints, restores, last_pairs;
static char sock_path[108], status_path[256];
static int ns_pid;

static void die(const char *what) {
  fprintf(stderr, "fake-cuda-workload[%d]: %s: %s\n", getpid(), what, strerror(errno));
  if (sock_path[0]) unlink(sock_path);
  if (status_path[0]) unlink(status_path);
  exit(2);
}

static uint64_t pattern(uint64_t i) {
  uint64_t z = i * 0x9E3779B97F4A7C15ull;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  return z ^ (z >> 31);
}

static uint64_t now_ms(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (uint64_t)t.tv_sec * 1000 + (uint64_t)t.tv_nsec / 1000000;
}

static const char *device_path(void) {
  if (device_opt) return device_opt;
  return access("/dev/nvidiactl", F_OK) == 0 ? "/dev/nvidiactl" : NULL;
}

/* The resources the driver holds while the process is on the GPU. */
static int take_gpu(void) {
  const char *dev = device_path();
  if (!dev) {
    errno = ENOENT;
    return -1;
  }
  dev_fd = open(dev, O_RDWR | O_CLOEXEC);
  if (dev_fd < 0) return -1;
  struct io_uring_params p;
  memset(&p, 0, sizeof p);
  ring_fd = (int)syscall(__NR_io_uring_setup, 4, &p);
  if (ring_fd < 0) return -1;
  ring_len = p.sq_off.array + p.sq_entries * sizeof(uint32_t);
  ring_map = mmap(NULL, ring_len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, ring_fd, IORING_OFF_SQ_RING);
  if (ring_map == MAP_FAILED) return -1;
  vram_fd = memfd_create("fake-vram", MFD_CLOEXEC);
  if (vram_fd < 0 || ftruncate(vram_fd, (off_t)vram_bytes) != 0) return -1;
  return 0;
}

static void release_gpu(void) {
  if (ring_map && ring_map != MAP_FAILED) munmap(ring_map, ring_len);
  ring_map = NULL;
  if (ring_fd >= 0) close(ring_fd);
  if (dev_fd >= 0) close(dev_fd);
  if (vram_fd >= 0) close(vram_fd);
  ring_fd = dev_fd = vram_fd = -1;
}

#define CHUNK (1u << 20)

static int fill_vram(void) {
  static uint64_t buf[CHUNK / 8];
  for (size_t off = 0; off < vram_bytes; off += CHUNK) {
    size_t n = vram_bytes - off < CHUNK ? vram_bytes - off : CHUNK;
    for (size_t w = 0; w < n / 8; w++) buf[w] = pattern(off / 8 + w);
    if (off == 0) buf[0] = counter;
    if (pwrite(vram_fd, buf, n, (off_t)off) != (ssize_t)n) return -1;
  }
  return 0;
}

/* Every word but the counter must hold its pattern value. */
static int verify_vram(void) {
  static uint64_t buf[CHUNK / 8];
  for (size_t off = 0; off < vram_bytes; off += CHUNK) {
    size_t n = vram_bytes - off < CHUNK ? vram_bytes - off : CHUNK;
    if (pread(vram_fd, buf, n, (off_t)off) != (ssize_t)n) return -1;
    for (size_t w = off == 0 ? 1 : 0; w < n / 8; w++)
      if (buf[w] != pattern(off / 8 + w)) return -1;
  }
  return 0;
}

static int do_checkpoint(void) {
  host_copy = mmap(NULL, vram_bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (host_copy == MAP_FAILED) {
    host_copy = NULL;
    return CUDA_ERROR_UNKNOWN;
  }
  if (pread(vram_fd, host_copy, vram_bytes, 0) != (ssize_t)vram_bytes) {
    munmap(host_copy, vram_bytes);
    host_copy = NULL;
    return CUDA_ERROR_UNKNOWN;
  }
  release_gpu();
  checkpoints++;
  return CUDA_SUCCESS;
}

static int do_restore(void) {
  if (take_gpu() != 0 || pwrite(vram_fd, host_copy, vram_bytes, 0) != (ssize_t)vram_bytes) {
    fprintf(stderr, "fake-cuda-workload[%d]: restore could not take the GPU back: %s\n", getpid(), strerror(errno));
    release_gpu();
    return CUDA_ERROR_UNKNOWN;
  }
  munmap(host_copy, vram_bytes);
  host_copy = NULL;
  if (verify_vram() == 0)
    verified++;
  else
    verify_failures++;
  if (pread(vram_fd, &counter, sizeof counter, 0) != sizeof counter) verify_failures++;
  restores++;
  return CUDA_SUCCESS;
}

/* The GPUs held after a restore with this map ("old=new,..."), or -1 when the map does not name every one. */
static int remap_gpus(const char *map, char out[MAX_GPUS][UUID_LEN + 1]) {
  for (int g = 0; g < ngpus; g++) {
    int found = 0;
    for (const char *p = map; p && *p;) {
      const char *eq = strchr(p, '='), *end = strchr(p, ',');
      if (!end) end = p + strlen(p);
      if (eq && eq < end && (size_t)(eq - p) == strlen(gpus[g]) && strncasecmp(p, gpus[g], (size_t)(eq - p)) == 0) {
        size_t n = (size_t)(end - eq - 1);
        if (n > UUID_LEN) return -1;
        memcpy(out[g], eq + 1, n);
        out[g][n] = 0;
        found = 1;
        break;
      }
      p = *end ? end + 1 : end;
    }
    if (!found) return -1;
  }
  return 0;
}

static const char *state_name(int s) {
  static const char *names[] = {"running", "locked", "checkpointed", "failed"};
  return s >= 0 && s <= 3 ? names[s] : "unknown";
}

static void write_status(void) {
  char tmp[300], body[1280], list[MAX_GPUS * (UUID_LEN + 3) + 1] = "";
  for (int g = 0; g < ngpus; g++) {
    size_t at = strlen(list);
    snprintf(list + at, sizeof list - at, "%s\"%s\"", g ? "," : "", gpus[g]);
  }
  snprintf(tmp, sizeof tmp, "%s.tmp", status_path);
  int n = snprintf(body, sizeof body,
                   "{\"pid\":%d,\"state\":\"%s\",\"counter\":%llu,\"mib\":%zu,\"ring\":%s,\"device\":%s,"
                   "\"verified\":%u,\"verifyFailures\":%u,\"checkpoints\":%u,\"restores\":%u,\"lastDevicePairs\":%u,"
                   "\"served\":%lu,\"accepted\":%u,\"closed\":%u,\"open\":%u,\"traits\":\"%s\",\"traitChecks\":%u,"
                   "\"gpus\":[%s]}\n",
                   ns_pid, state_name(state), (unsigned long long)counter, vram_bytes >> 20,
                   ring_map ? "true" : "false", dev_fd >= 0 ? "true" : "false", verified, verify_failures,
                   checkpoints, restores, last_pairs, serve_stats()->served, serve_stats()->accepted,
                   serve_stats()->closed, serve_stats()->open, trait_state, trait_checks, list);
  int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return;
  ssize_t w = write(fd, body, (size_t)n);
  close(fd);
  if (w == n) rename(tmp, status_path);
}

/* The rule for `op` in the fault file, if any. Counts reset when the file's content changes. */
struct rule {
  char mode[16];
  long arg;
};
static char last_faults[1024];
static unsigned fired[32];

static int find_fault(const char *op, struct rule *out) {
  if (!fault_file) return 0;
  char path[256], content[1024];
  const char *pp = strstr(fault_file, "%p");
  if (pp)
    snprintf(path, sizeof path, "%.*s%d%s", (int)(pp - fault_file), fault_file, ns_pid, pp + 2);
  else
    snprintf(path, sizeof path, "%s", fault_file);
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return 0;
  ssize_t n = read(fd, content, sizeof content - 1);
  close(fd);
  if (n <= 0) return 0;
  content[n] = 0;
  if (strcmp(content, last_faults) != 0) {
    memcpy(last_faults, content, (size_t)n + 1);
    memset(fired, 0, sizeof fired);
  }
  int idx = 0;
  for (char *save = NULL, *line = strtok_r(content, "\n", &save); line && idx < 32;
       line = strtok_r(NULL, "\n", &save), idx++) {
    char rop[16], mode[16];
    long arg = -1;
    if (sscanf(line, "%15s %15s %ld", rop, mode, &arg) < 2 || strcmp(rop, op) != 0) continue;
    if (strcmp(mode, "delay") != 0 && arg >= 0 && fired[idx] >= (unsigned long)arg) continue;
    fired[idx]++;
    snprintf(out->mode, sizeof out->mode, "%s", mode);
    out->arg = arg;
    return 1;
  }
  return 0;
}

#define MAX_HUNG 16
static int hung[MAX_HUNG];

/* Returns -1 when the request must stay unanswered (hang), else the code; *value gets the answer. */
static int handle(const char *op, unsigned arg, const char *text, int *value) {
  struct rule r;
  if (find_fault(op, &r)) {
    if (strcmp(r.mode, "hang") == 0) return -1;
    if (strcmp(r.mode, "fail") == 0) return CUDA_ERROR_UNKNOWN;
    if (strcmp(r.mode, "failed") == 0) {
      state = ST_FAILED;
      return CUDA_ERROR_UNKNOWN;
    }
    if (strcmp(r.mode, "delay") == 0 && r.arg > 0) usleep((useconds_t)r.arg * 1000);
  }
  *value = 0;
  if (strcmp(op, "state") == 0) {
    *value = state;
    return CUDA_SUCCESS;
  }
  if (strcmp(op, "tid") == 0) {
    *value = (int)syscall(SYS_gettid);
    return CUDA_SUCCESS;
  }
  if (strcmp(op, "lock") == 0) {
    if (state != ST_RUNNING) return CUDA_ERROR_ILLEGAL_STATE;
    state = ST_LOCKED;
    return CUDA_SUCCESS;
  }
  if (strcmp(op, "checkpoint") == 0) {
    if (state != ST_LOCKED) return CUDA_ERROR_ILLEGAL_STATE;
    int rc = do_checkpoint();
    if (rc == CUDA_SUCCESS) state = ST_CHECKPOINTED;
    return rc;
  }
  if (strcmp(op, "restore") == 0) {
    if (state != ST_CHECKPOINTED) return CUDA_ERROR_ILLEGAL_STATE;
    char moved[MAX_GPUS][UUID_LEN + 1];
    int remap = arg > 0 && ngpus > 0;
    if (remap && remap_gpus(text, moved) != 0) return CUDA_ERROR_INVALID_VALUE;
    last_pairs = arg;
    int rc = do_restore();
    if (rc == CUDA_SUCCESS) {
      state = ST_LOCKED;
      if (remap) memcpy(gpus, moved, sizeof gpus);
    }
    return rc;
  }
  if (strcmp(op, "unlock") == 0) {
    if (state != ST_LOCKED) return CUDA_ERROR_ILLEGAL_STATE;
    state = ST_RUNNING;
    return CUDA_SUCCESS;
  }
  return CUDA_ERROR_INVALID_VALUE;
}

static void serve_one(int lfd) {
  int c = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
  if (c < 0) return;
  struct timeval tv = {.tv_sec = 1};
  setsockopt(c, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  char req[FAKE_REQ_MAX];
  /* A signal (a stop and continue from a test, a cgroup freeze and thaw) interrupts this read even without a
   * handler, SO_RCVTIMEO sockets being never restarted (signal(7)); the driver does not drop a call for that. */
  ssize_t n;
  do n = read(c, req, sizeof req - 1);
  while (n < 0 && errno == EINTR && !stop);
  if (n <= 0) {
    fake_debug("workload", "read %zd: %s", n, n < 0 ? strerror(errno) : "EOF");
    close(c);
    return;
  }
  req[n] = 0;
  char op[16], text[FAKE_REQ_MAX] = "";
  unsigned arg = 0;
  if (sscanf(req, "%15s %u %1023s", op, &arg, text) < 1) {
    close(c);
    return;
  }
  /* A caller that gave up (lock timeout while we were stopped) must not find the process locked later. */
  struct pollfd p = {.fd = c, .events = POLLRDHUP};
  if (poll(&p, 1, 0) == 1 && (p.revents & (POLLRDHUP | POLLHUP))) {
    fake_debug("workload", "%s: caller gone (revents %#x)", op, p.revents);
    close(c);
    return;
  }
  int value = 0;
  int code = handle(op, arg, text, &value);
  if (code < 0) {
    for (int i = 0; i < MAX_HUNG; i++)
      if (hung[i] < 0) {
        hung[i] = c;
        return;
      }
    close(c);
    return;
  }
  char ans[32];
  int len = snprintf(ans, sizeof ans, "%d %d\n", code, value);
  if (write(c, ans, (size_t)len) != len) { /* the caller left: nothing to tell */
  }
  close(c);
  write_status();
}

/* y = tanh(W x), W the INFER_DIM x INFER_DIM words after the counter, read from "VRAM" for every request. */
static int infer(const double *x, double *y) {
  static uint64_t w[INFER_DIM * INFER_DIM];
  if (state != ST_RUNNING || vram_fd < 0) return -1;
  if (pread(vram_fd, w, sizeof w, 8) != (ssize_t)sizeof w) return -1;
  for (int i = 0; i < INFER_DIM; i++) {
    double acc = 0;
    for (int j = 0; j < INFER_DIM; j++) acc += ((double)(w[i * INFER_DIM + j] >> 11) / 9007199254740992.0 * 2 - 1) * x[j];
    y[i] = tanh(acc / 8);
  }
  return 0;
}

static void on_signal(int sig) {
  (void)sig;
  stop = 1;
}

static int worker(void) {
  ns_pid = getpid();
  for (int i = 0; i < MAX_HUNG; i++) hung[i] = -1;
  snprintf(status_path, sizeof status_path, "%s/%d.json", dir, ns_pid);
  if (take_gpu() != 0) {
    if (!device_path())
      fprintf(stderr, "fake-cuda-workload: no /dev/nvidiactl here; give the fake device with --device PATH\n");
    die("cannot take the fake GPU (device, io_uring, memfd)");
  }
  if (fill_vram() != 0) die("cannot fill the fake VRAM");
  if (library) {
    int lf = open(library, O_RDONLY | O_CLOEXEC);
    struct stat st;
    if (lf < 0 || fstat(lf, &st) != 0 || st.st_size == 0 ||
        mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, lf, 0) == MAP_FAILED)
      die("cannot map --library (a regular file, not empty)");
    close(lf);
  }

  int lfd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  struct sockaddr_un addr = {.sun_family = AF_UNIX};
  if ((size_t)snprintf(addr.sun_path, sizeof addr.sun_path, "%s/%d.sock", dir, ns_pid) >= sizeof addr.sun_path) {
    errno = ENAMETOOLONG;
    die("socket path too long; use a shorter --dir");
  }
  snprintf(sock_path, sizeof sock_path, "%s", addr.sun_path);
  unlink(sock_path);
  if (lfd < 0 || bind(lfd, (struct sockaddr *)&addr, sizeof addr) != 0 || listen(lfd, 16) != 0)
    die("cannot listen on the control socket");
  if (serve_port && serve_listen(serve_port) != 0) die("cannot listen on the --serve port");
  if (traits) {
    if (traits_init(ns_pid) != 0) die("cannot open the --traits");
    snprintf(trait_state, sizeof trait_state, "ok");
  }
  write_status();
  printf("ready pid=%d mib=%zu socket=%s\n", ns_pid, vram_bytes >> 20, sock_path);
  fflush(stdout);

  uint64_t last_status = now_ms();
  while (!stop) {
    struct pollfd fds[1 + MAX_HUNG + 1 + SERVE_MAX_CONNS];
    int nf = 0;
    fds[nf++] = (struct pollfd){.fd = lfd, .events = POLLIN};
    for (int i = 0; i < MAX_HUNG; i++)
      if (hung[i] >= 0) fds[nf++] = (struct pollfd){.fd = hung[i], .events = POLLIN | POLLRDHUP};
    int served_from = nf;
    int ns = serve_pollfds(fds + nf, 1 + SERVE_MAX_CONNS);
    nf += ns;
    int r = poll(fds, (nfds_t)nf, 20);
    if (ns) serve_events(fds + served_from, ns, infer);
    nf = served_from;
    if (r > 0) {
      for (int i = 1; i < nf; i++)
        if (fds[i].revents)
          for (int h = 0; h < MAX_HUNG; h++)
            if (hung[h] == fds[i].fd) {
              close(hung[h]);
              hung[h] = -1;
            }
      if (fds[0].revents & POLLIN) serve_one(lfd);
    }
    if (state == ST_RUNNING) {
      counter++;
      if (pwrite(vram_fd, &counter, sizeof counter, 0) != sizeof counter) die("cannot write the fake VRAM");
    }
    static uint64_t last_traits;
    if (traits && state == ST_RUNNING && now_ms() - last_traits >= 200) {
      const char *bad = traits_check();
      /* The first failure stays: a test must see it even if the trait works again later. */
      if (bad && strcmp(trait_state, "ok") == 0) snprintf(trait_state, sizeof trait_state, "%s", bad);
      trait_checks++;
      last_traits = now_ms();
    }
    if (now_ms() - last_status >= 100) {
      write_status();
      last_status = now_ms();
    }
  }
  unlink(sock_path);
  unlink(status_path);
  return 0;
}

/*
 * --undumpable: not a CUDA process, but one holding what CRIU cannot dump (a mapped io_uring ring) for good.
 * Put beside a workload in a container, it makes CRIU fail AFTER kybernate's GPU stage: the fault the
 * resume watcher must repair.
 */
static int undumpable(void) {
  struct io_uring_params p;
  memset(&p, 0, sizeof p);
  int fd = (int)syscall(__NR_io_uring_setup, 4, &p);
  if (fd < 0) return 1;
  size_t len = p.sq_off.array + p.sq_entries * sizeof(uint32_t);
  if (mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, fd, IORING_OFF_SQ_RING) == MAP_FAILED) return 1;
  printf("undumpable pid=%d\n", (int)getpid());
  fflush(stdout);
  while (!stop) pause();
  return 0;
}

/*
 * --undumpable-lock: not a CUDA process either, but holding a file lock (flock), which CRIU refuses to dump
 * without --file-locks ("Some file locks are hold by dumping tasks!") and which kybernate does not look for: the
 * way to make CRIU fail after the GPU stage now that an io_uring holder is refused before it.
 */
static int undumpable_lock(void) {
  char path[64];
  snprintf(path, sizeof path, "/dev/shm/fake-cuda-lock-%d", (int)getpid());
  int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (fd < 0 || flock(fd, LOCK_EX) != 0) return 1;
  printf("undumpable-lock pid=%d\n", (int)getpid());
  fflush(stdout);
  while (!stop) pause();
  unlink(path);
  return 0;
}

static void usage(void) {
  fprintf(stderr,
          "usage: fake-cuda-workload [--mib N] [--procs N] [--device PATH] [--dir DIR] [--fault-file PATH] [--serve PORT]\n"
          "                          [--traits N] [--gpus UUID,UUID] [--library PATH]\n"
          "       fake-cuda-workload --undumpable | --undumpable-lock\n"
          "TEST ONLY: a GPU stand-in for kybernate's test double (see docs/GPU-DOUBLE.md)\n");
  exit(64);
}

int main(int argc, char **argv) {
  int procs = 0;
  dir = getenv("FAKE_CUDA_DIR") && *getenv("FAKE_CUDA_DIR") ? getenv("FAKE_CUDA_DIR") : FAKE_CUDA_DEFAULT_DIR;
  if (argc == 2 && (strcmp(argv[1], "--undumpable") == 0 || strcmp(argv[1], "--undumpable-lock") == 0)) {
    struct sigaction quit = {.sa_handler = on_signal};
    sigaction(SIGTERM, &quit, NULL);
    return strcmp(argv[1], "--undumpable") == 0 ? undumpable() : undumpable_lock();
  }
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    const char *v = i + 1 < argc ? argv[i + 1] : NULL;
    if (!v) usage();
    if (strcmp(a, "--mib") == 0) vram_bytes = (size_t)strtoul(v, NULL, 10) << 20;
    else if (strcmp(a, "--procs") == 0) procs = atoi(v);
    else if (strcmp(a, "--device") == 0) device_opt = v;
    else if (strcmp(a, "--dir") == 0) dir = v;
    else if (strcmp(a, "--fault-file") == 0) fault_file = v;
    else if (strcmp(a, "--serve") == 0) serve_port = atoi(v);
    else if (strcmp(a, "--traits") == 0) traits = atoi(v);
    else if (strcmp(a, "--library") == 0) library = v;
    else if (strcmp(a, "--gpus") == 0) {
      for (const char *p = v; *p && ngpus < MAX_GPUS;) {
        size_t n = strcspn(p, ",");
        if (n == 0 || n > UUID_LEN) usage();
        memcpy(gpus[ngpus], p, n);
        gpus[ngpus++][n] = 0;
        p += n + (p[n] == ',');
      }
    } else usage();
    i++;
  }
  if (vram_bytes < CHUNK) vram_bytes = CHUNK;
  mkdir(dir, 0755);
  struct sigaction sa = {.sa_handler = on_signal};
  sigaction(SIGTERM, &sa, NULL);
  sigaction(SIGINT, &sa, NULL);
  signal(SIGPIPE, SIG_IGN);
  if (procs <= 0) return worker();

  /* --procs N: this parent is a helper without "CUDA" (like a launcher), its children are the workloads. */
  pid_t kids[64];
  if (procs > 64) procs = 64;
  /* Compared after PR_SET_PDEATHSIG, not with 1: in a container this parent IS pid 1. */
  pid_t parent = getpid();
  for (int k = 0; k < procs; k++) {
    kids[k] = fork();
    if (kids[k] == 0) {
      prctl(PR_SET_PDEATHSIG, SIGTERM);
      if (getppid() != parent) _exit(0);
      return worker();
    }
  }
  int status = 0, alive = procs;
  while (alive > 0) {
    pid_t p = waitpid(-1, &status, 0);
    if (p > 0) alive--;
    else if (errno == EINTR && stop) {
      for (int k = 0; k < procs; k++) kill(kids[k], SIGTERM);
      stop = 0;
    } else if (errno != EINTR) break;
  }
  return 0;
}

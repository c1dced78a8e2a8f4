/*
 * --traits: what real GPU programs hold besides the GPU, for checkpoint tests. TEST ONLY. Each check round uses
 * every one of them and says which first stopped working:
 *   udp        a UDP socket on 127.0.0.1 that sends itself a datagram
 *   unix-path  a listening unix socket at /tmp/kyb-traits-<pid>.sock and a connected pair through it
 *   unix-abs   the same on an abstract address
 *   eventfd    an eventfd written and read through epoll
 *   timerfd    a 20 ms periodic timerfd, also through epoll, that must have ticked since the last round
 *   shm        a POSIX shared memory segment (/dev/shm/kyb-traits-<pid>) holding a pattern
 *   sem        a named POSIX semaphore (/dev/shm/sem.kyb-traits-<pid>) posted and waited
 *   threads    16 threads, each of which must have counted since the last round
 */
#define _GNU_SOURCE
#include "fake-traits.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <pthread.h>
#include <semaphore.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <sys/un.h>
#include <unistd.h>

#define THREADS 16
#define SHM_WORDS 1024

static int udp = -1, path_pair[2] = {-1, -1}, abs_pair[2] = {-1, -1}, efd = -1, tfd = -1, ep = -1;
static uint64_t *shm;
static sem_t *sem;
static volatile uint64_t counts[THREADS];
static uint64_t seen[THREADS];
static char problem[96];
static struct sockaddr_in udp_addr;

static void *spin(void *arg) {
  int k = (int)(intptr_t)arg;
  for (;;) {
    counts[k]++;
    usleep(5000);
  }
  return NULL;
}

/* A listening unix socket at `addr` and a connected pair through it: [0] the client, [1] the accepted end. */
static int unix_pair(struct sockaddr_un *addr, socklen_t len, int pair[2]) {
  int l = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (l < 0 || bind(l, (struct sockaddr *)addr, len) != 0 || listen(l, 4) != 0) return -1;
  pair[0] = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (pair[0] < 0 || connect(pair[0], (struct sockaddr *)addr, len) != 0) return -1;
  pair[1] = accept4(l, NULL, NULL, SOCK_CLOEXEC);
  /* The listener stays open: a listening unix socket is one of the traits. */
  return pair[1] < 0 ? -1 : 0;
}

int traits_init(int ns_pid) {
  udp = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  udp_addr = (struct sockaddr_in){.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  socklen_t alen = sizeof udp_addr;
  if (udp < 0 || bind(udp, (struct sockaddr *)&udp_addr, sizeof udp_addr) != 0 ||
      getsockname(udp, (struct sockaddr *)&udp_addr, &alen) != 0)
    return -1;
  struct sockaddr_un p = {.sun_family = AF_UNIX};
  snprintf(p.sun_path, sizeof p.sun_path, "/tmp/kyb-traits-%d.sock", ns_pid);
  unlink(p.sun_path);
  if (unix_pair(&p, sizeof p, path_pair) != 0) return -1;
  struct sockaddr_un a = {.sun_family = AF_UNIX};
  int n = snprintf(a.sun_path + 1, sizeof a.sun_path - 1, "kyb-traits-%d", ns_pid);
  if (unix_pair(&a, (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 + n), abs_pair) != 0) return -1;
  efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  tfd = timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC | TFD_NONBLOCK);
  struct itimerspec every = {.it_interval = {0, 20000000}, .it_value = {0, 20000000}};
  ep = epoll_create1(EPOLL_CLOEXEC);
  if (efd < 0 || tfd < 0 || ep < 0 || timerfd_settime(tfd, 0, &every, NULL) != 0) return -1;
  struct epoll_event ev = {.events = EPOLLIN, .data.fd = efd};
  if (epoll_ctl(ep, EPOLL_CTL_ADD, efd, &ev) != 0) return -1;
  ev.data.fd = tfd;
  if (epoll_ctl(ep, EPOLL_CTL_ADD, tfd, &ev) != 0) return -1;
  char name[64];
  snprintf(name, sizeof name, "/kyb-traits-%d", ns_pid);
  int sfd = shm_open(name, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (sfd < 0 || ftruncate(sfd, SHM_WORDS * 8) != 0) return -1;
  shm = mmap(NULL, SHM_WORDS * 8, PROT_READ | PROT_WRITE, MAP_SHARED, sfd, 0);
  close(sfd);
  if (shm == MAP_FAILED) return -1;
  for (int i = 0; i < SHM_WORDS; i++) shm[i] = (uint64_t)i * 2654435761u;
  sem = sem_open(name, O_CREAT, 0600, 0);
  if (sem == SEM_FAILED) return -1;
  for (int k = 0; k < THREADS; k++) {
    pthread_t t;
    if (pthread_create(&t, NULL, spin, (void *)(intptr_t)k) != 0) return -1;
    pthread_detach(t);
  }
  return 0;
}

static int fail(const char *what) {
  snprintf(problem, sizeof problem, "%s: %s", what, errno ? strerror(errno) : "wrong data");
  return -1;
}

static int echo(int pair[2], const char *what) {
  char out[8] = "ping", in[8] = {0};
  errno = 0;
  if (send(pair[0], out, 4, MSG_NOSIGNAL) != 4 || recv(pair[1], in, sizeof in, MSG_DONTWAIT) != 4 || memcmp(in, out, 4))
    return fail(what);
  return 0;
}

const char *traits_check(void) {
  char in[8];
  errno = 0;
  if (sendto(udp, "dgram", 5, 0, (struct sockaddr *)&udp_addr, sizeof udp_addr) != 5) return fail("udp"), problem;
  usleep(1000);
  if (recv(udp, in, sizeof in, 0) != 5 || memcmp(in, "dgram", 5)) return fail("udp"), problem;
  if (echo(path_pair, "unix-path") || echo(abs_pair, "unix-abs")) return problem;
  uint64_t one = 1, got = 0;
  if (write(efd, &one, 8) != 8) return fail("eventfd"), problem;
  int saw_event = 0, saw_timer = 0;
  for (int round = 0; round < 10 && !(saw_event && saw_timer); round++) {
    struct epoll_event evs[2];
    int n = epoll_wait(ep, evs, 2, 30);
    for (int i = 0; i < n; i++) {
      if (evs[i].data.fd == efd && read(efd, &got, 8) == 8) saw_event = 1;
      if (evs[i].data.fd == tfd && read(tfd, &got, 8) == 8 && got > 0) saw_timer = 1;
    }
  }
  errno = 0;
  if (!saw_event) return fail("eventfd"), problem;
  if (!saw_timer) return fail("timerfd"), problem;
  for (int i = 0; i < SHM_WORDS; i++)
    if (shm[i] != (uint64_t)i * 2654435761u) return fail("shm"), problem;
  if (sem_post(sem) != 0 || sem_trywait(sem) != 0) return fail("sem"), problem;
  for (int k = 0; k < THREADS; k++) {
    if (counts[k] == seen[k]) return fail("threads"), problem;
    seen[k] = counts[k];
  }
  return NULL;
}

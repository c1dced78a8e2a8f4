# Shared paths and process helpers of the test node; sourced by up.sh, down.sh and restart-containerd.sh.
# Everything the node owns lives under $TN (the repo's .testnode/) or $RUN, so it never meets a system containerd.

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
# Resolved: a git worktree reaches the one shared node through a .testnode symlink, and pid checks compare
# /proc/PID/exe (always resolved) with paths below $TN. KYBERNATE_TESTNODE_DIR names another node's folder
# (node B: test/node/up-b.sh).
TN=${KYBERNATE_TESTNODE_DIR:-$(readlink -f "$ROOT/.testnode")}
# The second test node (a second containerd on this machine, sharing this node's prefix and registry).
NODE_B_DIR=${KYBERNATE_TESTNODE_B_DIR:-$ROOT/.testnode-b}
NODE_B_RUN=${KYBERNATE_TESTNODE_B_RUN:-/run/kybernate-testnode-b}
# A prefix prepared elsewhere (e.g. a GPU host without a package registry: test/e2e/gpu-e2e.sh) can be named
# instead; up.sh then installs nothing and only checks that the binaries are there.
PREFIX=${KYBERNATE_TESTNODE_PREFIX:-$TN/prefix}
RUN=${KYBERNATE_TESTNODE_RUN:-/run/kybernate-testnode}
PORT=${KYBERNATE_TESTNODE_PORT:-5555}
NS=k8s.io
CD_ROOT=$TN/root
CD_STATE=$RUN/state
CD_SOCK=$RUN/containerd.sock
NRI_SOCK=$RUN/nri.sock
RUNC_ROOT=$RUN/runc
LOGDIR=$TN/logs
CONFIG=$TN/containerd.toml
REG_CONFIG=$TN/registry.yml
REG_STORE=$TN/registry
IMAGE_REF=localhost:$PORT/kybernate/busybox:1
PAUSE_REF=localhost:$PORT/kybernate/pause:1
# containerd hard-codes its shims' socket directory below /run/containerd (containerd#12444); this marker
# remembers that up.sh created that directory, so down.sh may remove it again.
RUN_CONTAINERD_MARK=$TN/created-run-containerd
# runc puts CRI containers in cgroups below "k8s.io" (the namespace) in every hierarchy; this file lists
# the k8s.io cgroup dirs that did not exist before the node started, which down.sh removes again.
CGROUP_MARK=$TN/created-cgroups

say() { printf '[testnode] %s\n' "$*" >&2; }
die() { printf '[testnode] ERROR: %s\n' "$*" >&2; exit 1; }

# A recorded pid counts only while it still runs the expected binary: pids get reused.
pid_of() { # name binary -> prints the live pid or nothing
  local f=$TN/$1.pid pid
  [ -f "$f" ] || return 0
  pid=$(cat "$f")
  [ -n "$pid" ] && [ "$(readlink "/proc/$pid/exe" 2>/dev/null)" = "$2" ] && echo "$pid"
  return 0
}

stop_pid() { # pid [seconds]: SIGTERM, then SIGKILL when it outlives the grace period
  local pid=$1 grace=${2:-10} i
  kill -TERM "$pid" 2>/dev/null || return 0
  for ((i = 0; i < grace * 10; i++)); do
    [ -d "/proc/$pid" ] || return 0
    sleep 0.1
  done
  say "pid $pid ignored SIGTERM for ${grace}s, sending SIGKILL"
  kill -KILL "$pid" 2>/dev/null || true
  for ((i = 0; i < 50; i++)); do [ -d "/proc/$pid" ] || return 0; sleep 0.1; done
}

# up, down and restart serialize on this lock: test runs and engineers share one node.
lock_node() {
  mkdir -p "$TN"
  # Daemons started while holding it must not inherit fd 9 (spawn_daemon closes it), or they would hold it forever.
  exec 9>"$TN/lock"
  flock -w 300 9 || die "another test node script holds $TN/lock for over 5 min; check ps for up.sh/down.sh"
}

# Starts a daemon in its own session with no descriptor but its stdio (redirect them on the call). A lock held by
# whoever runs this script, lock_node's fd 9 or the fd of an outer `flock FILE bash up.sh` (usually 3), would
# otherwise live on in the daemon, and nobody would get that lock again while the daemon runs.
spawn_daemon() { # command... ; $! is the daemon's pid
  (
    for fd in /proc/$BASHPID/fd/*; do
      fd=${fd##*/}
      if [ "$fd" -gt 2 ]; then eval "exec $fd>&-"; fi
    done
    exec setsid "$@"
  ) &
}

ctr_() { "$PREFIX/bin/ctr" --address "$CD_SOCK" "$@"; }

containerd_pid() { pid_of containerd "$PREFIX/bin/containerd"; }
registry_pid() { pid_of registry "$PREFIX/bin/docker-registry"; }

start_containerd() {
  mkdir -p "$RUN" "$LOGDIR" "$CD_ROOT"
  chmod 0711 "$RUN"
  if [ ! -e /run/containerd ]; then
    touch "$RUN_CONTAINERD_MARK"
  fi
  local h
  for h in /sys/fs/cgroup /sys/fs/cgroup/*/; do
    h=${h%/}
    [ -f "$h/cgroup.procs" ] && [ ! -e "$h/$NS" ] && ! grep -qxF "$h/$NS" "$CGROUP_MARK" 2>/dev/null && echo "$h/$NS" >>"$CGROUP_MARK"
  done
  # containerd looks up containerd-shim-runc-v2, runc and criu on PATH: the prefix's come first.
  PATH="$PREFIX/bin:$PATH" spawn_daemon "$PREFIX/bin/containerd" --config "$CONFIG" \
    >>"$LOGDIR/containerd.log" 2>&1 </dev/null
  echo $! >"$TN/containerd.pid"
  wait_containerd
}

wait_containerd() {
  local pid i
  pid=$(cat "$TN/containerd.pid")
  for ((i = 0; i < 300; i++)); do
    if [ ! -d "/proc/$pid" ]; then
      tail -n 30 "$LOGDIR/containerd.log" >&2
      die "containerd (pid $pid) exited while starting; its log is $LOGDIR/containerd.log (tail above)"
    fi
    if [ -S "$CD_SOCK" ] && node "$ROOT/test/node/cri-probe.mjs" "$CD_SOCK" version >/dev/null 2>&1; then
      return 0
    fi
    sleep 0.1
  done
  die "containerd (pid $pid) did not answer CRI on $CD_SOCK within 30 s; see $LOGDIR/containerd.log"
}

stop_containerd() {
  local pid
  pid=$(containerd_pid)
  if [ -n "$pid" ]; then
    stop_pid "$pid" 15
  fi
  rm -f "$TN/containerd.pid"
}

# Plain bash HTTP: a node process takes most of a second to start here, and up.sh asks several times.
registry_http_status() { # method path [accept] -> the registry's HTTP status code, or nothing when unreachable
  local status=""
  { exec 8<>"/dev/tcp/127.0.0.1/$PORT"; } 2>/dev/null || return 0
  printf '%s %s HTTP/1.0\r\nHost: 127.0.0.1:%s\r\nAccept: %s\r\n\r\n' "$1" "$2" "$PORT" "${3:-*/*}" >&8
  read -r -t 5 _ status _ <&8 || true
  exec 8<&-
  echo "$status"
}

start_registry() {
  mkdir -p "$REG_STORE" "$LOGDIR"
  if [ -n "$(registry_http_status GET /v2/)" ]; then
    die "something else already serves 127.0.0.1:$PORT; stop it or pick another port with KYBERNATE_TESTNODE_PORT=..."
  fi
  spawn_daemon "$PREFIX/bin/docker-registry" serve "$REG_CONFIG" >>"$LOGDIR/registry.log" 2>&1 </dev/null
  echo $! >"$TN/registry.pid"
  local pid=$! i
  for ((i = 0; i < 100; i++)); do
    [ -d "/proc/$pid" ] || { tail -n 20 "$LOGDIR/registry.log" >&2; die "docker-registry exited while starting; see $LOGDIR/registry.log"; }
    [ "$(registry_http_status GET /v2/)" = 200 ] && return 0
    sleep 0.1
  done
  die "docker-registry (pid $pid) did not answer on 127.0.0.1:$PORT within 10 s; see $LOGDIR/registry.log"
}

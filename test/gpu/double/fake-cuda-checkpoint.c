/*
 * Fake cuda-checkpoint for the GPU test double. TEST ONLY, never install it as NVIDIA's tool.
 * Same flags, output and error texts as NVIDIA's binary (driver 580, see FACTS.md §3); drives a
 * fake-cuda-workload through fake-ctl.c.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fake-cuda.h"

static const char *state_names[] = {"running", "locked", "checkpointed", "failed"};

static int usage(FILE *to, int rc) {
  fprintf(to,
          "CUDA checkpoint and restore utility (kybernate test double, NOT NVIDIA's tool).\n"
          "Usage: cuda-checkpoint [OPTIONS]\n"
          "  --get-state --pid <pid>\n"
          "  --action <lock|checkpoint|restore|unlock> --pid <pid> [--timeout <ms>] [--device-map <old=new,...>]\n"
          "  --get-restore-tid --pid <pid>\n"
          "  --toggle --pid <pid>\n"
          "  --help\n");
  return rc;
}

static const char *msg(int code) {
  const char *s = fake_error_string(code);
  return s ? s : "unknown error";
}

static int action(const char *act, int pid, unsigned timeout, unsigned pairs, const char *map) {
  int rc;
  if (strcmp(act, "lock") == 0)
    rc = fake_call(pid, "lock", timeout, timeout, NULL);
  else if (strcmp(act, "restore") == 0)
    rc = fake_call_text(pid, "restore", pairs, map, 0, NULL);
  else if (strcmp(act, "checkpoint") == 0 || strcmp(act, "unlock") == 0)
    rc = fake_call(pid, act, 0, 0, NULL);
  else {
    fprintf(stderr, "Invalid action: %s\n", act);
    return 1;
  }
  if (rc != CUDA_SUCCESS) {
    fprintf(stderr, "Could not %s on process ID %d: \"%s\"\n", act, pid, msg(rc));
    return 1;
  }
  return 0;
}

int main(int argc, char **argv) {
  const char *mode = NULL, *act = NULL, *map = NULL;
  int pid = -1;
  unsigned timeout = 0;
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    const char *v = i + 1 < argc ? argv[i + 1] : NULL;
    if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) return usage(stdout, 0);
    if (strcmp(a, "--get-state") == 0 || strcmp(a, "--get-restore-tid") == 0 || strcmp(a, "--toggle") == 0) {
      mode = a;
      continue;
    }
    if (!v) return usage(stderr, 1);
    if (strcmp(a, "--pid") == 0 || strcmp(a, "-p") == 0) pid = atoi(v);
    else if (strcmp(a, "--action") == 0) mode = "--action", act = v;
    else if (strcmp(a, "--timeout") == 0) timeout = (unsigned)strtoul(v, NULL, 10);
    else if (strcmp(a, "--device-map") == 0) map = v;
    else return usage(stderr, 1);
    i++;
  }
  if (!mode || pid <= 0) return usage(stderr, 1);
  unsigned pairs = 0;
  if (map && *map) {
    pairs = 1;
    for (const char *c = map; *c; c++) pairs += *c == ',';
  }
  if (strcmp(mode, "--action") == 0) return action(act, pid, timeout, pairs, map);

  int value = 0;
  if (strcmp(mode, "--get-state") == 0) {
    int rc = fake_call(pid, "state", 0, 0, &value);
    if (rc != CUDA_SUCCESS) {
      fprintf(stderr, "Error getting process state for process ID %d: \"%s\"\n", pid, msg(rc));
      return 1;
    }
    printf("%s\n", value >= 0 && value <= 3 ? state_names[value] : "unknown");
    return 0;
  }
  if (strcmp(mode, "--get-restore-tid") == 0) {
    int rc = fake_call(pid, "tid", 0, 0, &value);
    if (rc != CUDA_SUCCESS) {
      fprintf(stderr, "Could not find restore thread for process ID %d: \"%s\"\n", pid, msg(rc));
      return 1;
    }
    printf("%d\n", value);
    return 0;
  }
  /* --toggle: running -> locked+checkpointed, checkpointed -> restored+running. */
  int rc = fake_call(pid, "state", 0, 0, &value);
  if (rc != CUDA_SUCCESS) {
    fprintf(stderr, "Error getting process state for process ID %d: \"%s\"\n", pid, msg(rc));
    return 1;
  }
  if (value == ST_RUNNING) return action("lock", pid, timeout, 0, NULL) || action("checkpoint", pid, 0, 0, NULL);
  if (value == ST_CHECKPOINTED) return action("restore", pid, 0, pairs, map) || action("unlock", pid, 0, 0, NULL);
  fprintf(stderr, "Could not toggle on process ID %d: \"%s\"\n", pid, msg(CUDA_ERROR_ILLEGAL_STATE));
  return 1;
}

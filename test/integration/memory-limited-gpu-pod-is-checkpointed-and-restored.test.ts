/**
 * A GPU pod whose memory limits are below what its checkpoint stages (the kubelet's pod cgroup and the
 * container's limit, as real GPU pods set 32 GiB of RAM for 80 GB of VRAM): without kybernate's raise the
 * staged copy OOM-kills the workload mid-checkpoint. kybernate raises the container's and the pod's limits for
 * the GPU stage and puts them back; the restore into another such pod does the same from pre-restore until
 * post-resume; afterwards every limit reads as it was.
 */
import assert from "node:assert/strict";
import { existsSync, mkdirSync, readdirSync, rmdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { initPidOf } from "../../src/cli/resolve.js";
import { ProcessCgroups } from "../../src/host/cgroup.js";
import { GpuNode } from "../support/gpu-node.js";

const MiB = 1024 * 1024;
/** The workload's "VRAM" (a memfd, charged to its cgroup like the driver's staged copy will be). */
const VRAM_MIB = 64;
const CONTAINER_LIMIT = 96 * MiB;
const POD_LIMIT = 128 * MiB;
// Below /k8s.io, where the test node's containers live: down.sh removes what a failed run leaves there.
const V1_MEMORY = "/sys/fs/cgroup/memory";
const v1 = existsSync(join(V1_MEMORY, "cgroup.procs"));
const memoryRoot = v1 ? V1_MEMORY : "/sys/fs/cgroup";
const limitFile = v1 ? "memory.limit_in_bytes" : "memory.max";

const f = new GpuNode();
const podCgroups: string[] = [];
before(async () => {
  await f.setUp();
  // A fixed estimate: the double has no nvidia-smi to say what a checkpoint stages.
  await f.startDaemon(undefined, ["--vram-estimate-mib", String(VRAM_MIB)]);
});
after(async () => {
  await f.tearDown();
  // Pods are gone: their cgroups (in every v1 hierarchy runc made them in) are empty now.
  for (const rel of podCgroups)
    for (const hierarchy of readdirSync("/sys/fs/cgroup")) {
      const dir = join("/sys/fs/cgroup", hierarchy, rel);
      // Still in use when KYBERNATE_TEST_KEEP kept the pods: down.sh removes it then.
      if (existsSync(dir)) tryRmdir(dir);
    }
  if (!v1)
    for (const rel of podCgroups) if (existsSync(join(memoryRoot, rel))) tryRmdir(join(memoryRoot, rel));
});

function tryRmdir(dir: string): void {
  try {
    rmdirSync(dir);
  } catch {}
}

/** A pod cgroup with a memory limit, as the kubelet makes one for a pod with limits. */
function podCgroup(name: string): string {
  const rel = `/k8s.io/kybtest-${name}-${process.pid}`;
  const dir = join(memoryRoot, rel);
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, limitFile), String(POD_LIMIT));
  if (v1 && existsSync(join(dir, "memory.memsw.limit_in_bytes")))
    writeFileSync(join(dir, "memory.memsw.limit_in_bytes"), String(POD_LIMIT));
  podCgroups.push(rel);
  return rel;
}

const limitedPod = (name: string) => f.newPod(name, { cgroupParent: podCgroup(name) });

async function limitedGpuContainer(name: string) {
  const pod = await limitedPod(name);
  const id = await f.gpuContainer(pod, { mib: VRAM_MIB, memoryLimitBytes: CONTAINER_LIMIT });
  return { pod, id };
}

/** The container's memory cgroup and its pod's: limit and usage of each, from the container's init. */
async function limits(id: string): Promise<Array<{ dir: string; limit: number; usage: number }>> {
  const levels = await (await ProcessCgroups.ofPid(await initPidOf(f.cri, id))).memoryLevels();
  return levels.slice(0, 2).map((l) => ({
    dir: l.dir,
    limit: l.limits.find((x) => x.file === limitFile)?.bytes ?? Number.POSITIVE_INFINITY,
    usage: l.usage,
  }));
}

async function limitsBecome(id: string, want: number[], what: string): Promise<void> {
  const until = Date.now() + 15_000;
  let now: number[] = [];
  while (Date.now() < until) {
    now = (await limits(id)).map((l) => l.limit);
    if (now.join() === want.join()) return;
    await sleep(100);
  }
  assert.fail(
    `${what}: limits ${now.map((b) => b / MiB).join(", ")} MiB, want ${want.map((b) => b / MiB).join(", ")} MiB`,
  );
}

describe("a memory-limited GPU pod (limit below its staged VRAM)", () => {
  test("checkpointed and restored into another such pod: the workload survives both, every limit back as it was", async () => {
    const { id } = await limitedGpuContainer("memlimit");
    const [container, pod] = await limits(id);
    assert.ok(container && pod, "container and pod cgroups");
    assert.equal(container.limit, CONTAINER_LIMIT);
    assert.equal(pod.limit, POD_LIMIT);
    assert.ok(
      container.usage + VRAM_MIB * MiB > CONTAINER_LIMIT,
      "the staged copy would not fit under the container's limit",
    );
    assert.ok(pod.usage + VRAM_MIB * MiB > POD_LIMIT, "nor under the pod's");

    const mark = f.kyb?.logs.length ?? 0;
    await f.checkpointOrShowLogs(id, "memlimit");
    await f.assertRunningOnGpu(id, { checkpoints: 1, restores: 1, verified: 1, verifyFailures: 0 });
    const raised = await f.kyb?.waitForLog(
      (l) => l.containerId === id && l.msg === "memory limits raised for the GPU stage",
      { since: mark },
    );
    const dirs = ((raised?.raised ?? []) as Array<{ dir: string }>).map((r) => r.dir);
    assert.ok(
      dirs.includes(container.dir) && dirs.includes(pod.dir),
      `raised: ${JSON.stringify(raised?.raised)}`,
    );
    await limitsBecome(id, [CONTAINER_LIMIT, POD_LIMIT], "after the checkpoint");

    const target = await limitedPod("memlimit-restored");
    const restoredId = await f.cri.restoreFromArchive(
      target.podId,
      target.config,
      f.archivePath("memlimit"),
      "cuda",
      {
        mounts: f.gpuMounts(),
        memoryLimitBytes: CONTAINER_LIMIT,
      },
    );
    const restoreMark = f.kyb?.logs.length ?? 0;
    await f.cri.startContainer(restoredId);
    await f.assertRunningOnGpu(restoredId, { checkpoints: 1, restores: 1, verified: 1, verifyFailures: 0 });
    await f.kyb?.waitForLog(
      (l) => l.containerId === restoredId && l.msg === "memory limits raised for the GPU stage",
      {
        since: restoreMark,
      },
    );
    await limitsBecome(restoredId, [CONTAINER_LIMIT, POD_LIMIT], "after the restore");
    await limitsBecome(id, [CONTAINER_LIMIT, POD_LIMIT], "the original, still");
    const records = join(f.kyb?.stateDir ?? "", "memory-limits");
    const until = Date.now() + 5000;
    while (readdirSync(records).length > 0 && Date.now() < until) await sleep(100);
    assert.deepEqual(readdirSync(records), [], "no limit left journalled");
  });
});

/**
 * Faults around a GPU container's checkpoint on the real containerd + runc + CRIU test node, each ending with
 * nothing lost: the workload runs on its GPU with its VRAM verified (or is gone because it exited), containerd
 * agrees it runs (exec works), the journal is empty, the cause is named — and a non-GPU container's creation is
 * never held up meanwhile.
 */
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { mkdirSync, readdirSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { after, before, describe, test } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { initPidOf } from "../../src/cli/resolve.js";
import { workloadStatusOnHost } from "../support/gpu-double-container.js";
import { GpuNode, type Pod } from "../support/gpu-node.js";
import type { KybernateProcess } from "../support/kybernate-process.js";
import { restartContainerd } from "../support/testnode.js";

const f = new GpuNode();
before(() => f.setUp());
after(() => f.tearDown());

/** The daemon's journal: empty once every GPU operation has ended. */
async function journalEmpties(daemon: KybernateProcess, ms = 10_000): Promise<void> {
  const dir = join(daemon.stateDir, "journal");
  mkdirSync(dir, { recursive: true });
  const until = Date.now() + ms;
  while (readdirSync(dir).length > 0 && Date.now() < until) await sleep(100);
  assert.deepEqual(readdirSync(dir), [], "journal entries left");
}

/** The host pids of a container's CUDA processes, from the daemon's log of its GPU stage. */
async function cudaPidsOf(daemon: KybernateProcess, since: number): Promise<number[]> {
  const line = await daemon.waitForLog((l) => l.msg === "gpu checkpoint starting", { since });
  return line.pids as number[];
}

/** CreateContainer + StartContainer of `n` non-GPU containers: each duration in ms. */
async function createPlainContainers(pod: Pod, n: number, prefix: string): Promise<number[]> {
  const ms: number[] = [];
  for (let i = 0; i < n; i++) {
    const t0 = performance.now();
    await f.plainContainer(pod, `${prefix}-${i}`);
    ms.push(performance.now() - t0);
  }
  return ms;
}

const p99 = (values: number[]): number => {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.ceil(sorted.length * 0.99) - 1)] ?? 0;
};

describe("faults around a GPU checkpoint end with nothing lost", () => {
  test("the disk fills while CRIU writes: the checkpoint fails, naming CRIU's error; the workload runs on its GPU", async () => {
    const daemon = await f.ensureDaemon();
    const pod = await f.newPod("gpu-disk-full");
    const id = await f.gpuContainer(pod);
    // containerd makes CRIU's image directory in its temp dir: a 4 MiB tmpfs there cannot take 32 MiB of VRAM.
    const temp = join(dirname(f.node.root), "tmp");
    execFileSync("mount", ["-t", "tmpfs", "-o", "size=4m", "kyb-full", temp]);
    try {
      await assert.rejects(f.cri.checkpoint(id, f.archivePath("disk-full"), 60), /criu failed/i);
    } finally {
      execFileSync("umount", [temp]);
    }
    await f.assertRunningOnGpu(id, { checkpoints: 1, restores: 1, verifyFailures: 0 });
    await f.assertExecWorks(id);
    await journalEmpties(daemon);
    const failed = await daemon.waitForLog(
      (l) => l.containerId === id && l.msg === "CRIU failed after the GPU stage",
    );
    assert.match(String(failed.criuError), /No space left on device|ENOSPC|write/i, JSON.stringify(failed));
  });

  test("the container exits during the GPU stage: the checkpoint fails, nothing is left behind, the next container is checkpointed", async () => {
    const daemon = await f.ensureDaemon();
    const faults = f.faultDir();
    const pod = await f.newPod("gpu-exits");
    const id = await f.gpuContainer(pod, { faultDir: faults });
    writeFileSync(join(faults, "1"), "checkpoint delay 1500\n");
    const mark = daemon.logs.length;
    const checkpoint = f.cri.checkpoint(id, f.archivePath("exits"), 60);
    const [pid] = await cudaPidsOf(daemon, mark);
    process.kill(pid ?? 0, "SIGKILL");
    await assert.rejects(checkpoint);
    const until = Date.now() + 10_000;
    while ((await f.cri.containerStatus(id)).status?.state !== "CONTAINER_EXITED" && Date.now() < until)
      await sleep(100);
    assert.equal((await f.cri.containerStatus(id)).status?.state, "CONTAINER_EXITED");
    await journalEmpties(daemon);
    assert.ok(
      daemon.logs.some(
        (l) => l.containerId === id && l.msg === "GPU stage failed" && /process \d+/.test(String(l.error)),
      ),
      "the failure names the process",
    );
    const next = await f.gpuContainer(await f.newPod("gpu-after-exit"));
    await f.checkpointOrShowLogs(next, "after-exit");
    await f.assertRunningOnGpu(next, { checkpoints: 1, restores: 1 });
  });

  // containerd's CRI marks a container whose task was paused while containerd restarted as UNKNOWN, for good
  // (internal/cri/server/restart.go: "unexpected task status" for a paused task; no event updates it later).
  // kybernate cannot change that; what it owes: the GPU back, the task resumed in containerd, nothing journalled.
  test("containerd restarts during the GPU stage: the GPU comes back and the restarted containerd runs the task", async () => {
    const daemon = await f.ensureDaemon();
    const faults = f.faultDir();
    const pod = await f.newPod("gpu-containerd-restart");
    const id = await f.gpuContainer(pod, { faultDir: faults });
    writeFileSync(join(faults, "1"), "checkpoint delay 2000\n");
    const mark = daemon.logs.length;
    const checkpoint = f.cri.checkpoint(id, f.archivePath("restart"), 60).then(
      () => "succeeded",
      (error: Error) => error.message,
    );
    const [pid = 0] = await cudaPidsOf(daemon, mark);
    await restartContainerd();
    assert.notEqual(await checkpoint, "succeeded", "the checkpoint cannot survive containerd's restart");
    const stage = await daemon.waitForLog((l) => l.containerId === id && l.msg === "GPU stage failed", {
      since: mark,
    });
    assert.match(String(stage.error), /containerd abandoned the checkpoint: runc \(pid \d+\) was killed/);
    await daemon.waitForLog((l) => l.containerId === id && l.msg === "resumed the task through containerd", {
      since: mark,
    });
    const tasks = execFileSync(f.node.bin.ctr, [
      "--address",
      f.node.containerdSocket,
      "-n",
      f.node.namespace,
      "tasks",
      "ls",
    ]);
    assert.match(tasks.toString(), new RegExp(`${id}\\s+\\d+\\s+RUNNING`), "containerd's task runs");
    const first = workloadStatusOnHost(pid);
    await sleep(300);
    const later = workloadStatusOnHost(pid);
    assert.equal(later?.state, "running");
    assert.ok((later?.counter ?? 0) > (first?.counter ?? 0), "the workload makes progress on its GPU");
    assert.equal(later?.verifyFailures, 0);
    await journalEmpties(daemon);
  });

  test("a driver call that never returns: cut at --gpu-budget, the set rolled back; non-GPU containers are created meanwhile without delay", async (t) => {
    // A daemon of its own with a short budget.
    await f.kyb?.stop();
    f.kyb = undefined;
    const daemon = await f.startDaemon(undefined, ["--gpu-budget", "3"]);
    try {
      const faults = f.faultDir();
      const pod = await f.newPod("gpu-hang");
      const id = await f.gpuContainer(pod, { faultDir: faults });
      const plainPod = await f.newPod("plain-during-hang");
      const baseline = await createPlainContainers(plainPod, 10, "before");
      writeFileSync(join(faults, "1"), "checkpoint hang\n");
      const mark = daemon.logs.length;
      const checkpoint = f.cri.checkpoint(id, f.archivePath("hang"), 60);
      await cudaPidsOf(daemon, mark);
      const during = await createPlainContainers(plainPod, 10, "during");
      await assert.rejects(checkpoint, /criu failed|kybernate/i);
      const failed = await daemon.waitForLog((l) => l.containerId === id && l.msg === "GPU stage failed", {
        since: mark,
      });
      assert.match(String(failed.error), /no answer from the driver within \d+ ms.*--gpu-budget/);
      writeFileSync(join(faults, "1"), "");
      await f.assertRunningOnGpu(id, { verifyFailures: 0 });
      await f.assertExecWorks(id);
      await journalEmpties(daemon);
      for (const ms of during)
        assert.ok(ms < 2000, `a non-GPU container took ${Math.round(ms)} ms to create during the hang`);
      t.diagnostic(
        `non-GPU CreateContainer+Start p99: ${Math.round(p99(baseline))} ms before, ${Math.round(p99(during))} ms during the hang`,
      );
    } finally {
      await daemon.stop();
      f.kyb = undefined;
    }
  });

  test("a stopped CUDA process (SIGSTOP): refused before any driver call, naming it; the container keeps running", async () => {
    const daemon = await f.ensureDaemon();
    const pod = await f.newPod("gpu-stopped");
    const id = await f.gpuContainer(pod);
    const mark = daemon.logs.length;
    // The workload is the container's init: its host pid is what CRI's verbose status reports.
    const hostPid = await initPidOf(f.cri, id);
    process.kill(hostPid, "SIGSTOP");
    try {
      await assert.rejects(f.cri.checkpoint(id, f.archivePath("stopped"), 60), /criu failed|kybernate/i);
    } finally {
      process.kill(hostPid, "SIGCONT");
    }
    const refusal = await daemon.waitForLog((l) => l.containerId === id && l.msg === "GPU stage failed", {
      since: mark,
    });
    assert.match(String(refusal.error), /refusing to checkpoint: process \d+ .*stopped.*kill -CONT/);
    assert.ok(
      !daemon.logs.slice(mark).some((l) => l.msg === "gpu checkpoint starting"),
      "no driver step was taken",
    );
    await f.assertRunningOnGpu(id, { checkpoints: 0, verifyFailures: 0 });
    await f.assertExecWorks(id);
    await journalEmpties(daemon);
  });

  test("two GPU containers checkpointed at once: both succeed and both run on their GPUs", async () => {
    await f.ensureDaemon();
    const a = await f.gpuContainer(await f.newPod("gpu-pair-a"));
    const b = await f.gpuContainer(await f.newPod("gpu-pair-b"));
    await Promise.all([f.checkpointOrShowLogs(a, "pair-a"), f.checkpointOrShowLogs(b, "pair-b")]);
    await f.assertRunningOnGpu(a, { checkpoints: 1, restores: 1 });
    await f.assertRunningOnGpu(b, { checkpoints: 1, restores: 1 });
  });
});

/**
 * The mission, on the real containerd + runc + CRIU test node with the GPU double: a GPU container is
 * checkpointed by plain CRI CheckpointContainer (what kubelet and crictl call) and by `ctr tasks checkpoint`,
 * and restored by CRI CreateContainer(archive) + StartContainer, with kybernate doing the GPU stages.
 */
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { mkdirSync, mkdtempSync, readdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { promisify } from "node:util";
import type { In, PodSandboxConfig } from "../../src/cri/types.js";
import { PlanStore } from "../../src/daemon/plan-store.js";
import { GpuNode } from "../support/gpu-node.js";

const run = promisify(execFile);
const f = new GpuNode();
before(() => f.setUp());
after(() => f.tearDown());

/**
 * The host-network case (the pod-network one is pod-network-connections-across-a-checkpoint.test.ts). It also has
 * to be: the non-GPU container beside the GPU one is checkpointed by plain containerd, with CRIU's default network
 * lock (iptables), which fails in a pod's own network namespace on this node ("Locking network failed:
 * iptables-restore returned -1"); kybernate gives its GPU containers the lock CRIU offers (nftables here).
 */
const HOST_NETWORK = { hostNetwork: true };

describe("transparent CRI checkpoint and restore of a GPU container", () => {
  let gpuPod: { podId: string; config: In<PodSandboxConfig> };
  let containerId: string;
  let counterBeforeCheckpoint = 0;
  let checkpointed = false;

  /**
   * The GPU container the first test checkpoints to archive "gpu", made here when that test did not run (a
   * --test-name-pattern picking a later one), so each test stands on its own.
   */
  async function gpuCheckpoint(): Promise<void> {
    if (checkpointed) return;
    await f.ensureDaemon();
    gpuPod = await f.newPod("gpu", HOST_NETWORK);
    containerId = await f.gpuContainer(gpuPod);
    counterBeforeCheckpoint = (await f.statuses(containerId))[0]?.counter ?? 0;
    await f.checkpointOrShowLogs(containerId, "gpu");
    await f.assertRunningOnGpu(containerId, { checkpoints: 1, restores: 1, verified: 1 });
    checkpointed = true;
  }

  test("without kybernate running the checkpoint fails cleanly; with it, it succeeds and the workload keeps running on the GPU", async () => {
    await f.startDaemon();
    gpuPod = await f.newPod("gpu", HOST_NETWORK);
    containerId = await f.gpuContainer(gpuPod);
    const annotations = f.ociConfig(containerId).annotations ?? {};
    assert.match(annotations["org.criu.config"] ?? "", /criu\.conf$/, "CRIU config injected");

    const stateDir = f.kyb?.stateDir;
    await f.kyb?.stop();
    f.kyb = undefined;
    await assert.rejects(
      f.cri.checkpoint(containerId, f.archivePath("without"), 60),
      /criu failed|CRIU|kybernate/i,
    );
    await f.assertRunningOnGpu(containerId, { checkpoints: 0 });

    await f.startDaemon(stateDir);
    counterBeforeCheckpoint = (await f.statuses(containerId))[0]?.counter ?? 0;
    await f.checkpointOrShowLogs(containerId, "gpu");
    await f.assertRunningOnGpu(containerId, { checkpoints: 1, restores: 1, verified: 1 });
    checkpointed = true;
  });

  test("checkpointctl reads the archive", async () => {
    await gpuCheckpoint();
    const { stdout } = await run(f.node.bin.checkpointctl, ["show", f.archivePath("gpu")]);
    assert.match(stdout, /cuda/);
  });

  test("restore in a new pod continues from the checkpointed counter with its VRAM verified", async () => {
    await gpuCheckpoint();
    const pod = await f.newPod("gpu-restored");
    const restoredId = await f.cri.restoreFromArchive(pod.podId, pod.config, f.archivePath("gpu"), "cuda", {
      mounts: f.gpuMounts(),
    });
    const t0 = Date.now();
    await f.cri.startContainer(restoredId);
    const [restored] = await f.assertRunningOnGpu(restoredId, { checkpoints: 1, restores: 1, verified: 1 });
    const elapsedTicks = Math.ceil((Date.now() - t0) / 20) + 50;
    assert.ok(restored, "restored workload status");
    assert.ok(
      restored.counter >= counterBeforeCheckpoint,
      `restored counter ${restored.counter} is below the counter before the checkpoint ${counterBeforeCheckpoint}: the workload started afresh`,
    );
    assert.ok(
      restored.counter <= counterBeforeCheckpoint + elapsedTicks + 200,
      `restored counter ${restored.counter} is far beyond the checkpointed ${counterBeforeCheckpoint}`,
    );
    assert.ok(f.kyb?.logs.some((l) => l.action === "post-resume" && l.msg === "GPU state restored"));
  });

  test("ctr tasks checkpoint of the same container works too", async () => {
    await gpuCheckpoint();
    const before = await f.statuses(containerId);
    await run(f.node.bin.ctr, [
      "--address",
      f.node.containerdSocket,
      "-n",
      f.node.namespace,
      "tasks",
      "checkpoint",
      containerId,
    ]);
    await f.assertRunningOnGpu(containerId, { checkpoints: (before[0]?.checkpoints ?? 0) + 1 });
  });

  test("a container with three CUDA processes is checkpointed and restored", async () => {
    await f.ensureDaemon();
    const pod = await f.newPod("gpu-three");
    const id = await f.gpuContainer(pod, { procs: 3 });
    await f.checkpointOrShowLogs(id, "three");
    await f.assertRunningOnGpu(id, { checkpoints: 1, restores: 1 });
    const restoredPod = await f.newPod("gpu-three-restored");
    const restoredId = await f.cri.restoreFromArchive(
      restoredPod.podId,
      restoredPod.config,
      f.archivePath("three"),
      "cuda",
      {
        mounts: f.gpuMounts(),
      },
    );
    await f.cri.startContainer(restoredId);
    const all = await f.assertRunningOnGpu(restoredId, { checkpoints: 1, restores: 1, verified: 1 });
    assert.equal(all.length, 3);
  });

  test("a non-GPU container in the same pod is never touched", async () => {
    await gpuCheckpoint();
    const id = await f.cri.createContainer(gpuPod.podId, gpuPod.config, {
      name: "plain",
      image: f.node.image,
      command: ["sleep", "3600"],
    });
    await f.cri.startContainer(id);
    const annotations = f.ociConfig(id).annotations ?? {};
    assert.deepEqual(
      Object.keys(annotations).filter((key) => key.startsWith("kybernate.io/") || key === "org.criu.config"),
      [],
    );
    const hookCalls = f.kyb?.logs.filter((l) => l.containerId === id).length;
    await f.cri.checkpoint(id, f.archivePath("plain"), 60);
    assert.equal(
      f.kyb?.logs.filter((l) => l.containerId === id).length,
      hookCalls,
      "kybernate acted on a non-GPU container",
    );
  });
});

describe("faults end with nothing lost", () => {
  test("the CRIU dump fails after the GPU stage: the workload is back on the GPU and running", async () => {
    await f.ensureDaemon();
    const pod = await f.newPod("gpu-criu-fails");
    const id = await f.gpuContainer(pod, { undumpableHelper: "lock" });
    await assert.rejects(f.cri.checkpoint(id, f.archivePath("criu-fails"), 60), /criu failed/i);
    await f.assertRunningOnGpu(id, { checkpoints: 1, restores: 1, verified: 1 });
  });

  test("a process holding io_uring (CRIU cannot dump it): refused before the freeze, naming it; the GPU untouched", async () => {
    const daemon = await f.ensureDaemon();
    const pod = await f.newPod("gpu-io-uring");
    const id = await f.gpuContainer(pod, { undumpableHelper: "io_uring" });
    const mark = daemon.logs.length;
    await assert.rejects(f.cri.checkpoint(id, f.archivePath("io-uring"), 60), /criu failed/i);
    const refusal = await daemon.waitForLog((l) => l.containerId === id && l.msg === "GPU stage failed", {
      since: mark,
    });
    assert.match(
      String(refusal.error),
      /refusing to checkpoint: process \d+ \(fake-cuda-workl\) uses io_uring \(anon_inode:\[io_uring\]\), which CRIU cannot dump; nothing was frozen/,
    );
    assert.ok(
      !daemon.logs.slice(mark).some((l) => l.msg === "gpu checkpoint starting"),
      "no driver step was taken",
    );
    await f.assertRunningOnGpu(id, { checkpoints: 0, verifyFailures: 0 });
    await f.assertExecWorks(id);
  });

  // containerd 2.1 does not serialise checkpoints of one container (both share its ctrd-checkpoint work
  // directory, and each resumes the container when it ends), so the first can fail through containerd too.
  // What kybernate owns: the second GPU stage is refused with a reason, and the workload ends on its GPU.
  test("two concurrent checkpoints of one container: the second is refused with a clear error", async () => {
    const daemon = await f.ensureDaemon();
    const faults = mkdtempSync(join(f.scratch, "faults-"));
    const pod = await f.newPod("gpu-concurrent");
    const id = await f.gpuContainer(pod, { faultDir: faults });
    writeFileSync(join(faults, "1"), "checkpoint delay 1500\n");
    const results = await Promise.allSettled([
      f.cri.checkpoint(id, f.archivePath("concurrent-1"), 60),
      sleep(200).then(() => f.cri.checkpoint(id, f.archivePath("concurrent-2"), 60)),
    ]);
    assert.ok(
      results.some((r) => r.status === "rejected"),
      "both concurrent checkpoints succeeded",
    );
    const refusal = daemon.logs.find(
      (l) => l.containerId === id && /is busy: a pre-dump started at/.test(String(l.error)),
    );
    assert.ok(refusal, "kybernate refused the second GPU stage with a reason");
    await f.assertRunningOnGpu(id, { checkpoints: 1, restores: 1, verifyFailures: 0 });
    writeFileSync(join(faults, "1"), "");
    await f.checkpointOrShowLogs(id, "after-concurrent");
    await f.assertRunningOnGpu(id, { checkpoints: 2, restores: 2 });
  });

  test("a checkpoint cut by the caller's deadline: within 2 s of the GPU stage the container runs, exec works, VRAM verified; the next checkpoint succeeds", async () => {
    const daemon = await f.ensureDaemon();
    const faults = mkdtempSync(join(f.scratch, "faults-"));
    const pod = await f.newPod("gpu-cut");
    const id = await f.gpuContainer(pod, { faultDir: faults });
    // A GPU stage of 3 s against a caller who waits 1 s (crictl --timeout 1s): containerd's shim kills runc at 1 s.
    writeFileSync(join(faults, "1"), "checkpoint delay 3000\n");
    const mark = daemon.logs.length;
    await assert.rejects(
      f.cri.rpc(
        "CheckpointContainer",
        { containerId: id, location: f.archivePath("cut"), timeout: 1 },
        { timeoutMs: 1000 },
      ),
      /DEADLINE_EXCEEDED/,
    );
    const stage = await daemon.waitForLog((l) => l.containerId === id && l.msg === "GPU stage failed", {
      since: mark,
      timeoutMs: 10_000,
    });
    assert.match(String(stage.error), /containerd abandoned the checkpoint: runc \(pid \d+\) was killed/);
    const stageEnded = Date.now();
    // containerd had lost its own resume: only its Tasks API clears the shim's "paused" (exec refused otherwise).
    let exec: { exitCode: number } | undefined;
    while (Date.now() - stageEnded < 2000) {
      exec = await f.cri.exec(id, ["true"], 5).catch(() => undefined);
      if (exec?.exitCode === 0) break;
      await sleep(50);
    }
    assert.equal(exec?.exitCode, 0, "exec works within 2 s of the end of the GPU stage");
    assert.ok(Date.now() - stageEnded < 2000, `took ${Date.now() - stageEnded} ms`);
    assert.ok(
      daemon.logs.some((l) => l.containerId === id && l.msg === "resumed the task through containerd"),
    );
    await f.assertRunningOnGpu(id, { verifyFailures: 0 });
    assert.equal((await f.cri.containerStatus(id)).status?.state, "CONTAINER_RUNNING");
    writeFileSync(join(faults, "1"), "");
    await f.checkpointOrShowLogs(id, "after-cut");
    await f.assertRunningOnGpu(id, { checkpoints: 2, restores: 2, verifyFailures: 0 });
  });

  test("the daemon is killed during pre-dump and restarted: nothing is left locked or checkpointed", async () => {
    const daemon = await f.ensureDaemon();
    const faults = mkdtempSync(join(f.scratch, "faults-"));
    const pod = await f.newPod("gpu-daemon-killed");
    const id = await f.gpuContainer(pod, { faultDir: faults });
    writeFileSync(join(faults, "1"), "checkpoint delay 2000\n");
    const mark = daemon.logs.length;
    const checkpoint = f.cri.checkpoint(id, f.archivePath("killed"), 60);
    await daemon.waitForLog((l) => l.msg === "gpu checkpoint starting", { since: mark });
    await daemon.stop("SIGKILL");
    f.kyb = undefined;
    await assert.rejects(checkpoint);
    mkdirSync(join(daemon.stateDir, "journal"), { recursive: true });
    assert.ok(
      readdirSync(join(daemon.stateDir, "journal")).length > 0,
      "the interrupted operation is journalled",
    );
    await f.startDaemon(daemon.stateDir);
    // Whether the driver got to CHECKPOINTED or only LOCKED before the daemon died, the repair brings the
    // workload back: RUNNING (the counter moves again) and containerd's view consistent (exec works).
    await f.assertRunningOnGpu(id);
    const until = Date.now() + 10_000;
    while (readdirSync(join(daemon.stateDir, "journal")).length > 0 && Date.now() < until) await sleep(100);
    assert.deepEqual(readdirSync(join(daemon.stateDir, "journal")), []);
  });

  test("GPU state left checkpointed in a running container while kybernate was away is repaired at its start", async () => {
    const daemon = await f.ensureDaemon();
    const pod = await f.newPod("gpu-stranded");
    const id = await f.gpuContainer(pod);
    await daemon.stop();
    f.kyb = undefined;
    await f.strandCheckpointed(id);
    const restarted = await f.startDaemon(daemon.stateDir);
    await f.assertRunningOnGpu(id, { checkpoints: 1, restores: 1, verified: 1, lastDevicePairs: 0 });
    assert.ok(restarted.logs.some((l) => l.containerId === id && l.msg === "GPU state repaired"));
  });

  test("a restore cut between pre-restore and post-resume is repaired onto the GPUs its pre-restore planned", async () => {
    const daemon = await f.ensureDaemon();
    const pod = await f.newPod("gpu-stranded-map");
    const id = await f.gpuContainer(pod);
    await daemon.stop();
    f.kyb = undefined;
    // What the daemon leaves when it dies after pre-restore planned a device map: the plan on disk (written by
    // the daemon's own store) and, once runc restored the container, its process CHECKPOINTED (post-resume missed).
    const map = [
      { from: "GPU-aaaaaaaa-1111-2222-3333-444444444444", to: "GPU-bbbbbbbb-1111-2222-3333-444444444444" },
    ];
    await new PlanStore(join(daemon.stateDir, "restore-plans")).save(id, map);
    await f.strandCheckpointed(id);
    const restarted = await f.startDaemon(daemon.stateDir);
    await f.assertRunningOnGpu(id, { restores: 1, lastDevicePairs: 1 });
    assert.ok(restarted.logs.some((l) => l.containerId === id && l.msg === "GPU state repaired"));
    assert.deepEqual(readdirSync(join(daemon.stateDir, "restore-plans")), [], "the plan is gone once used");
  });
});

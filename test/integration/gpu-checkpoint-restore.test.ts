/**
 * The mission, on the real containerd + runc + CRIU test node with the GPU double: a GPU container is
 * checkpointed by plain CRI CheckpointContainer (what kubelet and crictl call) and by `ctr tasks checkpoint`,
 * and restored by CRI CreateContainer(archive) + StartContainer, with kybernate doing the GPU stages.
 */
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { promisify } from "node:util";
import { packageRoot } from "../../src/base/paths.js";
import type { In, PodSandboxConfig } from "../../src/cri/types.js";
import { PlanStore } from "../../src/daemon/plan-store.js";
import { buildDouble } from "../gpu/double/harness.js";
import {
  gpuDoubleMounts,
  kybernateArgsForDouble,
  type WorkloadStatus,
  waitForWorkload,
  workloadStatuses,
} from "../support/gpu-double-container.js";
import { type KybernateProcess, startKybernate } from "../support/kybernate-process.js";
import { TestCriClient } from "../support/test-cri-client.js";
import { loadTestNode, type TestNode } from "../support/testnode.js";

const run = promisify(execFile);

let node: TestNode;
let cri: TestCriClient;
let scratch: string;
let doubleDir: string;
let kyb: KybernateProcess | undefined;
const pods: string[] = [];

async function ensureDaemon(): Promise<KybernateProcess> {
  return kyb ?? startDaemon();
}

async function startDaemon(stateDir?: string): Promise<KybernateProcess> {
  kyb = await startKybernate({
    nriSocket: node.nriSocket,
    args: kybernateArgsForDouble(doubleDir, node),
    // The double's control sockets live in the container's /tmp/fake-cuda (its default); the harness module
    // points FAKE_CUDA_DIR elsewhere for plain-process tests.
    env: { FAKE_CUDA_DIR: "/tmp/fake-cuda" },
    ...(stateDir ? { stateDir } : {}),
  });
  return kyb;
}

async function newPod(name: string): Promise<{ podId: string; config: In<PodSandboxConfig> }> {
  const pod = await cri.runHostNetworkPod(`${name}-${process.pid}`, "kybernate-test");
  pods.push(pod.podId);
  return pod;
}

function gpuMounts(faultDir?: string) {
  return gpuDoubleMounts(
    doubleDir,
    join(scratch, "nvidiactl"),
    faultDir ? [{ containerPath: "/faults", hostPath: faultDir }] : [],
  );
}

async function gpuContainer(
  pod: { podId: string; config: In<PodSandboxConfig> },
  options: { procs?: number; undumpableHelper?: boolean; faultDir?: string } = {},
): Promise<string> {
  const workload = ["/kyb/fake-cuda-workload", "--mib", "32"];
  if (options.procs) workload.push("--procs", String(options.procs));
  if (options.faultDir) workload.push("--fault-file", "/faults/%p");
  const command = options.undumpableHelper
    ? ["sh", "-c", `/kyb/fake-cuda-workload --undumpable & exec ${workload.join(" ")}`]
    : workload;
  const id = await cri.createContainer(pod.podId, pod.config, {
    name: "cuda",
    image: node.image,
    command,
    mounts: gpuMounts(options.faultDir),
  });
  await cri.startContainer(id);
  await waitFor(
    id,
    (all) => all.length === (options.procs ?? 1) && all.every((s) => s.state === "running" && s.counter > 5),
  );
  return id;
}

const statuses = (containerId: string): Promise<WorkloadStatus[]> => workloadStatuses(cri, containerId);

const waitFor = (containerId: string, ok: (all: WorkloadStatus[]) => boolean): Promise<WorkloadStatus[]> =>
  waitForWorkload(cri, containerId, ok, { kybernateLogs: () => kyb?.logs ?? [] });

/** Running on the GPU and making progress: the counter only moves while the "driver" state is RUNNING. */
async function assertRunningOnGpu(
  containerId: string,
  expect: Partial<WorkloadStatus> = {},
): Promise<WorkloadStatus[]> {
  const first = await waitFor(containerId, (all) => all.every((s) => s.state === "running"));
  await sleep(300);
  const later = await statuses(containerId);
  for (const status of later) {
    const before = first.find((s) => s.pid === status.pid);
    assert.equal(status.state, "running");
    assert.ok(
      before && status.counter > before.counter,
      `counter of pid ${status.pid} does not move: ${JSON.stringify({ before, status })}`,
    );
    assert.equal(status.verifyFailures, 0, "VRAM checksum failures");
    for (const [key, value] of Object.entries(expect)) {
      assert.equal(status[key as keyof WorkloadStatus], value, `${key} of pid ${status.pid}`);
    }
  }
  const info = await cri.containerStatus(containerId);
  assert.equal(info.status?.state, "CONTAINER_RUNNING");
  return later;
}

/**
 * What a post-resume that could not reach the daemon leaves (runc ignores that failure): the container runs, its
 * CUDA process sits CHECKPOINTED. Made with kybernate's own operator command while no daemon runs.
 */
async function strandCheckpointed(id: string): Promise<void> {
  await run(
    process.execPath,
    [
      join(packageRoot, "dist/src/cli/main.js"),
      "gpu",
      "freeze",
      "--container",
      id,
      "--runtime-endpoint",
      node.criSocket,
      ...kybernateArgsForDouble(doubleDir).slice(0, 4),
    ],
    { env: { ...process.env, FAKE_CUDA_DIR: "/tmp/fake-cuda" } },
  );
  await waitForWorkload(cri, id, (all) => all.every((s) => s.state === "checkpointed"), { what: "stranded" });
}

/** A checkpoint that must succeed; on failure the daemon's last log lines say why. */
async function checkpointOrShowLogs(containerId: string, name: string): Promise<void> {
  try {
    await cri.checkpoint(containerId, archivePath(name), 60);
  } catch (error) {
    const tail = (kyb?.logs ?? []).slice(-15).map((l) => JSON.stringify(l).slice(0, 400));
    throw new Error(`${(error as Error).message}\nkybernate log:\n${tail.join("\n")}`);
  }
}

function archivePath(name: string): string {
  return join(scratch, `${name}.tar`);
}

function ociConfig(containerId: string): { annotations?: Record<string, string> } {
  return JSON.parse(
    readFileSync(
      join(node.state, "io.containerd.runtime.v2.task", node.namespace, containerId, "config.json"),
      "utf8",
    ),
  ) as { annotations?: Record<string, string> };
}

before(async () => {
  node = loadTestNode();
  cri = new TestCriClient(node.criSocket);
  scratch = mkdtempSync("/tmp/kyb-gpu-e2e-");
  writeFileSync(join(scratch, "nvidiactl"), "");
  doubleDir = buildDouble();
  await cri.pullImage(node.image);
});

after(async () => {
  if (!process.env.KYBERNATE_TEST_KEEP)
    for (const podId of pods) await cri.stopAndRemovePod(podId).catch(() => undefined);
  await kyb?.stop();
  cri.close();
  rmSync(scratch, { recursive: true, force: true });
});

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
    await ensureDaemon();
    gpuPod = await newPod("gpu");
    containerId = await gpuContainer(gpuPod);
    counterBeforeCheckpoint = (await statuses(containerId))[0]?.counter ?? 0;
    await checkpointOrShowLogs(containerId, "gpu");
    await assertRunningOnGpu(containerId, { checkpoints: 1, restores: 1, verified: 1 });
    checkpointed = true;
  }

  test("without kybernate running the checkpoint fails cleanly; with it, it succeeds and the workload keeps running on the GPU", async () => {
    await startDaemon();
    gpuPod = await newPod("gpu");
    containerId = await gpuContainer(gpuPod);
    const annotations = ociConfig(containerId).annotations ?? {};
    assert.match(annotations["org.criu.config"] ?? "", /criu\.conf$/, "CRIU config injected");

    const stateDir = kyb?.stateDir;
    await kyb?.stop();
    kyb = undefined;
    await assert.rejects(
      cri.checkpoint(containerId, archivePath("without"), 60),
      /criu failed|CRIU|kybernate/i,
    );
    await assertRunningOnGpu(containerId, { checkpoints: 0 });

    await startDaemon(stateDir);
    counterBeforeCheckpoint = (await statuses(containerId))[0]?.counter ?? 0;
    await checkpointOrShowLogs(containerId, "gpu");
    await assertRunningOnGpu(containerId, { checkpoints: 1, restores: 1, verified: 1 });
    checkpointed = true;
  });

  test("checkpointctl reads the archive", async () => {
    await gpuCheckpoint();
    const { stdout } = await run(node.bin.checkpointctl, ["show", archivePath("gpu")]);
    assert.match(stdout, /cuda/);
  });

  test("restore in a new pod continues from the checkpointed counter with its VRAM verified", async () => {
    await gpuCheckpoint();
    const pod = await newPod("gpu-restored");
    const restoredId = await cri.restoreFromArchive(pod.podId, pod.config, archivePath("gpu"), "cuda", {
      mounts: gpuMounts(),
    });
    const t0 = Date.now();
    await cri.startContainer(restoredId);
    const [restored] = await assertRunningOnGpu(restoredId, { checkpoints: 1, restores: 1, verified: 1 });
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
    assert.ok(kyb?.logs.some((l) => l.action === "post-resume" && l.msg === "GPU state restored"));
  });

  test("ctr tasks checkpoint of the same container works too", async () => {
    await gpuCheckpoint();
    const before = await statuses(containerId);
    await run(node.bin.ctr, [
      "--address",
      node.containerdSocket,
      "-n",
      node.namespace,
      "tasks",
      "checkpoint",
      containerId,
    ]);
    await assertRunningOnGpu(containerId, { checkpoints: (before[0]?.checkpoints ?? 0) + 1 });
  });

  test("a container with three CUDA processes is checkpointed and restored", async () => {
    await ensureDaemon();
    const pod = await newPod("gpu-three");
    const id = await gpuContainer(pod, { procs: 3 });
    await checkpointOrShowLogs(id, "three");
    await assertRunningOnGpu(id, { checkpoints: 1, restores: 1 });
    const restoredPod = await newPod("gpu-three-restored");
    const restoredId = await cri.restoreFromArchive(
      restoredPod.podId,
      restoredPod.config,
      archivePath("three"),
      "cuda",
      {
        mounts: gpuMounts(),
      },
    );
    await cri.startContainer(restoredId);
    const all = await assertRunningOnGpu(restoredId, { checkpoints: 1, restores: 1, verified: 1 });
    assert.equal(all.length, 3);
  });

  test("a non-GPU container in the same pod is never touched", async () => {
    await gpuCheckpoint();
    const id = await cri.createContainer(gpuPod.podId, gpuPod.config, {
      name: "plain",
      image: node.image,
      command: ["sleep", "3600"],
    });
    await cri.startContainer(id);
    const annotations = ociConfig(id).annotations ?? {};
    assert.deepEqual(
      Object.keys(annotations).filter((key) => key.startsWith("kybernate.io/") || key === "org.criu.config"),
      [],
    );
    const hookCalls = kyb?.logs.filter((l) => l.containerId === id).length;
    await cri.checkpoint(id, archivePath("plain"), 60);
    assert.equal(
      kyb?.logs.filter((l) => l.containerId === id).length,
      hookCalls,
      "kybernate acted on a non-GPU container",
    );
  });
});

describe("faults end with nothing lost", () => {
  test("the CRIU dump fails after the GPU stage: the workload is back on the GPU and running", async () => {
    await ensureDaemon();
    const pod = await newPod("gpu-criu-fails");
    const id = await gpuContainer(pod, { undumpableHelper: true });
    await assert.rejects(cri.checkpoint(id, archivePath("criu-fails"), 60), /criu failed/i);
    await assertRunningOnGpu(id, { checkpoints: 1, restores: 1, verified: 1 });
  });

  // containerd 2.1 does not serialise checkpoints of one container (both share its ctrd-checkpoint work
  // directory, and each resumes the container when it ends), so the first can fail through containerd too.
  // What kybernate owns: the second GPU stage is refused with a reason, and the workload ends on its GPU.
  test("two concurrent checkpoints of one container: the second is refused with a clear error", async () => {
    const daemon = await ensureDaemon();
    const faults = mkdtempSync(join(scratch, "faults-"));
    const pod = await newPod("gpu-concurrent");
    const id = await gpuContainer(pod, { faultDir: faults });
    writeFileSync(join(faults, "1"), "checkpoint delay 1500\n");
    const results = await Promise.allSettled([
      cri.checkpoint(id, archivePath("concurrent-1"), 60),
      sleep(200).then(() => cri.checkpoint(id, archivePath("concurrent-2"), 60)),
    ]);
    assert.ok(
      results.some((r) => r.status === "rejected"),
      "both concurrent checkpoints succeeded",
    );
    const refusal = daemon.logs.find(
      (l) => l.containerId === id && /is busy: a pre-dump started at/.test(String(l.error)),
    );
    assert.ok(refusal, "kybernate refused the second GPU stage with a reason");
    await assertRunningOnGpu(id, { checkpoints: 1, restores: 1, verifyFailures: 0 });
    writeFileSync(join(faults, "1"), "");
    await checkpointOrShowLogs(id, "after-concurrent");
    await assertRunningOnGpu(id, { checkpoints: 2, restores: 2 });
  });

  test("a checkpoint cut by the caller's deadline: within 2 s of the GPU stage the container runs, exec works, VRAM verified; the next checkpoint succeeds", async () => {
    const daemon = await ensureDaemon();
    const faults = mkdtempSync(join(scratch, "faults-"));
    const pod = await newPod("gpu-cut");
    const id = await gpuContainer(pod, { faultDir: faults });
    // A GPU stage of 3 s against a caller who waits 1 s (crictl --timeout 1s): containerd's shim kills runc at 1 s.
    writeFileSync(join(faults, "1"), "checkpoint delay 3000\n");
    const mark = daemon.logs.length;
    await assert.rejects(
      cri.rpc(
        "CheckpointContainer",
        { containerId: id, location: archivePath("cut"), timeout: 1 },
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
      exec = await cri.exec(id, ["true"], 5).catch(() => undefined);
      if (exec?.exitCode === 0) break;
      await sleep(50);
    }
    assert.equal(exec?.exitCode, 0, "exec works within 2 s of the end of the GPU stage");
    assert.ok(Date.now() - stageEnded < 2000, `took ${Date.now() - stageEnded} ms`);
    assert.ok(
      daemon.logs.some((l) => l.containerId === id && l.msg === "resumed the task through containerd"),
    );
    await assertRunningOnGpu(id, { verifyFailures: 0 });
    assert.equal((await cri.containerStatus(id)).status?.state, "CONTAINER_RUNNING");
    writeFileSync(join(faults, "1"), "");
    await checkpointOrShowLogs(id, "after-cut");
    await assertRunningOnGpu(id, { checkpoints: 2, restores: 2, verifyFailures: 0 });
  });

  test("the daemon is killed during pre-dump and restarted: nothing is left locked or checkpointed", async () => {
    const daemon = await ensureDaemon();
    const faults = mkdtempSync(join(scratch, "faults-"));
    const pod = await newPod("gpu-daemon-killed");
    const id = await gpuContainer(pod, { faultDir: faults });
    writeFileSync(join(faults, "1"), "checkpoint delay 2000\n");
    const mark = daemon.logs.length;
    const checkpoint = cri.checkpoint(id, archivePath("killed"), 60);
    await daemon.waitForLog((l) => l.msg === "gpu checkpoint starting", { since: mark });
    await daemon.stop("SIGKILL");
    kyb = undefined;
    await assert.rejects(checkpoint);
    mkdirSync(join(daemon.stateDir, "journal"), { recursive: true });
    assert.ok(
      readdirSync(join(daemon.stateDir, "journal")).length > 0,
      "the interrupted operation is journalled",
    );
    await startDaemon(daemon.stateDir);
    // Whether the driver got to CHECKPOINTED or only LOCKED before the daemon died, the repair brings the
    // workload back: RUNNING (the counter moves again) and containerd's view consistent (exec works).
    await assertRunningOnGpu(id);
    const until = Date.now() + 10_000;
    while (readdirSync(join(daemon.stateDir, "journal")).length > 0 && Date.now() < until) await sleep(100);
    assert.deepEqual(readdirSync(join(daemon.stateDir, "journal")), []);
  });

  test("GPU state left checkpointed in a running container while kybernate was away is repaired at its start", async () => {
    const daemon = await ensureDaemon();
    const pod = await newPod("gpu-stranded");
    const id = await gpuContainer(pod);
    await daemon.stop();
    kyb = undefined;
    await strandCheckpointed(id);
    const restarted = await startDaemon(daemon.stateDir);
    await assertRunningOnGpu(id, { checkpoints: 1, restores: 1, verified: 1, lastDevicePairs: 0 });
    assert.ok(restarted.logs.some((l) => l.containerId === id && l.msg === "GPU state repaired"));
  });

  test("a restore cut between pre-restore and post-resume is repaired onto the GPUs its pre-restore planned", async () => {
    const daemon = await ensureDaemon();
    const pod = await newPod("gpu-stranded-map");
    const id = await gpuContainer(pod);
    await daemon.stop();
    kyb = undefined;
    // What the daemon leaves when it dies after pre-restore planned a device map: the plan on disk (written by
    // the daemon's own store) and, once runc restored the container, its process CHECKPOINTED (post-resume missed).
    const map = [
      { from: "GPU-aaaaaaaa-1111-2222-3333-444444444444", to: "GPU-bbbbbbbb-1111-2222-3333-444444444444" },
    ];
    await new PlanStore(join(daemon.stateDir, "restore-plans")).save(id, map);
    await strandCheckpointed(id);
    const restarted = await startDaemon(daemon.stateDir);
    await assertRunningOnGpu(id, { restores: 1, lastDevicePairs: 1 });
    assert.ok(restarted.logs.some((l) => l.containerId === id && l.msg === "GPU state repaired"));
    assert.deepEqual(readdirSync(join(daemon.stateDir, "restore-plans")), [], "the plan is gone once used");
  });
});

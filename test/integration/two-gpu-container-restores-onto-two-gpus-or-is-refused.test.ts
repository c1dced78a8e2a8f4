/**
 * A container holding two GPUs, through the real chain on the test node (containerd → runc → CRIU → kybernate →
 * the GPU double): the checkpoint's metadata lists both GPUs it computed on (not the node's third); a restore
 * onto the same two (given in the other order: no map), onto two others (a pair each), onto the two swapped (the
 * pod's kybernate.io/device-map) and onto one (refused at pre-restore, nothing restored). Then two NCCL ranks in
 * one container: refused before the driver is asked while their NCCL may use NVLS/P2P/SHM/IB, checkpointed once
 * they run with the socket transport.
 */
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { copyFileSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { promisify } from "node:util";
import { DEVICE_MAP_ANNOTATION } from "../../src/checkpoint/gpu-request.js";
import { initPidOf } from "../../src/cli/resolve.js";
import type { MountSpec } from "../../src/cri/client.js";
import type { In, PodSandboxConfig } from "../../src/cri/types.js";
import { buildDouble } from "../gpu/double/harness.js";
import { type FakeGpus, fakeGpus } from "../support/fake-gpus.js";
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
const A = "GPU-aaaaaaaa-1111-2222-3333-444444444444";
const B = "GPU-bbbbbbbb-1111-2222-3333-444444444444";
const C = "GPU-cccccccc-1111-2222-3333-444444444444";
const D = "GPU-dddddddd-1111-2222-3333-444444444444";

let node: TestNode;
let cri: TestCriClient;
let scratch: string;
let doubleDir: string;
let gpus: FakeGpus;
let daemon: KybernateProcess;
let pairsLog: string;
let archive: string;
const pods: string[] = [];

const mounts = (): MountSpec[] =>
  gpuDoubleMounts(doubleDir, join(scratch, "nvidiactl"), [
    { containerPath: "/kyb-lib", hostPath: join(scratch, "lib"), readonly: true },
  ]);

async function newPod(name: string, annotations: Record<string, string> = {}) {
  const pod = await cri.runHostNetworkPod(`${name}-${process.pid}`, "kybernate-test", { annotations });
  pods.push(pod.podId);
  return pod;
}

const logsOf = () => daemon.logs;

async function waitAll(id: string, ok: (s: WorkloadStatus) => boolean, what: string, count = 1) {
  return waitForWorkload(cri, id, (all) => all.length >= count && all.every(ok), {
    what,
    kybernateLogs: logsOf,
  });
}

/** The counter of `s`'s process moves on: it runs "on the GPU", its "VRAM" intact. */
async function goesOn(id: string, s: WorkloadStatus): Promise<WorkloadStatus> {
  const all = await waitForWorkload(
    cri,
    id,
    (xs) => xs.some((x) => x.pid === s.pid && x.counter > s.counter + 3),
    {
      what: `process ${s.pid}'s counter does not move`,
      kybernateLogs: logsOf,
    },
  );
  const later = all.find((x) => x.pid === s.pid) as WorkloadStatus;
  assert.equal(later.verifyFailures, 0);
  return later;
}

function planOf(id: string): {
  plan: { ok: boolean; deviceMap?: unknown; reason?: string };
  containerGpus?: string;
} {
  const line = daemon.logs.find((l) => l.containerId === id && l.msg === "GPU restore plan");
  assert.ok(line, `no restore plan logged for ${id}`);
  return line as never;
}

async function restoreInto(
  name: string,
  given: string,
  annotations: Record<string, string> = {},
): Promise<{ id: string; pod: { podId: string; config: In<PodSandboxConfig> } }> {
  const pod = await newPod(name, annotations);
  const id = await cri.restoreFromArchive(pod.podId, pod.config, archive, "two", {
    mounts: mounts(),
    env: { NVIDIA_VISIBLE_DEVICES: given },
  });
  return { id, pod };
}

before(async () => {
  node = loadTestNode();
  cri = new TestCriClient(node.criSocket);
  scratch = mkdtempSync("/tmp/kyb-two-gpu-");
  writeFileSync(join(scratch, "nvidiactl"), "");
  await run("mkdir", ["-p", join(scratch, "lib")]);
  // A real shared library under NCCL's name: the ranks map it as the loader maps libnccl.so.2.
  copyFileSync("/lib/x86_64-linux-gnu/libutil.so.1", join(scratch, "lib", "libnccl.so.2"));
  doubleDir = buildDouble();
  gpus = fakeGpus(scratch, "node", A);
  gpus.set([{ uuid: A }, { uuid: B }, { uuid: C }]);
  pairsLog = join(scratch, "pairs.log");
  archive = join(scratch, "two.tar");
  daemon = await startKybernate({
    nriSocket: node.nriSocket,
    args: [...kybernateArgsForDouble(doubleDir, node), "--nvidia-smi", gpus.nvidiaSmi],
    env: { FAKE_CUDA_DIR: "/tmp/fake-cuda", FAKE_CUDA_PAIRS_LOG: pairsLog },
  });
  await cri.pullImage(node.image);
});

after(async () => {
  for (const podId of pods) await cri.stopAndRemovePod(podId).catch(() => undefined);
  await daemon?.stop();
  cri.close();
  rmSync(scratch, { recursive: true, force: true });
});

describe("a container holding two GPUs", () => {
  test("checkpoint: the metadata lists the two GPUs its process computed on, and it goes on", async () => {
    const pod = await newPod("two-gpu");
    const id = await cri.createContainer(pod.podId, pod.config, {
      name: "two",
      image: node.image,
      command: ["/kyb/fake-cuda-workload", "--mib", "16", "--gpus", `${A},${B}`],
      mounts: mounts(),
      env: { NVIDIA_VISIBLE_DEVICES: `${A},${B}` },
    });
    await cri.startContainer(id);
    const [first] = await waitAll(
      id,
      (s) => s.state === "running" && s.counter > 5,
      "workload never started",
    );
    assert.deepEqual(first?.gpus, [A, B]);
    // nvidia-smi's view: the process computes on A and B; C is the node's, unused.
    gpus.setApps([
      { pid: await initPidOf(cri, id), uuid: A, usedMiB: 16 },
      { pid: await initPidOf(cri, id), uuid: B, usedMiB: 8 },
    ]);
    await cri.checkpoint(id, archive, 60);
    const after = await goesOn(id, first as WorkloadStatus);
    assert.equal(after.checkpoints, 1);
    assert.deepEqual(after.gpus, [A, B]);
    const { stdout } = await run("tar", ["-xOf", archive, "checkpoint/kybernate.json"]);
    const metadata = JSON.parse(stdout) as { gpus: Array<{ uuid: string }>; processes: unknown[] };
    assert.deepEqual(
      metadata.gpus.map((g) => g.uuid),
      [A, B],
    );
    await cri.stopAndRemovePod(pod.podId);
  });

  test("restored onto the same two GPUs, given in the other order: no device map, still on A and B", async () => {
    const { id } = await restoreInto("two-same", `${B},${A}`);
    await cri.startContainer(id);
    const [s] = await waitAll(id, (x) => x.state === "running" && x.restores === 1, "not restored");
    assert.deepEqual(s?.gpus, [A, B]);
    assert.equal(s?.lastDevicePairs, 0, "the driver got no map");
    const { plan } = planOf(id);
    assert.deepEqual([plan.ok, plan.deviceMap, plan.reason], [true, [], "same GPUs as at checkpoint"]);
    await goesOn(id, s as WorkloadStatus);
  });

  test("restored onto two other GPUs of the model: both mapped, A→C and B→D", async () => {
    gpus.set([{ uuid: A }, { uuid: B }, { uuid: C }, { uuid: D }]);
    const { id } = await restoreInto("two-other", `${D},${C}`);
    await cri.startContainer(id);
    const [s] = await waitAll(id, (x) => x.state === "running" && x.restores === 1, "not restored");
    assert.deepEqual(s?.gpus, [C, D]);
    assert.equal(s?.lastDevicePairs, 2);
    assert.deepEqual(planOf(id).plan.deviceMap, [
      { from: A, to: C },
      { from: B, to: D },
    ]);
    await goesOn(id, s as WorkloadStatus);
  });

  test("restored onto the two swapped, as the pod's kybernate.io/device-map asks: on B and A", async () => {
    const { id } = await restoreInto("two-swap", `${A},${B}`, {
      [DEVICE_MAP_ANNOTATION]: `${A}=${B},${B}=${A}`,
    });
    await cri.startContainer(id);
    const [s] = await waitAll(id, (x) => x.state === "running" && x.restores === 1, "not restored");
    assert.deepEqual(s?.gpus, [B, A]);
    const plan = planOf(id);
    assert.equal(plan.plan.reason, `${DEVICE_MAP_ANNOTATION}: ${A}→${B}, ${B}→${A}`);
    const pid = await initPidOf(cri, id);
    const driverGot = readFileSync(pairsLog, "utf8")
      .split("\n")
      .filter((l) => l.startsWith(`${pid} `));
    assert.deepEqual(driverGot, [`${pid} ${A}=${B},${B}=${A}`], "the driver got exactly the swap");
    await goesOn(id, s as WorkloadStatus);
  });

  test("restored into a container given one GPU: refused at pre-restore, StartContainer fails, nothing restored", async () => {
    const { id } = await restoreInto("two-one", C);
    await assert.rejects(cri.startContainer(id), /criu failed|restore/i);
    const refusal = await daemon.waitForLog(
      (l) => l.containerId === id && /refusing to restore/.test(String(l.error)),
      { timeoutMs: 10_000 },
    );
    assert.match(
      String(refusal.error),
      /taken with 2 GPU\(s\).*has 1 .*give the container 2× NVIDIA H200.*nothing was restored/,
    );
    assert.notEqual((await cri.containerStatus(id)).status?.state, "CONTAINER_RUNNING");
    // A swap map naming a GPU the container lacks is refused the same way.
    const bad = await restoreInto("two-badmap", `${A},${B}`, {
      [DEVICE_MAP_ANNOTATION]: `${A}=${C},${B}=${A}`,
    });
    await assert.rejects(cri.startContainer(bad.id), /criu failed|restore/i);
    const why = await daemon.waitForLog(
      (l) => l.containerId === bad.id && /refusing to restore/.test(String(l.error)),
      { timeoutMs: 10_000 },
    );
    assert.match(
      String(why.error),
      /maps GPU-aaaa\S* onto GPU-cccc\S*, which is not one of the restored container/,
    );
  });
});

describe("two NCCL ranks in one container", () => {
  const SAFE = {
    NCCL_NVLS_ENABLE: "0",
    NCCL_P2P_DISABLE: "1",
    NCCL_SHM_DISABLE: "1",
    NCCL_IB_DISABLE: "1",
  };
  async function ranks(name: string, env: Record<string, string>): Promise<string> {
    const pod = await newPod(name);
    const id = await cri.createContainer(pod.podId, pod.config, {
      name: "ranks",
      image: node.image,
      command: [
        "/kyb/fake-cuda-workload",
        "--mib",
        "8",
        "--procs",
        "2",
        "--library",
        "/kyb-lib/libnccl.so.2",
      ],
      mounts: mounts(),
      env: { NVIDIA_VISIBLE_DEVICES: `${A},${B}`, WORLD_SIZE: "2", ...env },
    });
    await cri.startContainer(id);
    await waitAll(id, (s) => s.state === "running" && s.counter > 3, "ranks never started", 2);
    return id;
  }

  test("with NCCL's defaults: the checkpoint is refused, naming the variables; both ranks run on untouched", async () => {
    const id = await ranks("nccl-default", { NCCL_P2P_DISABLE: "1" });
    await assert.rejects(cri.checkpoint(id, join(scratch, "nccl-refused.tar"), 60));
    const refusal = await daemon.waitForLog(
      (l) => l.containerId === id && /NCCL ranks/.test(String(l.error)),
      { timeoutMs: 10_000 },
    );
    assert.match(
      String(refusal.error),
      /one of 2 NCCL ranks \(it loaded libnccl\.so\.2\) and its environment lacks NCCL_NVLS_ENABLE=0 NCCL_SHM_DISABLE=1 NCCL_IB_DISABLE=1; .*KYBERNATE_NCCL_CHECK=off/,
    );
    await sleep(300);
    const all = await workloadStatuses(cri, id);
    assert.equal(all.length, 2);
    for (const s of all) {
      assert.equal(s.checkpoints, 0, "the driver was never asked");
      await goesOn(id, s);
    }
  });

  test("with the socket transport set: checkpointed, both ranks go on", async () => {
    const id = await ranks("nccl-socket", SAFE);
    await cri.checkpoint(id, join(scratch, "nccl.tar"), 60);
    const all = await waitAll(
      id,
      (s) => s.checkpoints === 1 && s.state === "running",
      "ranks not checkpointed",
      2,
    );
    for (const s of all) await goesOn(id, s);
  });
});

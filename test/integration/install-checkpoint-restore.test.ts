/**
 * As an operator would: `kybernate install` into a prefix (no systemd on this machine), the installed copy
 * runs as the node's daemon and the GPU-double container is checkpointed and restored through CRI; metrics,
 * GPU metadata in the archive, restore onto another GPU of the same model (device map), onto the GPU the
 * restored container is given, refusal on another model, host-RAM admission; then `kybernate uninstall` and the host tree is as before.
 */
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { createServer } from "node:net";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { promisify } from "node:util";
import { packageRoot } from "../../src/base/paths.js";
import type { MountSpec } from "../../src/cri/client.js";
import type { In, PodSandboxConfig } from "../../src/cri/types.js";
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
const UUID_A = "GPU-aaaaaaaa-1111-2222-3333-444444444444";
const UUID_B = "GPU-bbbbbbbb-1111-2222-3333-444444444444";

let node: TestNode;
let cri: TestCriClient;
let scratch: string;
let host: string;
let prefix: string;
let unitDir: string;
let doubleDir: string;
let gpusCsv: string;
let fakeSmi: string;
let metricsPort: number;
let daemon: KybernateProcess | undefined;
let hostBefore: string[];
const pods: string[] = [];

/** Every path under the fake host root with its type and size: what "the host as it was" means here. */
function tree(root: string): string[] {
  const out: string[] = [];
  const walk = (dir: string) => {
    for (const entry of readdirSync(dir, { withFileTypes: true })) {
      const path = join(dir, entry.name);
      const s = statSync(path);
      out.push(
        `${path.slice(root.length)} ${entry.isDirectory() ? "dir" : `${s.size} ${s.mode.toString(8)}`}`,
      );
      if (entry.isDirectory()) walk(path);
    }
  };
  walk(root);
  return out.sort();
}

function freePort(): Promise<number> {
  return new Promise((resolve) => {
    const server = createServer().listen(0, "127.0.0.1", () => {
      const { port } = server.address() as { port: number };
      server.close(() => resolve(port));
    });
  });
}

function setGpus(rows: string): void {
  writeFileSync(gpusCsv, rows);
}

/** The installed copy, started as a node's init system would: `<prefix>/bin/kybernate run`. */
async function startInstalled(extra: string[] = []): Promise<KybernateProcess> {
  daemon = await startKybernate({
    command: [join(prefix, "bin", "kybernate")],
    nriSocket: node.nriSocket,
    stateDir: join(scratch, "state"),
    args: [
      ...kybernateArgsForDouble(doubleDir, node),
      "--nvidia-smi",
      fakeSmi,
      "--metrics-port",
      String(metricsPort),
      "--metrics-host",
      "127.0.0.1",
      ...extra,
    ],
    env: { FAKE_CUDA_DIR: "/tmp/fake-cuda" },
    startTimeoutMs: 15_000,
  });
  return daemon;
}

async function metric(name: string, labels: string): Promise<number> {
  const text = await (await fetch(`http://127.0.0.1:${metricsPort}/metrics`)).text();
  const line = text.split("\n").find((l) => l.startsWith(`${name}{${labels}}`));
  assert.ok(line, `metric ${name}{${labels}} missing from /metrics`);
  return Number(line.split(" ").pop());
}

function gpuMounts(): MountSpec[] {
  return gpuDoubleMounts(doubleDir, join(scratch, "nvidiactl"));
}

async function newPod(name: string): Promise<{ podId: string; config: In<PodSandboxConfig> }> {
  const pod = await cri.runHostNetworkPod(`${name}-${process.pid}`, "kybernate-test");
  pods.push(pod.podId);
  return pod;
}

const statuses = (id: string): Promise<WorkloadStatus[]> => workloadStatuses(cri, id);

/** The first (only) workload process of the container, once `ok` holds for it. */
async function waitFor(
  id: string,
  ok: (s: WorkloadStatus) => boolean,
  what: string,
): Promise<WorkloadStatus> {
  const [first] = await waitForWorkload(cri, id, ([s]) => s !== undefined && ok(s), {
    what,
    kybernateLogs: () => daemon?.logs ?? [],
  });
  return first as WorkloadStatus;
}

/** The counter moves: the workload runs "on the GPU". */
async function assertRunning(id: string): Promise<WorkloadStatus> {
  const first = await waitFor(id, (s) => s.state === "running", "workload not running");
  await sleep(300);
  const later = await waitFor(id, (s) => s.counter > first.counter, "counter does not move");
  assert.equal(later.verifyFailures, 0);
  return later;
}

let containerId: string;

before(async () => {
  node = loadTestNode();
  cri = new TestCriClient(node.criSocket);
  scratch = mkdtempSync("/tmp/kyb-install-e2e-");
  host = join(scratch, "host");
  prefix = join(host, "opt", "kybernate");
  unitDir = join(host, "etc", "systemd", "system");
  mkdirSync(unitDir, { recursive: true });
  writeFileSync(join(host, "etc", "unrelated.conf"), "left alone\n");
  writeFileSync(join(scratch, "nvidiactl"), "");
  gpusCsv = join(scratch, "gpus.csv");
  fakeSmi = join(scratch, "nvidia-smi");
  // nvidia-smi as the daemon calls it: the GPU list comes from a file the test rewrites between restores.
  writeFileSync(fakeSmi, `#!/bin/sh\ncase "$*" in *--query-gpu*) cat '${gpusCsv}' ;; *) ;; esac\n`, {
    mode: 0o755,
  });
  setGpus(`0, ${UUID_A}, NVIDIA H200, 143771, 580.159.04, Enabled\n`);
  doubleDir = buildDouble();
  metricsPort = await freePort();
  hostBefore = tree(host);
  await cri.pullImage(node.image);
});

after(async () => {
  for (const podId of pods) await cri.stopAndRemovePod(podId).catch(() => undefined);
  await daemon?.stop();
  cri.close();
  rmSync(scratch, { recursive: true, force: true });
});

describe("kybernate installed by its install command", () => {
  test("install copies a self-contained runtime and explains how to start it without systemd", async () => {
    const { stdout } = await run(process.execPath, [
      join(packageRoot, "dist/src/cli/main.js"),
      "install",
      "--prefix",
      prefix,
      "--systemd-unit-dir",
      unitDir,
      "--containerd-config",
      node.configPath,
      "--containerd",
      node.bin.containerd,
    ]);
    assert.match(stdout, /systemd is not running here/);
    assert.match(stdout, new RegExp(`${prefix}/bin/kybernate run`));
    assert.match(stdout, /ok {2}\s*containerd: NRI enabled/);
    for (const file of ["bin/node", "bin/kybernate", "hooks/kybernate-criu-hook", "dist/src/hook/main.js"])
      assert.ok(statSync(join(prefix, file)).isFile(), file);
    assert.ok(statSync(join(prefix, "node_modules/@grpc/grpc-js/package.json")).isFile());
    assert.throws(() => statSync(join(prefix, "node_modules/typescript")), /ENOENT/, "dev deps left out");
    assert.match(
      readFileSync(join(unitDir, "kybernate.service"), "utf8"),
      new RegExp(`ExecStart=${prefix}/bin/kybernate run`),
    );
  });

  test("the installed copy checkpoints a GPU container; metrics count it; kybernate.json is in the archive", async () => {
    await startInstalled();
    const pod = await newPod("inst-gpu");
    containerId = await cri.createContainer(pod.podId, pod.config, {
      name: "cuda",
      image: node.image,
      command: ["/kyb/fake-cuda-workload", "--mib", "16"],
      mounts: gpuMounts(),
    });
    await cri.startContainer(containerId);
    await waitFor(containerId, (s) => s.state === "running" && s.counter > 5, "workload never started");
    const criuConf = readFileSync(join(scratch, "state", "containers", containerId, "action-script"), "utf8");
    assert.match(
      criuConf,
      new RegExp(`KYBERNATE_NODE='${prefix}/bin/node'.*exec '${prefix}/hooks/kybernate-criu-hook'`),
    );

    await cri.checkpoint(containerId, join(scratch, "a.tar"), 60);
    const after = await assertRunning(containerId);
    assert.equal(after.checkpoints, 1);
    assert.equal(await metric("kybernate_checkpoints_total", 'result="success"'), 1);
    assert.equal(await metric("kybernate_checkpoints_total", 'result="refused"'), 0);
    assert.equal(await metric("kybernate_phase_duration_seconds_count", 'phase="lock"'), 1);
    assert.equal(await metric("kybernate_phase_duration_seconds_count", 'phase="refreeze"'), 1);
    assert.equal(await metric("kybernate_processes_repaired_total", 'reason="resume"'), 1);
    const names = daemon?.logs.find(
      (l) => l.action === "pre-dump" && l.msg === "GPU state moved to host memory",
    );
    assert.equal(names?.container, "cuda");
    assert.equal(names?.pod, `kybernate-test/inst-gpu-${process.pid}`);

    const { stdout: listing } = await run("tar", ["-tf", join(scratch, "a.tar")]);
    assert.match(listing, /^checkpoint\/kybernate\.json$/m, "kybernate.json travels in the CRI archive");
    const { stdout: meta } = await run("tar", ["-xOf", join(scratch, "a.tar"), "checkpoint/kybernate.json"]);
    const metadata = JSON.parse(meta) as {
      gpus: Array<{ uuid: string; name: string }>;
      driverVersion: string;
    };
    assert.deepEqual(metadata.gpus, [{ uuid: UUID_A, name: "NVIDIA H200", memoryMiB: 143771 }]);
    assert.equal(metadata.driverVersion, "580.159.04");
  });

  test("restore onto another GPU of the same model uses the UUID device map", async () => {
    setGpus(`0, ${UUID_B}, NVIDIA H200, 143771, 580.159.04, Enabled\n`);
    const pod = await newPod("inst-remap");
    const id = await cri.restoreFromArchive(pod.podId, pod.config, join(scratch, "a.tar"), "cuda", {
      mounts: gpuMounts(),
    });
    await cri.startContainer(id);
    const status = await assertRunning(id);
    const plan = daemon?.logs.filter(
      (l) => l.containerId === id && (l.msg === "GPU restore plan" || l.error),
    );
    assert.equal(status.lastDevicePairs, 1, `the driver got one old→new GPU pair; ${JSON.stringify(plan)}`);
    assert.equal(await metric("kybernate_restores_total", 'result="success"'), 1);
  });

  test("restore into a container given another of the node's GPUs: mapped onto that GPU, though the old one is there", async () => {
    // Both GPUs on the node; the restored container asks for B only (the NVIDIA toolkit's variable, as the
    // device plugin sets it). Restoring onto A would put the workload on a GPU it was not given.
    setGpus(
      `0, ${UUID_A}, NVIDIA H200, 143771, 580.159.04, Enabled\n1, ${UUID_B}, NVIDIA H200, 143771, 580.159.04, Enabled\n`,
    );
    const pod = await newPod("inst-given");
    const id = await cri.restoreFromArchive(pod.podId, pod.config, join(scratch, "a.tar"), "cuda", {
      mounts: gpuMounts(),
      env: { NVIDIA_VISIBLE_DEVICES: UUID_B },
    });
    await cri.startContainer(id);
    const status = await assertRunning(id);
    const plan = daemon?.logs.find((l) => l.containerId === id && l.msg === "GPU restore plan");
    assert.equal(plan?.containerGpus, `NVIDIA_VISIBLE_DEVICES=${UUID_B}`);
    assert.deepEqual((plan?.plan as { deviceMap?: unknown } | undefined)?.deviceMap, [
      { from: UUID_A, to: UUID_B },
    ]);
    assert.equal(status.lastDevicePairs, 1, "the driver got the pair A→B");
    assert.equal(await metric("kybernate_restores_total", 'result="success"'), 2);
    setGpus(`0, ${UUID_A}, NVIDIA H200, 143771, 580.159.04, Enabled\n`);
  });

  test("restore onto another GPU model is refused at pre-restore: StartContainer fails, nothing is restored", async () => {
    setGpus(`0, ${UUID_B}, NVIDIA A100-SXM4-80GB, 81920, 580.159.04, Enabled\n`);
    const pod = await newPod("inst-refused");
    const id = await cri.restoreFromArchive(pod.podId, pod.config, join(scratch, "a.tar"), "cuda", {
      mounts: gpuMounts(),
    });
    await assert.rejects(cri.startContainer(id), /criu failed|restore/i);
    await daemon
      ?.waitForLog((l) => l.containerId === id && /refusing to restore/.test(String(l.error)), {
        timeoutMs: 10_000,
      })
      .catch((error: Error) => assert.fail(`no refusal logged: ${error.message}`));
    const refusal = daemon?.logs.find((l) => l.containerId === id && l.error);
    assert.match(String(refusal?.error), /NVIDIA H200.*no free GPU of model "NVIDIA H200".*NVIDIA A100/);
    assert.match(String(refusal?.error), /nothing was restored/);
    assert.notEqual((await cri.containerStatus(id)).status?.state, "CONTAINER_RUNNING");
    assert.equal(await metric("kybernate_restores_total", 'result="refused"'), 1);
    setGpus(`0, ${UUID_A}, NVIDIA H200, 143771, 580.159.04, Enabled\n`);
  });

  test("host-RAM admission refuses a checkpoint whose VRAM does not fit; the workload keeps running", async () => {
    await daemon?.stop();
    // 1 PiB per process: more than any MemAvailable.
    await startInstalled(["--vram-estimate-mib", String(1024 ** 3)]);
    const before = await statuses(containerId);
    await assert.rejects(cri.checkpoint(containerId, join(scratch, "refused.tar"), 60));
    const refusal = daemon?.logs.find((l) => /host-RAM admission refused/.test(String(l.error)));
    assert.match(String(refusal?.error), /MemAvailable is \d+ MiB/);
    const status = await assertRunning(containerId);
    assert.equal(status.checkpoints, before[0]?.checkpoints, "the driver was never asked to checkpoint");
    assert.equal(await metric("kybernate_checkpoints_total", 'result="refused"'), 1);
    await daemon?.stop();
    daemon = undefined;
  });

  test("uninstall removes exactly what install added: the host tree is as before", async () => {
    const { stdout } = await run(process.execPath, [
      join(packageRoot, "dist/src/cli/main.js"),
      "uninstall",
      "--prefix",
      prefix,
    ]);
    assert.match(stdout, /removed \d+ files/);
    assert.deepEqual(tree(host), hostBefore);
  });
});

import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { join } from "node:path";
import { after, test } from "node:test";
import { promisify } from "node:util";
import { packageRoot } from "../../src/base/paths.js";
import { gpuTarget } from "../../src/cli/commands/gpu.js";
import { CriClient } from "../../src/cri/client.js";
import { startFakeRuntime } from "../cri/fake-cri-runtime.js";
import { cleanupScratch, fakeTool, startWorkload, type Workload } from "../gpu/double/harness.js";
import { container, POD_A, pod } from "./fixtures.js";

const noCri = () => assert.fail("CRI must not be asked");
const workloads: Workload[] = [];
after(async () => {
  await Promise.all(workloads.map((w) => w.stop()));
  cleanupScratch();
});

test("exactly one of --pid, --container, --cgroup", async () => {
  await assert.rejects(
    gpuTarget({}, noCri),
    /name the processes: --pid N… , --container ID .* or --cgroup PATH/,
  );
  await assert.rejects(gpuTarget({ pid: [1], cgroup: "/x" }, noCri), /give only one of --pid, --cgroup/);
  await assert.rejects(gpuTarget({ pid: [0, 12] }, noCri), /--pid takes positive process ids, got 0/);
  assert.deepEqual(await gpuTarget({ pid: [12, 13] }, noCri), { pids: [12, 13] });
  assert.deepEqual(await gpuTarget({ cgroup: "/kubepods/x" }, noCri), { cgroup: "/kubepods/x" });
});

test("--container resolves through CRI (name or id prefix) to the container's init pid", async () => {
  const id = "abc0000000000000000000000000000000000000000000000000000000000001";
  const rt = await startFakeRuntime({
    ListContainers: { containers: [container(id, "trainer", POD_A)] },
    ListPodSandbox: { items: [pod(POD_A, "jobs", "ml")] },
    ContainerStatus: { status: { id, state: "CONTAINER_RUNNING" }, info: { info: '{"pid":31337}' } },
  });
  const cri = new CriClient(rt.socket);
  try {
    assert.deepEqual(await gpuTarget({ container: "trainer" }, () => cri), { initPid: 31337 });
    assert.deepEqual(await gpuTarget({ container: "abc" }, () => cri), { initPid: 31337 });
    await assert.rejects(
      gpuTarget({ container: "nope" }, () => cri),
      /no container named "nope"/,
    );
  } finally {
    cri.close();
    await rt.stop();
  }
});

test("the CLI: kybernate gpu state --pid with the binary backend prints each state and exits 0", async () => {
  const w = await startWorkload({ procs: 2 });
  workloads.push(w);
  const { stdout } = await promisify(execFile)(
    process.execPath,
    [
      join(packageRoot, "dist/src/cli/main.js"),
      "gpu",
      "state",
      "--pid",
      ...w.pids.map(String),
      "--gpu-backend",
      "binary",
      "--cuda-checkpoint",
      fakeTool(),
    ],
    { env: process.env },
  );
  assert.equal(stdout, w.pids.map((p) => `${p}\tRUNNING\n`).join(""));
  const bad = await promisify(execFile)(process.execPath, [
    join(packageRoot, "dist/src/cli/main.js"),
    "gpu",
    "state",
  ]).catch((e: { code: number; stderr: string }) => e);
  assert.equal((bad as { code: number }).code, 2);
  assert.match((bad as { stderr: string }).stderr, /kybernate gpu: name the processes/);
});

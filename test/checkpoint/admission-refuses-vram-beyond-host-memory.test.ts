import assert from "node:assert/strict";
import { test } from "node:test";
import { silentLogger } from "../../src/base/log.js";
import { computeAppsEstimator, decideAdmission, fixedEstimator } from "../../src/checkpoint/admission.js";
import { NodePolicy } from "../../src/checkpoint/policy.js";

const MiB = 1024 * 1024;
const GiB = 1024 * MiB;

test("VRAM + headroom beyond MemAvailable: refused, naming the numbers and the fix", () => {
  const verdict = decideAdmission({
    containerId: "c1",
    estimate: { bytes: 40 * GiB, perPid: [], source: "nvidia-smi --query-compute-apps" },
    memAvailable: 32 * GiB,
    headroom: GiB,
  });
  assert.equal(verdict.ok, false);
  assert.match(
    verdict.ok ? "" : verdict.error,
    /40960 MiB of VRAM.*MemAvailable is 32768 MiB.*keeps 1024 MiB free.*keeps running untouched.*Free host memory/,
  );
});

test("fits: admitted; unknown VRAM: admitted with a note saying how to check anyway", () => {
  assert.deepEqual(
    decideAdmission({
      containerId: "c1",
      estimate: { bytes: GiB, perPid: [], source: "x" },
      memAvailable: 8 * GiB,
      headroom: GiB,
    }),
    { ok: true },
  );
  const unknown = decideAdmission({
    containerId: "c1",
    estimate: { perPid: [], source: "nvidia-smi (no data)" },
    memAvailable: GiB,
    headroom: GiB,
  });
  assert.equal(unknown.ok, true);
  assert.match(unknown.ok ? (unknown.note ?? "") : "", /--vram-estimate-mib/);
});

test("estimators: nvidia-smi's per-pid numbers (other pids ignored) and a fixed one", async () => {
  const probe = {
    inventory: async () => ({ gpus: [] }),
    computeApps: async () => [
      { pid: 10, gpuUuid: "GPU-a", usedBytes: 100 * MiB },
      { pid: 10, gpuUuid: "GPU-b", usedBytes: 50 * MiB },
      { pid: 99, gpuUuid: "GPU-a", usedBytes: 999 * MiB },
    ],
  };
  const est = await computeAppsEstimator()([10, 11], await probe.computeApps());
  assert.equal(est.bytes, 150 * MiB);
  assert.deepEqual(est.perPid, [{ pid: 10, bytes: 150 * MiB }, { pid: 11 }]);
  assert.equal((await fixedEstimator(MiB)([1, 2, 3], [])).bytes, 3 * MiB);
});

test("NodeOps.admit with an injected estimate above MemAvailable refuses; admission off admits", async () => {
  const options = {
    probe: { inventory: async () => ({ gpus: [] }), computeApps: async () => [] },
    version: "0.1.0",
    log: silentLogger,
    estimator: fixedEstimator(10 * GiB),
    memAvailable: async () => 4 * GiB,
  };
  const ctx = { containerId: "c1", pids: [process.pid], memoryLevels: async () => [] };
  const on = await new NodePolicy({ ...options, admission: { enabled: true, headroomBytes: GiB } }).admit(
    ctx,
  );
  assert.equal(on.verdict.ok, false);
  const off = await new NodePolicy({ ...options, admission: { enabled: false, headroomBytes: GiB } }).admit(
    ctx,
  );
  assert.equal(off.verdict.ok, true);
});

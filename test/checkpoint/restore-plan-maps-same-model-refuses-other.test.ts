import assert from "node:assert/strict";
import { test } from "node:test";
import { buildMetadata, type CheckpointMetadata } from "../../src/checkpoint/metadata.js";
import { planRestore } from "../../src/checkpoint/restore-plan.js";
import type { GpuInventory } from "../../src/host/nvidia-smi.js";

const A = "GPU-aaaaaaaa-0000-0000-0000-000000000000";
const B = "GPU-bbbbbbbb-0000-0000-0000-000000000000";
const C = "GPU-cccccccc-0000-0000-0000-000000000000";
const h200 = (index: number, uuid: string) => ({ index, uuid, name: "NVIDIA H200", memoryMiB: 143771 });

function checkpointOn(uuids: string[], name = "NVIDIA H200"): CheckpointMetadata {
  return buildMetadata({
    version: "0.1.0",
    containerId: "c1",
    inventory: { driverVersion: "580.159.04", gpus: uuids.map((u, i) => ({ ...h200(i, u), name })) },
    apps: uuids.map((u) => ({ pid: 42, gpuUuid: u, usedBytes: 1 << 30 })),
    pids: [42],
  });
}

const node = (gpus: GpuInventory["gpus"], driverVersion = "580.159.04"): GpuInventory => ({
  driverVersion,
  gpus,
});

test("same GPU: restore as is, no device map", () => {
  const plan = planRestore(checkpointOn([A]), node([h200(0, A), h200(1, B)]));
  assert.deepEqual(plan, { ok: true, deviceMap: [], reason: "same GPUs as at checkpoint" });
});

test("another GPU of the same model: every checkpointed UUID mapped, kept ones to themselves", () => {
  const plan = planRestore(checkpointOn([A, B]), node([h200(0, C), h200(1, B)]));
  assert.equal(plan.ok, true);
  assert.deepEqual(plan.ok && plan.deviceMap, [
    { from: B, to: B },
    { from: A, to: C },
  ]);
});

test("another model: refused, naming both models and the fix", () => {
  const plan = planRestore(
    checkpointOn([A]),
    node([{ index: 0, uuid: B, name: "NVIDIA A100", memoryMiB: 81920 }]),
  );
  assert.equal(plan.ok, false);
  assert.match(
    plan.ok ? "" : plan.error,
    /NVIDIA H200 GPU-aaaa.*no free GPU of model "NVIDIA H200".*NVIDIA A100.*restore on a node with 1× NVIDIA H200/,
  );
});

test("fewer GPUs than at checkpoint: refused", () => {
  const plan = planRestore(checkpointOn([A, B]), node([h200(0, C)]));
  assert.equal(plan.ok, false);
});

test("a remap on a driver without device maps (< 580): refused with the upgrade to do", () => {
  const plan = planRestore(checkpointOn([A]), node([h200(0, B)], "575.51.03"));
  assert.equal(plan.ok, false);
  assert.match(plan.ok ? "" : plan.error, /driver 575\.51\.03 lacks.*upgrade the driver to 580/);
});

test("no metadata, or unknown node GPUs: restore without a check, saying so", () => {
  assert.equal(planRestore(undefined, node([h200(0, A)])).ok, true);
  const unknown = planRestore(checkpointOn([A]), { gpus: [], error: "nvidia-smi failed: not found" });
  assert.equal(unknown.ok, true);
  assert.match(unknown.ok ? unknown.reason : "", /unknown \(nvidia-smi failed: not found\)/);
});

test("metadata records only the GPUs the container's processes used, with their VRAM", () => {
  const m = buildMetadata({
    version: "0.1.0",
    containerId: "c1",
    pod: "ns/p",
    container: "cuda",
    inventory: node([h200(0, A), h200(1, B)]),
    apps: [
      { pid: 42, gpuUuid: B, usedBytes: 2 << 30 },
      { pid: 7, gpuUuid: A, usedBytes: 1 << 30 },
    ],
    pids: [42],
    now: new Date(0),
  });
  assert.deepEqual(
    m.gpus.map((g) => g.uuid),
    [B],
  );
  assert.deepEqual(m.processes, [{ pid: 42, gpuUuids: [B], vramBytes: 2 << 30 }]);
  assert.equal(m.driverVersion, "580.159.04");
});

test("metadata names every GPU the processes held open, also those they did not compute on", () => {
  const m = buildMetadata({
    version: "0.1.0",
    containerId: "c1",
    inventory: node([h200(0, A), h200(1, B), h200(2, C)]),
    apps: [{ pid: 42, gpuUuid: A, usedBytes: 2 << 30 }],
    pids: [42],
    opened: [h200(0, A), h200(1, B)],
  });
  assert.deepEqual(
    m.gpus.map((g) => g.uuid),
    [A, B],
  );
  assert.deepEqual(m.processes, [{ pid: 42, gpuUuids: [A], vramBytes: 2 << 30 }]);
});

test("restored container given another GPU of the node: mapped onto the container's GPU, not kept on the old one", () => {
  // The node still has A, but the restored container was given only B (its /dev/nvidia node).
  const nodeGpus = node([h200(0, A), h200(1, B)]);
  const plan = planRestore(checkpointOn([A]), nodeGpus, {
    gpus: [h200(1, B)],
    source: "devices /dev/nvidia1",
  });
  assert.deepEqual(plan, {
    ok: true,
    deviceMap: [{ from: A, to: B }],
    reason: `other GPUs of the same model: ${A}→${B}`,
  });
  const same = planRestore(checkpointOn([A]), nodeGpus, {
    gpus: [h200(0, A)],
    source: "devices /dev/nvidia0",
  });
  assert.deepEqual(same, { ok: true, deviceMap: [], reason: "same GPUs as at checkpoint" });
});

test("restored container given fewer GPUs than were checkpointed, or a GPU request that cannot be met: refused", () => {
  const nodeGpus = node([h200(0, A), h200(1, B), h200(2, C)]);
  const fewer = planRestore(checkpointOn([A, B]), nodeGpus, {
    gpus: [h200(2, C)],
    source: "devices /dev/nvidia2",
  });
  assert.equal(fewer.ok, false);
  assert.match(
    fewer.ok ? "" : fewer.error,
    /taken with 2 GPU\(s\).*the restored container \(devices \/dev\/nvidia2\) has 1.*give the container 2× NVIDIA H200/,
  );
  const bad = planRestore(checkpointOn([A]), nodeGpus, {
    error: "NVIDIA_VISIBLE_DEVICES names 7, which is no GPU of this node",
  });
  assert.equal(bad.ok, false);
  assert.match(
    bad.ok ? "" : bad.error,
    /NVIDIA_VISIBLE_DEVICES names 7.*fix the restored container's GPU request/,
  );
});

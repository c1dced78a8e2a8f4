/**
 * A container that held two GPUs: the restore plan onto the same two (no map), onto two others (a pair for
 * each), onto the two swapped (only through the pod's explicit kybernate.io/device-map, checked), and onto one
 * (refused before anything is restored).
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import { DEVICE_MAP_ANNOTATION, gpuRequestOf, resolveGpuRequest } from "../../src/checkpoint/gpu-request.js";
import { buildMetadata, type CheckpointMetadata } from "../../src/checkpoint/metadata.js";
import { planRestore, type RestorePlan } from "../../src/checkpoint/restore-plan.js";
import type { GpuInfo, GpuInventory } from "../../src/host/nvidia-smi.js";

const A = "GPU-aaaaaaaa-0000-0000-0000-000000000000";
const B = "GPU-bbbbbbbb-0000-0000-0000-000000000000";
const C = "GPU-cccccccc-0000-0000-0000-000000000000";
const D = "GPU-dddddddd-0000-0000-0000-000000000000";
const gpu = (index: number, uuid: string, name = "NVIDIA H200"): GpuInfo => ({
  index,
  uuid,
  name,
  memoryMiB: 143771,
  minor: index,
});
const node = (...gpus: GpuInfo[]): GpuInventory => ({ driverVersion: "580.159.04", gpus });

/** One process that held A and B open (a peer-access workload), on a node with a third GPU it did not use. */
const twoGpuCheckpoint: CheckpointMetadata = buildMetadata({
  version: "0.1.0",
  containerId: "c2",
  inventory: node(gpu(0, A), gpu(1, B), gpu(2, C)),
  apps: [
    { pid: 42, gpuUuid: A, usedBytes: 2 << 30 },
    { pid: 42, gpuUuid: B, usedBytes: 1 << 30 },
  ],
  pids: [42],
  opened: [gpu(0, A), gpu(1, B)],
});

const okMap = (plan: RestorePlan) => {
  assert.equal(plan.ok, true, plan.ok ? "" : plan.error);
  return plan.ok ? plan.deviceMap : [];
};
const refusal = (plan: RestorePlan): string => {
  assert.equal(plan.ok, false, `expected a refusal, got ${JSON.stringify(plan)}`);
  return plan.ok ? "" : plan.error;
};

test("the metadata of a two-GPU container lists both GPUs it held, not the node's third", () => {
  assert.deepEqual(
    twoGpuCheckpoint.gpus.map((g) => g.uuid),
    [A, B],
  );
  assert.deepEqual(twoGpuCheckpoint.processes, [{ pid: 42, gpuUuids: [A, B], vramBytes: 3 << 30 }]);
});

test("restored onto the same two GPUs: no map, whatever order the container lists them in", () => {
  const onNode = node(gpu(0, A), gpu(1, B));
  assert.deepEqual(okMap(planRestore(twoGpuCheckpoint, onNode)), []);
  // CUDA enumerates the GPUs it can open in its own order: "1,0" is the same two GPUs, restored as they were.
  const reversed = resolveGpuRequest({ minors: [], visibleDevices: "1,0" }, onNode.gpus);
  assert.deepEqual(okMap(planRestore(twoGpuCheckpoint, onNode, reversed)), []);
  const byNodes = resolveGpuRequest({ minors: [1, 0] }, onNode.gpus);
  assert.deepEqual(okMap(planRestore(twoGpuCheckpoint, onNode, byNodes)), []);
});

test("restored onto two other GPUs of the model: a pair for each, in order", () => {
  assert.deepEqual(okMap(planRestore(twoGpuCheckpoint, node(gpu(0, C), gpu(1, D)))), [
    { from: A, to: C },
    { from: B, to: D },
  ]);
  // The node still has A and B; the container was given C and D.
  const onNode = node(gpu(0, A), gpu(1, B), gpu(2, C), gpu(3, D));
  const given = resolveGpuRequest({ minors: [3, 2] }, onNode.gpus);
  assert.deepEqual(okMap(planRestore(twoGpuCheckpoint, onNode, given)), [
    { from: A, to: C },
    { from: B, to: D },
  ]);
  // One kept, one moved: the kept one is still named (the driver needs every checkpointed GPU in the map).
  const partly = resolveGpuRequest({ minors: [1, 2] }, onNode.gpus);
  assert.deepEqual(okMap(planRestore(twoGpuCheckpoint, onNode, partly)), [
    { from: B, to: B },
    { from: A, to: C },
  ]);
});

test("restored onto the two swapped: the pod's explicit map, both pairs", () => {
  const onNode = node(gpu(0, A), gpu(1, B));
  const plan = planRestore(twoGpuCheckpoint, onNode, undefined, `${A}=${B},${B}=${A}`);
  assert.deepEqual(plan, {
    ok: true,
    deviceMap: [
      { from: A, to: B },
      { from: B, to: A },
    ],
    reason: `${DEVICE_MAP_ANNOTATION}: ${A}→${B}, ${B}→${A}`,
  });
  // Spaces and upper case are the user's; the map the driver gets names the UUIDs as nvidia-smi does.
  const loose = planRestore(twoGpuCheckpoint, onNode, undefined, ` ${B.toUpperCase()} = ${A} , ${A}=${B} `);
  assert.deepEqual(okMap(loose), [
    { from: A, to: B },
    { from: B, to: A },
  ]);
  const identity = planRestore(twoGpuCheckpoint, onNode, undefined, `${A}=${A},${B}=${B}`);
  assert.deepEqual(identity, {
    ok: true,
    deviceMap: [],
    reason: `${DEVICE_MAP_ANNOTATION} names the same GPUs as at checkpoint`,
  });
});

test("restored into a container given one GPU: refused before anything is restored, with or without a map", () => {
  const onNode = node(gpu(0, A), gpu(1, B));
  const one = resolveGpuRequest({ minors: [], visibleDevices: "1" }, onNode.gpus);
  assert.match(
    refusal(planRestore(twoGpuCheckpoint, onNode, one)),
    /taken with 2 GPU\(s\).*has 1 .*give the container 2× NVIDIA H200/,
  );
  assert.match(
    refusal(planRestore(twoGpuCheckpoint, onNode, one, `${A}=${B},${B}=${B}`)),
    /maps two GPUs onto GPU-bbbb/,
  );
  assert.match(
    refusal(planRestore(twoGpuCheckpoint, onNode, one, `${A}=${A},${B}=${B}`)),
    /maps GPU-aaaa\S* onto GPU-aaaa\S*, which is not one of the restored container \(NVIDIA_VISIBLE_DEVICES=1\)'s GPUs/,
  );
});

test("an explicit map is refused when it does not fit the checkpoint, the container or the driver", () => {
  const onNode = node(gpu(0, A), gpu(1, B), gpu(2, C));
  const cases: Array<[string, RegExp]> = [
    [`${A}=${B}`, /leaves out GPU-bbbb.*names every GPU the processes held open/],
    [`${A}=${B},${B}=${A},${C}=${C}`, /names GPU-cccc\S*, which is no GPU of the checkpoint/],
    [`${A}=${B},${A}=${C}`, /names GPU-aaaa\S* twice/],
    [`${A}=${B},${B}`, /entry that is not OLD_UUID=NEW_UUID \(GPU-bbbb/],
    [`0=1,1=0`, /entry that is not OLD_UUID=NEW_UUID \(0=1\)/],
    [" , ", /is empty/],
    [`${A}=${D},${B}=${A}`, /onto GPU-dddd\S*, which is not one of this node's GPUs/],
  ];
  for (const [text, want] of cases) {
    const error = refusal(planRestore(twoGpuCheckpoint, onNode, undefined, text));
    assert.match(error, want, text);
    assert.match(error, /write it as OLD=NEW,… with one pair for each GPU of the checkpoint/);
  }
  const mixed = node(gpu(0, A), { ...gpu(1, C), name: "NVIDIA H100 80GB HBM3" }, gpu(2, B));
  assert.match(
    refusal(planRestore(twoGpuCheckpoint, mixed, undefined, `${A}=${C},${B}=${A}`)),
    /\(NVIDIA H200\) onto GPU-cccc\S* \(NVIDIA H100 80GB HBM3\): the driver restores only onto the same GPU model/,
  );
  assert.match(
    refusal(
      planRestore(
        twoGpuCheckpoint,
        { ...node(gpu(0, A), gpu(1, B)), driverVersion: "575.57.08" },
        undefined,
        `${A}=${B},${B}=${A}`,
      ),
    ),
    /driver 575\.57\.08 lacks.*upgrade the driver to 580/,
  );
});

test("a map that cannot be checked is refused, not applied blind", () => {
  assert.match(
    refusal(planRestore(undefined, node(gpu(0, A)), undefined, `${A}=${A}`)),
    /cannot be checked: the checkpoint records no GPU/,
  );
  assert.match(
    refusal(
      planRestore(
        twoGpuCheckpoint,
        { gpus: [], error: "nvidia-smi failed: not found" },
        undefined,
        `${A}=${B},${B}=${A}`,
      ),
    ),
    /cannot be checked: this node's GPUs are unknown \(nvidia-smi failed: not found\)/,
  );
});

test("the device map comes from the pod's annotation, not the container's", () => {
  assert.deepEqual(gpuRequestOf([], [], { [DEVICE_MAP_ANNOTATION]: `${A}=${B},${B}=${A}`, other: "x" }), {
    minors: [],
    deviceMap: `${A}=${B},${B}=${A}`,
  });
  assert.deepEqual(gpuRequestOf([], []), { minors: [] });
});

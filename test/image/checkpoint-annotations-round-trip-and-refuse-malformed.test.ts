import assert from "node:assert/strict";
import { test } from "node:test";
import {
  CRIO_CHECKPOINT_NAME,
  CRIU_CHECKPOINT_NAME,
  checkpointAnnotations,
  K,
  readCheckpointAnnotations,
} from "../../src/image/checkpoint-annotations.js";

const A = "GPU-aaaaaaaa-1111-2222-3333-444444444444";
const B = "GPU-bbbbbbbb-1111-2222-3333-444444444444";

function built(): Record<string, string> {
  return checkpointAnnotations({
    containerName: "worker",
    pod: "ml/trainer",
    kybernateVersion: "0.1.0",
    gpus: [
      { uuid: A, name: "NVIDIA H200", memoryMiB: 143771 },
      { uuid: B, name: "NVIDIA H200", memoryMiB: 143771 },
    ],
    driverVersion: "580.159.04",
    vramBytes: 4 * 2 ** 30,
    rootfsImage: "localhost:5555/kybernate/busybox:1",
    created: "2026-12-01T00:00:00.000Z",
  });
}

test("both runtimes' checkpoint keys and kybernate's GPU metadata", () => {
  const a = built();
  assert.equal(a[CRIU_CHECKPOINT_NAME], "worker");
  assert.equal(a[CRIO_CHECKPOINT_NAME], "worker");
  assert.equal(a[K.gpuCount], "2");
  assert.equal(a[K.gpuModels], "NVIDIA H200,NVIDIA H200");
  assert.equal(a[K.gpuUuids], `${A},${B}`);
  assert.equal(a[K.driver], "580.159.04");
  assert.equal(a[K.vramBytes], String(4 * 2 ** 30));
  assert.equal(a["org.criu.checkpoint.pod.namespace"], "ml");
});

test("read back, they give the same GPUs", () => {
  const info = readCheckpointAnnotations(built());
  assert.deepEqual(info, {
    containerName: "worker",
    pod: "ml/trainer",
    kybernateVersion: "0.1.0",
    gpus: [
      { uuid: A, name: "NVIDIA H200", memoryMiB: 143771 },
      { uuid: B, name: "NVIDIA H200", memoryMiB: 143771 },
    ],
    driverVersion: "580.159.04",
    vramBytes: 4 * 2 ** 30,
  });
});

test("a checkpoint without GPU state says 0 GPUs and lists none", () => {
  const a = checkpointAnnotations({ containerName: "c", gpus: [], created: "x" });
  assert.equal(a[K.gpuCount], "0");
  assert.equal(a[K.gpuUuids], undefined);
  assert.deepEqual(readCheckpointAnnotations(a).gpus, []);
});

test("missing or malformed metadata is refused, naming the annotation and never quoting its value", () => {
  const cases: Array<[string, (a: Record<string, string>) => void, RegExp]> = [
    [
      "not a checkpoint image",
      (a) => delete a[CRIU_CHECKPOINT_NAME],
      /no org\.criu\.checkpoint\.container\.name annotation: it is not a checkpoint image/,
    ],
    [
      "no kybernate metadata",
      (a) => delete a[K.schema],
      /kybernate GPU metadata is missing .*kybernate image build/,
    ],
    ["newer schema", (a) => (a[K.schema] = "2"), /is not 1: built by a newer kybernate/],
    ["two names", (a) => (a[CRIO_CHECKPOINT_NAME] = "other"), /name different containers/],
    ["bad count", (a) => (a[K.gpuCount] = "two"), /gpu-count is missing or not a whole number/],
    [
      "count mismatch",
      (a) => (a[K.gpuCount] = "3"),
      /gpu-uuids lists 2 entries, kybernate\.io\/gpu-count says 3/,
    ],
    [
      "bad uuid",
      (a) => (a[K.gpuUuids] = `${A},GPU-<script>`),
      /entry 2 of annotation kybernate\.io\/gpu-uuids is not a GPU UUID/,
    ],
    ["same GPU twice", (a) => (a[K.gpuUuids] = `${A},${A}`), /names a GPU twice/],
    [
      "bad model",
      (a) => (a[K.gpuModels] = "NVIDIA H200,$(rm -rf /)"),
      /entry 2 of annotation kybernate\.io\/gpu-models/,
    ],
    ["bad driver", (a) => (a[K.driver] = "latest"), /driver-version is not a driver version/],
    ["bad vram", (a) => (a[K.vramBytes] = "-1"), /vram-bytes is not a whole number of bytes/],
  ];
  for (const [what, spoil, expected] of cases) {
    const a = built();
    spoil(a);
    assert.throws(
      () => readCheckpointAnnotations(a),
      (e: Error) => {
        assert.match(e.message, expected, what);
        assert.doesNotMatch(e.message, /script|rm -rf|latest/, `${what}: the value is not quoted`);
        return true;
      },
    );
  }
});

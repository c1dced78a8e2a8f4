import assert from "node:assert/strict";
import { test } from "node:test";
import { parse } from "yaml";
import type { CheckpointPushResult } from "../../src/cli/commands/checkpoint.js";
import { podSpecFragment } from "../../src/cli/commands/migrate.js";
import { checkpointAnnotations, RESTORE_SPEC_LABEL } from "../../src/image/checkpoint-annotations.js";

const UUID = "GPU-aaaaaaaa-1111-2222-3333-444444444444";

function pushed(gpus = 1): CheckpointPushResult {
  const annotations = checkpointAnnotations({
    containerName: "worker",
    pod: "ml/trainer",
    gpus: Array.from({ length: gpus }, (_, i) => ({
      uuid: UUID.replace("aaaaaaaa", `aaaaaaa${i}`),
      name: "NVIDIA H200",
    })),
    driverVersion: "580.159.04",
    vramBytes: 4 * 2 ** 30,
    created: "2026-12-01T00:00:00Z",
  });
  const spec = {
    containerName: "worker",
    mounts: [
      { containerPath: "/dev/termination-log", hostPath: "/var/lib/kubelet/pods/u/containers/worker/1" },
      { containerPath: "/data", hostPath: "/srv/data" },
    ],
  };
  return {
    containerId: "c",
    name: "worker",
    pod: "ml/trainer",
    path: "/tmp/x.tar",
    sizeBytes: 1,
    ms: 1,
    archiveKept: false,
    image: {
      reference: "registry.example:5000/ml/trainer-ckpt:1",
      manifestDigest: `sha256:${"e".repeat(64)}`,
      manifest: {
        schemaVersion: 2,
        mediaType: "application/vnd.oci.image.manifest.v1+json",
        config: { mediaType: "", digest: "", size: 0 },
        layers: [],
        annotations,
      },
      config: {
        architecture: "amd64",
        os: "linux",
        rootfs: { type: "layers", diff_ids: [] },
        config: { Labels: { [RESTORE_SPEC_LABEL]: JSON.stringify(spec) } },
      },
      layer: { mediaType: "", digest: "", size: 0, diffId: "" },
      archiveBytes: 1,
      ms: 1,
    },
  };
}

test("the fragment is a pod: the image by digest, the GPU request, the checkpoint's annotations, the GPU model", () => {
  const text = podSpecFragment(pushed(2));
  const pod = parse(text);
  const image = `registry.example:5000/ml/trainer-ckpt:1@sha256:${"e".repeat(64)}`;
  assert.equal(pod.kind, "Pod");
  assert.equal(pod.metadata.namespace, "ml");
  assert.equal(pod.metadata.annotations["kybernate.io/checkpoint-image"], image);
  assert.equal(pod.metadata.annotations["kybernate.io/gpu-count"], "2");
  assert.equal(pod.metadata.annotations["kybernate.io/driver-version"], "580.159.04");
  assert.deepEqual(pod.spec.containers, [
    { name: "worker", image, resources: { limits: { "nvidia.com/gpu": 2 } } },
  ]);
  assert.deepEqual(pod.spec.nodeSelector, { "nvidia.com/gpu.product": "NVIDIA-H200" });
  assert.match(
    text,
    /# The container must have a mount at each path the checkpointed one had: \/data, \/dev\/termination-log/,
  );
  assert.match(text, /2× NVIDIA H200/);
});

test("a checkpoint without GPU state asks for no GPU", () => {
  const pod = parse(podSpecFragment(pushed(0)));
  assert.equal(pod.spec.containers[0].resources, undefined);
  assert.equal(pod.spec.nodeSelector, undefined);
});

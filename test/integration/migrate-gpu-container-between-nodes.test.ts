/**
 * Pod migration on two test nodes of one machine (node A: the test node; node B: test/node/up-b.sh), each with
 * its own containerd and kybernate and a GPU double whose GPUs have other UUIDs of the same model. A GPU container
 * on A is checkpointed and its checkpoint image pushed to the registry both nodes share (`kybernate checkpoint
 * --push`), then restored from the registry on B (the CLI, and CRI CreateContainer as the kubelet sends it) onto
 * B's GPU through the device map, and on A; A's container keeps running. Hostile or damaged images are refused
 * before anything is restored.
 */
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { packageRoot } from "../../src/base/paths.js";
import { K } from "../../src/image/checkpoint-annotations.js";
import { type ImageManifest, MEDIA_TYPE } from "../../src/image/oci.js";
import { RegistryClient } from "../../src/image/registry.js";
import { buildDouble } from "../gpu/double/harness.js";
import { checkImageBlobs, checkLayout } from "../image/oci-checks.js";
import { type FakeGpus, fakeGpus, UUID_A, UUID_B } from "../support/fake-gpus.js";
import {
  gpuDoubleMounts,
  kybernateArgsForDouble,
  type WorkloadStatus,
  waitForWorkload,
  workloadStatuses,
} from "../support/gpu-double-container.js";
import { createKubeletContainer, runKubeletPod } from "../support/kubelet-pod.js";
import { type KybernateProcess, startKybernate } from "../support/kybernate-process.js";
import { TestCriClient } from "../support/test-cri-client.js";
import { loadTestNode, loadTestNodeB, type TestNode } from "../support/testnode.js";

interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

const suffix = randomBytes(3).toString("hex");
const NS = "kybernate-test";
let scratch: string;
let doubleDir: string;
let nodeA: TestNode;
let nodeB: TestNode;
let criA: TestCriClient;
let criB: TestCriClient;
let gpusA: FakeGpus;
let gpusB: FakeGpus;
let kybA: KybernateProcess;
let kybB: KybernateProcess;
let sourceId: string;
let counterAtCheckpoint = 0;
const repo = `kybernate-test/migrate-${suffix}`;
const ref = (tag: string) => `localhost:${nodeA.registry.split(":")[1]}/${repo}:${tag}`;

function kybernate(args: string[], timeoutMs = 180_000): Promise<Run> {
  return new Promise((resolve) => {
    execFile(
      process.execPath,
      [join(packageRoot, "dist/src/cli/main.js"), ...args],
      { timeout: timeoutMs, cwd: scratch, env: { ...process.env, FAKE_CUDA_DIR: "/tmp/fake-cuda" } },
      (err, stdout, stderr) =>
        resolve({ code: err ? Number((err as { code?: number }).code ?? 1) : 0, stdout, stderr }),
    );
  });
}

const on = (node: TestNode, kyb: KybernateProcess) => [
  "--runtime-endpoint",
  node.criSocket,
  "--socket",
  kyb.socket,
];
const gpuMounts = () => gpuDoubleMounts(doubleDir, join(scratch, "nvidiactl"));

/** Running, making progress, VRAM verified: the container's workload is on its GPU. */
async function assertRunning(cri: TestCriClient, id: string, kyb: KybernateProcess): Promise<WorkloadStatus> {
  const [first] = await waitForWorkload(cri, id, ([s]) => s?.state === "running", {
    kybernateLogs: () => kyb.logs,
  });
  await sleep(300);
  const [later] = await waitForWorkload(cri, id, ([s]) => !!s && s.counter > (first?.counter ?? 0), {
    what: "the counter does not move",
    kybernateLogs: () => kyb.logs,
  });
  assert.ok(later);
  assert.equal(later.verifyFailures, 0, "VRAM checksum failures");
  assert.equal((await cri.containerStatus(id)).status?.state, "CONTAINER_RUNNING");
  return later;
}

function ociAnnotations(node: TestNode, id: string): Record<string, string> {
  const file = join(node.state, "io.containerd.runtime.v2.task", node.namespace, id, "config.json");
  return (
    (JSON.parse(readFileSync(file, "utf8")) as { annotations?: Record<string, string> }).annotations ?? {}
  );
}

/** kybernate's NRI plugin logs each GPU container it configures, with containerd's `restored` annotation. */
const restoredSeenByNri = (id: string): boolean =>
  kybB.logs.some(
    (l) => l.msg === "GPU container: CRIU hook configured" && l.id === id && l.restored === true,
  );

async function podsOf(cri: TestCriClient): Promise<string[]> {
  return (await cri.listPodSandbox())
    .filter((p) => p.metadata?.namespace === NS && p.metadata.name.startsWith(`mig-${suffix}`))
    .map((p) => p.metadata?.name ?? "")
    .sort();
}

async function registryImage(tag: string): Promise<{ manifest: ImageManifest; body: Buffer }> {
  const got = await new RegistryClient(nodeA.registry).getManifest(repo, tag);
  return { manifest: JSON.parse(got.body.toString("utf8")) as ImageManifest, body: got.body };
}

/** Pushes a variant of the good image's manifest (blobs already there) under `tag`. */
async function pushVariant(tag: string, change: (m: ImageManifest) => void): Promise<string> {
  const { manifest } = await registryImage("v1");
  change(manifest);
  const registry = new RegistryClient(nodeA.registry);
  await registry.putManifest(
    repo,
    tag,
    Buffer.from(JSON.stringify(manifest)),
    manifest.mediaType ?? MEDIA_TYPE.manifest,
  );
  return ref(tag);
}

before(async () => {
  nodeA = loadTestNode();
  nodeB = loadTestNodeB();
  criA = new TestCriClient(nodeA.criSocket);
  criB = new TestCriClient(nodeB.criSocket);
  scratch = mkdtempSync("/tmp/kyb-migrate-");
  writeFileSync(join(scratch, "nvidiactl"), "");
  doubleDir = buildDouble();
  gpusA = fakeGpus(scratch, "a", UUID_A);
  gpusB = fakeGpus(scratch, "b", UUID_B);
  const env = { FAKE_CUDA_DIR: "/tmp/fake-cuda" };
  kybA = await startKybernate({
    nriSocket: nodeA.nriSocket,
    stateDir: join(scratch, "state-a"),
    args: [...kybernateArgsForDouble(doubleDir, nodeA), "--nvidia-smi", gpusA.nvidiaSmi],
    env,
  });
  kybB = await startKybernate({
    nriSocket: nodeB.nriSocket,
    stateDir: join(scratch, "state-b"),
    args: [...kybernateArgsForDouble(doubleDir, nodeB), "--nvidia-smi", gpusB.nvidiaSmi],
    env,
  });
  await criA.pullImage(nodeA.image);
  const pod = await criA.runHostNetworkPod(`mig-${suffix}`, NS);
  sourceId = await criA.createContainer(pod.podId, pod.config, {
    name: "cuda",
    image: nodeA.image,
    command: ["/kyb/fake-cuda-workload", "--mib", "16"],
    mounts: gpuMounts(),
  });
  await criA.startContainer(sourceId);
  await waitForWorkload(criA, sourceId, ([s]) => s?.state === "running" && s.counter > 5, {
    kybernateLogs: () => kybA.logs,
  });
});

after(async () => {
  for (const cri of [criA, criB]) {
    if (!cri) continue;
    for (const p of await cri.listPodSandbox().catch(() => []))
      if (p.metadata?.namespace === NS && p.metadata.name.startsWith(`mig-${suffix}`))
        await cri.stopAndRemovePod(p.id).catch(() => undefined);
    cri.close();
  }
  await kybA?.stop();
  await kybB?.stop();
  if (scratch) rmSync(scratch, { recursive: true, force: true });
});

describe("a GPU container moves from node A to node B through a checkpoint image in the registry", () => {
  test("checkpoint --push on A: the image passes the OCI image spec and carries A's GPU; A's container keeps running", async () => {
    counterAtCheckpoint = (await workloadStatuses(criA, sourceId))[0]?.counter ?? 0;
    const r = await kybernate([
      "checkpoint",
      sourceId.slice(0, 16),
      "--push",
      ref("v1"),
      "--output",
      join(scratch, "a.tar"),
      "--timeout",
      "60",
      ...on(nodeA, kybA),
    ]);
    assert.equal(
      r.code,
      0,
      `${r.stderr}\n${kybA.logs
        .slice(-10)
        .map((l) => JSON.stringify(l))
        .join("\n")}`,
    );
    assert.match(r.stdout, new RegExp(`^localhost:\\d+/${repo}:v1@sha256:[0-9a-f]{64}\\t`));
    const { body } = await registryImage("v1");
    const registry = new RegistryClient(nodeA.registry);
    const parsed = JSON.parse(body.toString("utf8")) as ImageManifest;
    const blobs = new Map<string, Buffer>();
    for (const d of [parsed.config, ...parsed.layers])
      blobs.set(d.digest, await registry.getBlob(repo, d.digest, 2 ** 30));
    const { manifest, layer } = checkImageBlobs(body, (d) => blobs.get(d) as Buffer);
    const a = manifest.annotations ?? {};
    assert.equal(a["org.criu.checkpoint.container.name"], "cuda");
    assert.equal(a["io.kubernetes.cri-o.annotations.checkpoint.name"], "cuda");
    assert.equal(a[K.gpuUuids], UUID_A);
    assert.equal(a[K.gpuModels], "NVIDIA H200");
    assert.equal(a[K.driver], "580.159.04");
    assert.match(a[K.vramBytes] ?? "", /^\d+$/);
    assert.ok(layer.includes(Buffer.from("checkpoint/kybernate.json")), "the layer holds kybernate.json");
    const status = await assertRunning(criA, sourceId, kybA);
    assert.equal(status.checkpoints, 1, "checkpointed once, left running");
    assert.match(r.stdout, new RegExp(`\t${join(scratch, "a.tar")}\n$`), "--output keeps the archive");
  });

  test("kybernate image build of the kept archive: an OCI layout (zstd) and a push, both read back against the spec", async () => {
    const layout = join(scratch, "layout");
    const r = await kybernate([
      "image",
      "build",
      join(scratch, "a.tar"),
      "--tag",
      ref("built"),
      "--output",
      layout,
      "--compression",
      "zstd",
      "--push",
    ]);
    assert.equal(r.code, 0, r.stderr);
    const { manifest, entry } = checkLayout(layout, "built");
    assert.equal(manifest.layers[0]?.mediaType, MEDIA_TYPE.layerZstd);
    assert.equal(manifest.annotations?.[K.gpuUuids], UUID_A);
    const pushed = await new RegistryClient(nodeA.registry).getManifest(repo, "built");
    assert.equal(pushed.digest, entry.digest, "the registry has the layout's manifest, byte for byte");
  });

  test("kybernate restore REF on B: onto B's GPU through the device map, the workload goes on with its VRAM verified", async () => {
    const r = await kybernate([
      "restore",
      ref("v1"),
      "--gpus",
      UUID_B,
      "--nvidia-smi",
      gpusB.nvidiaSmi,
      "--log-root",
      join(scratch, "logs-b"),
      ...on(nodeB, kybB),
    ]);
    assert.equal(
      r.code,
      0,
      `${r.stderr}\n${kybB.logs
        .slice(-10)
        .map((l) => JSON.stringify(l))
        .join("\n")}`,
    );
    const id = r.stdout.trim();
    const status = await assertRunning(criB, id, kybB);
    assert.ok(
      status.counter >= counterAtCheckpoint,
      `restored counter ${status.counter} < ${counterAtCheckpoint}: started afresh`,
    );
    assert.equal(status.lastDevicePairs, 1, "the driver got the pair A→B");
    const plan = kybB.logs.find((l) => l.containerId === id && l.msg === "GPU restore plan");
    assert.deepEqual((plan?.plan as { deviceMap?: unknown } | undefined)?.deviceMap, [
      { from: UUID_A, to: UUID_B },
    ]);
    // NRI saw the restore's CreateContainer (containerd's restored=true, checkpointImage), and kybernate B's CRIU
    // config is in the restored container's spec.
    assert.ok(restoredSeenByNri(id), "kybernate B's NRI plugin saw a restored container");
    const ann = (await criB.containerStatus(id)).status?.annotations ?? {};
    assert.equal(ann.restored, "true");
    assert.equal(ann.checkpointImage, ref("v1"));
    assert.match(
      ociAnnotations(nodeB, id)["org.criu.config"] ?? "",
      new RegExp(`^${join(scratch, "state-b")}/containers/${id}/criu\\.conf$`),
    );
    assert.match(r.stderr, /its log: .*logs-b\/kybernate-test_mig-.*-restored-.*\/cuda\/0\.log/);
    await assertRunning(criA, sourceId, kybA);
  });

  test("CreateContainer as the kubelet sends it on B (the pulled image's id, the reference as the user's): restored too", async () => {
    const pod = await criB.runHostNetworkPod(`mig-${suffix}-kubelet`, NS, {
      logDirectory: join(scratch, "pods-b", `${NS}_mig-${suffix}-kubelet_u1`),
    });
    mkdirSync(join(scratch, "pods-b", `${NS}_mig-${suffix}-kubelet_u1`, "cuda"), { recursive: true });
    const imageId = await criB.pullImage(ref("v1"), { podConfig: pod.config });
    assert.match(imageId, /^sha256:[0-9a-f]{64}$/);
    const id = await criB.createContainer(pod.podId, pod.config, {
      name: "cuda",
      image: imageId,
      userSpecifiedImage: ref("v1"),
      mounts: gpuMounts(),
      env: { NVIDIA_VISIBLE_DEVICES: UUID_B },
      logPath: "cuda/0.log",
    });
    await criB.startContainer(id);
    const status = await assertRunning(criB, id, kybB);
    assert.equal(status.lastDevicePairs, 1);
    assert.equal((await criB.containerStatus(id)).status?.annotations.checkpointImage, ref("v1"));
    assert.ok(restoredSeenByNri(id));
    assert.equal(
      (await criB.containerStatus(id)).status?.logPath,
      join(scratch, "pods-b", `${NS}_mig-${suffix}-kubelet_u1`, "cuda", "0.log"),
    );
  });

  test("the Kubernetes way end to end: a kubelet-shaped pod on A, its checkpoint image, a kubelet-shaped pod on B", async () => {
    // Source: as the kubelet makes it (termination-log, etc-hosts, service-account token, an emptyDir, its log).
    const podA = await runKubeletPod(criA, join(scratch, "kubelet-a"), `mig-${suffix}-k8s`, NS);
    const volumes = { emptyDirs: { "/cache": "cache" }, extraMounts: gpuMounts() };
    const src = await createKubeletContainer(criA, podA, {
      name: "cuda",
      image: nodeA.image,
      command: ["/kyb/fake-cuda-workload", "--mib", "16"],
      ...volumes,
    });
    await criA.startContainer(src.id);
    await waitForWorkload(criA, src.id, ([s]) => s?.state === "running" && s.counter > 5, {
      kybernateLogs: () => kybA.logs,
    });
    // The kubelet's checkpoint API, then the image.
    const archive = join(scratch, `checkpoint-${podA.name}_${NS}-cuda.tar`);
    await criA.checkpoint(src.id, archive, 60);
    const built = await kybernate(["image", "build", archive, "--tag", ref("k8s"), "--push"]);
    assert.equal(built.code, 0, built.stderr);
    // Target: a new pod on B whose container is created as the kubelet creates it from the pod spec: the image id
    // PullImage returned, the same volumes at the same paths (its own pod folder), B's GPU from the device plugin.
    const podB = await runKubeletPod(criB, join(scratch, "kubelet-b"), `mig-${suffix}-k8s-restored`, NS);
    const imageId = await criB.pullImage(ref("k8s"), { podConfig: podB.config });
    const restored = await createKubeletContainer(criB, podB, {
      name: "cuda",
      image: imageId,
      userSpecifiedImage: ref("k8s"),
      command: [],
      env: { NVIDIA_VISIBLE_DEVICES: UUID_B },
      ...volumes,
    });
    await criB.startContainer(restored.id);
    const status = await assertRunning(criB, restored.id, kybB);
    assert.equal(status.lastDevicePairs, 1, "onto B's GPU through the device map");
    assert.ok(restoredSeenByNri(restored.id));
    const logPath = (await criB.containerStatus(restored.id)).status?.logPath ?? "";
    assert.equal(logPath, join(podB.logDir, "cuda", "0.log"));
    await assertRunning(criA, src.id, kybA);
  });

  test("restore from the registry image on A itself: onto A's own GPU, no device map", async () => {
    const r = await kybernate([
      "restore",
      ref("v1"),
      "--name",
      "cuda-again",
      "--nvidia-smi",
      gpusA.nvidiaSmi,
      "--log-root",
      join(scratch, "logs-a"),
      ...on(nodeA, kybA),
    ]);
    assert.equal(r.code, 0, r.stderr);
    const id = r.stdout.trim();
    const status = await assertRunning(criA, id, kybA);
    assert.ok(!status.lastDevicePairs, "same GPU: no pairs");
  });

  test("another GPU model on B: refused before the pull by the CLI, at pre-restore by the daemon; nothing restored", async () => {
    gpusB.set([{ uuid: UUID_B, name: "NVIDIA A100-SXM4-80GB", memoryMiB: 81920 }]);
    try {
      const before = await podsOf(criB);
      const r = await kybernate([
        "restore",
        ref("v1"),
        "--nvidia-smi",
        gpusB.nvidiaSmi,
        "--log-root",
        join(scratch, "logs-b"),
        ...on(nodeB, kybB),
      ]);
      assert.equal(r.code, 2, r.stderr);
      assert.match(r.stderr, /refusing to restore: .*no free GPU of model "NVIDIA H200".*NVIDIA A100/);
      // Without nvidia-smi the CLI cannot tell: the daemon's plan refuses at pre-restore, before CRIU restores.
      const d = await kybernate([
        "restore",
        ref("v1"),
        "--nvidia-smi",
        join(scratch, "no-nvidia-smi"),
        "--log-root",
        join(scratch, "logs-b"),
        ...on(nodeB, kybB),
      ]);
      assert.equal(d.code, 1, d.stderr);
      assert.match(d.stderr, /criu failed|restore/i);
      assert.match(d.stderr, /removed the container it created .*removed the pod it created/);
      assert.ok(
        kybB.logs.some(
          (l) => /refusing to restore/.test(String(l.error)) && /NVIDIA A100/.test(String(l.error)),
        ),
      );
      assert.deepEqual(await podsOf(criB), before);
    } finally {
      gpusB.set([{ uuid: UUID_B }]);
    }
  });

  test("hostile or damaged images are refused with a clear error, and nothing is restored", async () => {
    const before = await podsOf(criB);
    const restoreOnB = (image: string) =>
      kybernate([
        "restore",
        image,
        "--nvidia-smi",
        gpusB.nvidiaSmi,
        "--log-root",
        join(scratch, "logs-b"),
        ...on(nodeB, kybB),
      ]);
    const cases: Array<[string, (m: ImageManifest) => void, RegExp]> = [
      [
        "bad-uuid",
        (m) => ((m.annotations ?? {})[K.gpuUuids] = "GPU-not-a-uuid"),
        /entry 1 of annotation kybernate\.io\/gpu-uuids is not a GPU UUID/,
      ],
      ["no-metadata", (m) => delete m.annotations?.[K.schema], /kybernate GPU metadata is missing/],
      [
        "not-checkpoint",
        (m) => delete m.annotations?.["org.criu.checkpoint.container.name"],
        /it is not a checkpoint image/,
      ],
      [
        "wrong-layer-type",
        (m) => ((m.layers[0] as { mediaType: string }).mediaType = "application/octet-stream"),
        /layer's media type is "application\/octet-stream"/,
      ],
      [
        "two-layers",
        (m) => m.layers.push(m.layers[0] as ImageManifest["layers"][0]),
        /it has 2 layers; a checkpoint image has exactly one/,
      ],
    ];
    for (const [tag, change, expected] of cases) {
      const r = await restoreOnB(await pushVariant(tag, change));
      assert.equal(r.code, 2, `${tag}: ${r.stderr}`);
      assert.match(r.stderr, /refusing to restore .*; nothing was restored/, tag);
      assert.match(r.stderr, expected, tag);
    }
    // A layer cut short, in an image that is otherwise consistent (its config names the cut layer's diff_id, so
    // containerd cannot reuse the good image's unpacked snapshot): not a whole tar. containerd's unpack refuses
    // it in the pull; the CLI removes the pod it made.
    const { manifest } = await registryImage("v1");
    const registry = new RegistryClient(nodeA.registry);
    const layer = await registry.getBlob(repo, (manifest.layers[0] as { digest: string }).digest, 2 ** 30);
    const config = JSON.parse((await registry.getBlob(repo, manifest.config.digest)).toString("utf8"));
    const cut = layer.subarray(0, Math.floor(layer.length / 2));
    const sha = (b: Buffer) => `sha256:${createHash("sha256").update(b).digest("hex")}`;
    await registry.putBlob(repo, sha(cut), cut);
    config.rootfs.diff_ids = [sha(cut)];
    const cutConfig = Buffer.from(JSON.stringify(config));
    await registry.putBlob(repo, sha(cutConfig), cutConfig);
    const truncated = await pushVariant("truncated", (m) => {
      m.config = { ...m.config, digest: sha(cutConfig), size: cutConfig.length };
      m.layers[0] = { ...(m.layers[0] as ImageManifest["layers"][0]), digest: sha(cut), size: cut.length };
    });
    const t = await restoreOnB(truncated);
    assert.equal(t.code, 1, t.stderr);
    assert.match(t.stderr, /the image .*:truncated is damaged|pulling .*:truncated failed/);
    assert.match(t.stderr, /removed the pod it created/);
    assert.deepEqual(await podsOf(criB), before, "no pod is left of the refused restores");
  });
});

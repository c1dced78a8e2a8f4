// The CRI client against the real test node (containerd 2.1+, runc, CRIU): pod, container, exec,
// checkpoint to a tar, restore from that tar into a new pod. No NRI plugin and no GPU involved.
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { list } from "tar";
import { packageRoot } from "../../src/base/paths.js";
import type { RunningPod } from "../../src/cri/client.js";
import { TestCriClient } from "../support/test-cri-client.js";

interface TestNodeEnv {
  criSocket: string;
  image: string;
}

function loadEnv(): TestNodeEnv {
  const file = join(packageRoot, ".testnode/env.json");
  if (!existsSync(file))
    assert.fail(`${file} is missing: bring the test node up first (npm run testnode:up, as root)`);
  return JSON.parse(readFileSync(file, "utf8")) as TestNodeEnv;
}

async function tarEntries(file: string): Promise<string[]> {
  const names: string[] = [];
  await list({ file, onReadEntry: (e) => names.push(e.path) });
  return names;
}

describe("CRI client on the test node", { timeout: 300_000 }, () => {
  const suffix = randomBytes(3).toString("hex");
  const pods: string[] = [];
  let env: TestNodeEnv;
  let cri: TestCriClient;
  let workDir: string;
  let pod: RunningPod;
  let containerId: string;
  let archive: string;

  before(() => {
    env = loadEnv();
    cri = new TestCriClient(env.criSocket);
    // containerd runs in this mount namespace, so it writes and later reads the archive at this very path.
    workDir = mkdtempSync(join(tmpdir(), `kybernate-cri-client-${suffix}-`));
    archive = join(workDir, "checkpoint.tar");
  });

  after(async () => {
    for (const id of pods) {
      await cri.stopAndRemovePod(id).catch((e: Error) => console.error(`cleanup of pod ${id}: ${e.message}`));
    }
    cri?.close();
    if (workDir) rmSync(workDir, { recursive: true, force: true });
  });

  it("Version names containerd and CRI v1", async () => {
    const v = await cri.version();
    assert.equal(v.runtimeName, "containerd");
    assert.equal(v.runtimeApiVersion, "v1");
    assert.match(v.runtimeVersion, /^v?2\./, "CRI checkpoint/restore needs containerd 2.x");
  });

  it("PullImage fetches the test image from the loopback registry", async () => {
    const ref = await cri.pullImage(env.image);
    assert.match(ref, /^sha256:[0-9a-f]{64}$/);
    const image = await cri.imageStatus(env.image);
    assert.ok(image, `ImageStatus does not know ${env.image} after the pull`);
    assert.equal(image.id, ref);
  });

  it("runs a host-network pod with a sleeping container", async () => {
    pod = await cri.runHostNetworkPod(`cri-client-${suffix}`, "kybernate-test", {
      labels: { "kybernate.test": "cri-client" },
      annotations: { "kybernate.test/run": suffix },
    });
    pods.push(pod.podId);
    const status = await cri.podSandboxStatus(pod.podId);
    assert.equal(status.status?.state, "SANDBOX_READY");
    assert.equal(status.status?.linux?.namespaces?.options?.network, "NODE");
    assert.equal(status.status?.annotations["kybernate.test/run"], suffix);

    containerId = await cri.createContainer(pod.podId, pod.config, {
      name: "sleeper",
      image: env.image,
      command: ["sleep", "3600"],
      env: { KYBERNATE_TEST: "grüße" },
      labels: { "kybernate.test": "cri-client" },
    });
    await cri.startContainer(containerId);
    const c = await cri.containerStatus(containerId);
    assert.equal(c.status?.state, "CONTAINER_RUNNING");
  });

  it("ExecSync returns output, stderr and the exit code", async () => {
    const r = await cri.exec(containerId, ["sh", "-c", 'echo "$KYBERNATE_TEST"; echo oops >&2; exit 3'], 10);
    assert.deepEqual(r, { stdout: "grüße\n", stderr: "oops\n", exitCode: 3 });
    // A marker in the container's rootfs: it must travel in the checkpoint (rootfs-diff.tar) to the restore.
    const w = await cri.exec(containerId, ["sh", "-c", `echo ${suffix} > /marker`], 10);
    assert.equal(w.exitCode, 0, w.stderr);
  });

  it("ListContainers finds the container in its pod", async () => {
    const found = await cri.listContainers({ podSandboxId: pod.podId });
    assert.deepEqual(
      found.map((c) => [c.id, c.metadata?.name, c.state]),
      [[containerId, "sleeper", "CONTAINER_RUNNING"]],
    );
  });

  it("CheckpointContainer writes a tar with CRIU images, spec.dump and config.dump, and leaves it running", async (t) => {
    const started = Date.now();
    await cri.checkpoint(containerId, archive, 120);
    t.diagnostic(`checkpoint: ${Date.now() - started} ms, ${statSync(archive).size} bytes`);
    const entries = await tarEntries(archive);
    assert.ok(
      entries.some((e) => e.startsWith("checkpoint/")),
      `no checkpoint/ in ${entries.join(" ")}`,
    );
    for (const f of ["spec.dump", "config.dump"]) {
      assert.ok(
        entries.some((e) => e.replace(/^\.\//, "") === f),
        `no ${f} in ${entries.join(" ")}`,
      );
    }
    assert.equal((await cri.containerStatus(containerId)).status?.state, "CONTAINER_RUNNING");
  });

  it("restores the archive into a new pod through CreateContainer + StartContainer", async (t) => {
    const target = await cri.runHostNetworkPod(`cri-client-${suffix}-restored`, "kybernate-test");
    pods.push(target.podId);
    const started = Date.now();
    const restored = await cri.restoreFromArchive(target.podId, target.config, archive, "sleeper-restored");
    await cri.startContainer(restored, { timeoutMs: 120_000 });
    t.diagnostic(`restore (create + start): ${Date.now() - started} ms`);

    const s = await cri.containerStatus(restored);
    assert.equal(s.status?.state, "CONTAINER_RUNNING");
    assert.equal(s.status?.metadata?.name, "sleeper-restored");
    const marker = await cri.exec(restored, ["cat", "/marker"], 10);
    assert.deepEqual([marker.exitCode, marker.stdout], [0, `${suffix}\n`]);
    // The restored process is the checkpointed `sleep 3600`, not a fresh start of the image.
    const cmdline = await cri.exec(restored, ["cat", "/proc/1/cmdline"], 10);
    assert.equal(cmdline.stdout, "sleep\u00003600\u0000");
  });
});

// The CLI against the real test node: `kybernate checkpoint` a running busybox container by name into a tar,
// `kybernate restore` it into a new pod and into the original pod, `kybernate ps` lists them. No GPU and no
// kybernate daemon: a plain container needs neither, and the commands must say the daemon is absent.
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdtempSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { packageRoot } from "../../src/base/paths.js";
import { cleanupScratch, fakeTool } from "../gpu/double/harness.js";
import { TestCriClient } from "../support/test-cri-client.js";
import { loadTestNode, type TestNode } from "../support/testnode.js";

interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

function kybernate(args: string[], timeoutMs = 120_000): Promise<Run> {
  return new Promise((resolve) => {
    execFile(
      process.execPath,
      [join(packageRoot, "dist/src/cli/main.js"), ...args],
      { timeout: timeoutMs },
      (err, stdout, stderr) =>
        resolve({ code: err ? Number((err as { code?: number }).code ?? 1) : 0, stdout, stderr }),
    );
  });
}

describe("kybernate checkpoint / restore / ps on the test node", { timeout: 120_000 }, () => {
  const suffix = randomBytes(3).toString("hex");
  const name = `cli-counter-${suffix}`;
  const pods = new Set<string>();
  let node: TestNode;
  let cri: TestCriClient;
  let dir: string;
  let archive: string;
  let common: string[];
  let restoreCommon: string[];
  let originalPod: string;
  let original: string;
  let checkpointedCount: number;

  const count = async (id: string) => Number((await cri.exec(id, ["cat", "/count"], 10)).stdout.trim());
  const podOf = async (id: string) => (await cri.listContainers({ id }))[0]?.podSandboxId ?? "";

  before(async () => {
    node = loadTestNode();
    cri = new TestCriClient(node.criSocket);
    dir = mkdtempSync(join(tmpdir(), `kybernate-cli-it-${suffix}-`));
    archive = join(dir, "counter.tar");
    // No daemon on this socket: the commands must cope and say so.
    common = ["--runtime-endpoint", `unix://${node.criSocket}`, "--socket", join(dir, "no-daemon.sock")];
    // A restored container's log folder goes below --log-root; here not into the host's /var/log/pods.
    restoreCommon = [...common, "--log-root", join(dir, "pods")];
    await cri.pullImage(node.image);
    const pod = await cri.runHostNetworkPod(`cli-${suffix}`, "kybernate-test");
    originalPod = pod.podId;
    pods.add(pod.podId);
    original = await cri.createContainer(pod.podId, pod.config, {
      name,
      image: node.image,
      command: ["sh", "-c", "i=0; while true; do i=$((i+1)); echo $i > /count; sleep 0.1; done"],
      labels: { "kybernate.test": "cli" },
    });
    await cri.startContainer(original);
    const marker = await cri.exec(original, ["sh", "-c", `echo ${suffix} > /marker`], 10);
    assert.equal(marker.exitCode, 0, marker.stderr);
  });

  after(async () => {
    for (const id of pods)
      await cri.stopAndRemovePod(id).catch((e: Error) => console.error(`cleanup of pod ${id}: ${e.message}`));
    cri?.close();
    if (dir) rmSync(dir, { recursive: true, force: true });
    cleanupScratch();
  });

  it("checkpoint by name writes the tar, prints its path and size, and leaves the container running", async (t) => {
    const r = await kybernate(["checkpoint", name, "--output", archive, "--timeout", "60", ...common]);
    assert.equal(r.code, 0, r.stderr);
    checkpointedCount = await count(original);
    const [path, size] = r.stdout.trim().split("\t");
    assert.equal(path, archive);
    assert.match(size ?? "", /^\d+\.\d (KiB|MiB)$/);
    assert.ok(statSync(archive).size > 10_000);
    // stderr is not a terminal here: one line at the start and one at the end.
    assert.match(r.stderr, new RegExp(`checkpointing ${name} \\([0-9a-f]{13}\\) to ${archive}…\\n`));
    assert.match(r.stderr, /: done after \d+\.\d s\n/);
    assert.equal((await cri.containerStatus(original)).status?.state, "CONTAINER_RUNNING");
    t.diagnostic(r.stdout.trim());
  });

  it("checkpoint of a name that does not exist exits 2 and says so", async () => {
    const r = await kybernate(["checkpoint", `nosuch-${suffix}`, ...common]);
    assert.equal(r.code, 2);
    assert.match(r.stderr, new RegExp(`kybernate checkpoint: no container named "nosuch-${suffix}"`));
  });

  it("restore into a new pod: the restored process goes on counting, with the marker written before", async (t) => {
    const started = Date.now();
    const r = await kybernate(["restore", archive, ...restoreCommon]);
    assert.equal(r.code, 0, r.stderr);
    const id = r.stdout.trim();
    assert.match(id, /^[0-9a-f]{64}$/);
    const podId = await podOf(id);
    pods.add(podId);
    t.diagnostic(`restore: ${Date.now() - started} ms`);
    assert.match(
      r.stderr,
      new RegExp(
        `restored ${name} as ${name} in new pod kybernate-test/cli-${suffix}-restored-\\d{4}-\\d{6}`,
      ),
    );
    const s = await cri.podSandboxStatus(podId);
    assert.equal(s.status?.linux?.namespaces?.options?.network, "NODE");
    assert.equal((await cri.containerStatus(id)).status?.state, "CONTAINER_RUNNING");
    assert.equal((await cri.exec(id, ["cat", "/marker"], 10)).stdout, `${suffix}\n`);
    const first = await count(id);
    assert.ok(first >= checkpointedCount, `restored count ${first} < checkpointed ${checkpointedCount}`);
    await sleep(500);
    assert.ok((await count(id)) > first, "the restored counter does not move");
  });

  it("restore --pod into the original pod under another --name", async () => {
    const dup = await kybernate([
      "restore",
      archive,
      "--pod",
      `kybernate-test/cli-${suffix}`,
      ...restoreCommon,
    ]);
    assert.equal(dup.code, 2);
    assert.match(dup.stderr, new RegExp(`already has a container named ${name} .*pass --name`));
    const r = await kybernate([
      "restore",
      archive,
      "--pod",
      originalPod.slice(0, 16),
      "--name",
      `${name}-2`,
      ...common,
    ]);
    assert.equal(r.code, 0, r.stderr);
    const id = r.stdout.trim();
    assert.equal(await podOf(id), originalPod);
    assert.equal((await cri.containerStatus(id)).status?.metadata?.name, `${name}-2`);
    assert.equal((await cri.exec(id, ["cat", "/marker"], 10)).stdout, `${suffix}\n`);
  });

  it("restore of a file that is not an archive exits 2 before touching CRI", async () => {
    const r = await kybernate(["restore", join(dir, "missing.tar"), ...restoreCommon]);
    assert.equal(r.code, 2);
    assert.match(r.stderr, /no checkpoint archive at .*missing\.tar: check the path/);
  });

  it("ps without the daemon says so and lists the containers with their CUDA state", async () => {
    const r = await kybernate([
      "ps",
      "--json",
      "--gpu-backend",
      "binary",
      "--cuda-checkpoint",
      fakeTool(),
      ...common,
    ]);
    assert.equal(r.code, 0, r.stderr);
    const report = JSON.parse(r.stdout) as {
      daemon: { reachable: boolean; error: string };
      rows: Array<{ id: string; name: string; state: string; cuda?: unknown[] }>;
    };
    assert.equal(report.daemon.reachable, false);
    assert.match(report.daemon.error, /no-daemon\.sock/);
    const mine = report.rows.filter((x) => x.name.startsWith(name));
    assert.equal(mine.length, 3, JSON.stringify(report.rows));
    for (const row of mine) {
      assert.equal(row.state, "running");
      assert.deepEqual(row.cuda, [], `a busybox counter has no CUDA process: ${JSON.stringify(row)}`);
    }
    const table = await kybernate([
      "ps",
      "--gpu-backend",
      "binary",
      "--cuda-checkpoint",
      fakeTool(),
      ...common,
    ]);
    assert.match(
      table.stdout,
      new RegExp(`${original.slice(0, 13)}\\s+${name}\\s+kybernate-test/cli-${suffix}\\s+running\\s+none`),
    );
    assert.match(table.stdout, /note: kybernate daemon not reachable/);
  });
});

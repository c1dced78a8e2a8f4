/**
 * A checkpoint of a container shaped exactly as the kubelet makes it (its termination-log, /etc/hosts, the
 * service-account token, hostPath and emptyDir volumes, its log path), taken as the kubelet's checkpoint API takes
 * it (CRI CheckpointContainer), restored with `kybernate restore ARCHIVE --new-pod`: every bind mount is replayed
 * but containerd's own four, and the restored container logs into its new pod's log folder.
 */
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { randomBytes } from "node:crypto";
import { existsSync, mkdirSync, mkdtempSync, readFileSync, renameSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { packageRoot } from "../../src/base/paths.js";
import { readCheckpointArchive } from "../../src/cli/archive.js";
import {
  createKubeletContainer,
  type KubeletPod,
  runKubeletPod,
  SERVICE_ACCOUNT_PATH,
} from "../support/kubelet-pod.js";
import { TestCriClient } from "../support/test-cri-client.js";
import { loadTestNode, type TestNode } from "../support/testnode.js";

const suffix = randomBytes(3).toString("hex");
const NS = "kybernate-test";
let node: TestNode;
let cri: TestCriClient;
let root: string;
let pod: KubeletPod;
let containerId: string;
let terminationLog: string;
let archive: string;
let checkpointedCount = 0;

interface Run {
  code: number;
  stdout: string;
  stderr: string;
}
function kybernate(args: string[]): Promise<Run> {
  return new Promise((resolve) => {
    execFile(
      process.execPath,
      [
        join(packageRoot, "dist/src/cli/main.js"),
        ...args,
        "--runtime-endpoint",
        node.criSocket,
        "--socket",
        join(root, "no-daemon.sock"),
      ],
      { timeout: 120_000 },
      (err, stdout, stderr) =>
        resolve({ code: err ? Number((err as { code?: number }).code ?? 1) : 0, stdout, stderr }),
    );
  });
}
const count = async (id: string) => Number((await cri.exec(id, ["cat", "/count"], 10)).stdout.trim());

before(async () => {
  node = loadTestNode();
  cri = new TestCriClient(node.criSocket);
  root = mkdtempSync("/tmp/kyb-kubelet-");
  mkdirSync(join(root, "host-data"));
  writeFileSync(join(root, "host-data", "model.txt"), "weights v7\n");
  await cri.pullImage(node.image);
  pod = await runKubeletPod(cri, root, `kubelet-${suffix}`, NS);
  const made = await createKubeletContainer(cri, pod, {
    name: "counter",
    image: node.image,
    command: ["sh", "-c", "i=0; while true; do i=$((i+1)); echo $i > /count; echo tick $i; sleep 0.1; done"],
    hostPaths: { "/data": join(root, "host-data") },
    emptyDirs: { "/scratch": "scratch" },
  });
  containerId = made.id;
  terminationLog = made.terminationLog;
  await cri.startContainer(containerId);
  await sleep(500);
  // Where the kubelet's checkpoint API puts it.
  mkdirSync(join(root, "var/lib/kubelet/checkpoints"), { recursive: true });
  archive = join(
    root,
    "var/lib/kubelet/checkpoints",
    `checkpoint-${pod.name}_${NS}-counter-2026-12-01T00:00:00Z.tar`,
  );
  await cri.checkpoint(containerId, archive, 60);
  checkpointedCount = await count(containerId);
});

after(async () => {
  for (const p of await cri.listPodSandbox().catch(() => []))
    if (p.metadata?.namespace === NS && p.metadata.name.startsWith(`kubelet-${suffix}`))
      await cri.stopAndRemovePod(p.id).catch(() => undefined);
  cri?.close();
  if (root) rmSync(root, { recursive: true, force: true });
});

describe("a kubelet-made container's checkpoint restored with kybernate restore --new-pod", () => {
  test("the archive records the kubelet's mounts; the replay keeps all but containerd's own", async () => {
    const info = await readCheckpointArchive(archive);
    const paths = info.mounts.map((m) => m.containerPath).sort();
    assert.deepEqual(paths, ["/data", "/dev/termination-log", "/scratch", SERVICE_ACCOUNT_PATH]);
    assert.equal(info.logPath, join(pod.logDir, "counter", "0.log"));
  });

  test("without its termination-log mount CRIU cannot restore it (the defect: mnt: No mapping)", async () => {
    const info = await readCheckpointArchive(archive);
    const p = await cri.runHostNetworkPod(`kubelet-${suffix}-nomount`, NS);
    const id = await cri.restoreFromArchive(p.podId, p.config, archive, "counter", {
      mounts: info.mounts.filter((m) => m.containerPath !== "/dev/termination-log"),
    });
    await assert.rejects(cri.startContainer(id), /criu failed|restore/i);
  });

  test("restored in a new pod: running on from the checkpoint, every mount there, its log in the pod's log folder", async () => {
    const r = await kybernate(["restore", archive, "--new-pod", "--log-root", join(root, "var/log/pods")]);
    assert.equal(r.code, 0, r.stderr);
    const id = r.stdout.trim();
    const first = await count(id);
    assert.ok(first >= checkpointedCount, `restored count ${first} < checkpointed ${checkpointedCount}`);
    await sleep(400);
    assert.ok((await count(id)) > first, "the restored counter moves");
    const token = await cri.exec(id, ["cat", `${SERVICE_ACCOUNT_PATH}/token`, "/data/model.txt"], 10);
    assert.equal(token.stdout, "eyJhbGciOiJSUzI1NiJ9.test.token\nweights v7\n");
    assert.equal((await cri.exec(id, ["test", "-e", "/dev/termination-log"], 10)).exitCode, 0);
    const status = (await cri.containerStatus(id)).status;
    const logPath = status?.logPath ?? "";
    assert.match(
      logPath,
      new RegExp(
        `^${join(root, "var/log/pods")}/${NS}_kubelet-${suffix}-restored-\\d{4}-\\d{6}_[0-9a-f-]{36}/counter/0\\.log$`,
      ),
    );
    assert.match(r.stderr, new RegExp(`its log: ${logPath}`));
    await sleep(300);
    const log = readFileSync(logPath, "utf8");
    // containerd copies the checkpoint's container.log there: the lines before the checkpoint, then new ones.
    assert.match(log, /stdout F tick 1\n/);
    assert.match(log, new RegExp(`stdout F tick ${checkpointedCount + 3}\\n`));
  });

  test("a bind mount whose host path is gone is refused before anything is created, naming it", async () => {
    const podsBefore = (await cri.listPodSandbox()).length;
    renameSync(terminationLog, `${terminationLog}.away`);
    try {
      const r = await kybernate(["restore", archive, "--new-pod", "--log-root", join(root, "var/log/pods")]);
      assert.equal(r.code, 2, r.stderr);
      assert.match(
        r.stderr,
        new RegExp(
          `a bind mount whose host path is missing here: /dev/termination-log from ${terminationLog}`,
        ),
      );
      assert.equal((await cri.listPodSandbox()).length, podsBefore);
    } finally {
      renameSync(`${terminationLog}.away`, terminationLog);
    }
    assert.ok(existsSync(terminationLog));
  });
});

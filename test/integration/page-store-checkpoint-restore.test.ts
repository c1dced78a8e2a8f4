/**
 * The node page store on the real containerd + runc + CRIU test node with the GPU double: with `kybernate run
 * --page-store`, a CRI checkpoint leaves CRIU's page images in the store and containerd's archive carries only
 * metadata; a restore on the same node links them back and continues with its VRAM verified; `kybernate archive
 * inline` makes the archive self-contained, which restores once the store is emptied, while the thin archive is
 * then refused cleanly at pre-restore; the store keeps N checkpoints per container and never pages a restore
 * uses; `ctr tasks checkpoint` works with the store on; the disk admission refuses a checkpoint that does not fit.
 */
import assert from "node:assert/strict";
import { execFile, execFileSync } from "node:child_process";
import { mkdirSync, readdirSync, statSync } from "node:fs";
import { dirname, join } from "node:path";
import { after, before, describe, test } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { promisify } from "node:util";
import { NODE_FLAGS } from "../../src/base/node-flags.js";
import { packageRoot } from "../../src/base/paths.js";
import { askDaemon } from "../../src/daemon/client.js";
import type { DaemonStatusData } from "../../src/daemon/protocol.js";
import { readTarMember } from "../../src/host/tar.js";
import { PAGES_MANIFEST, parseManifest } from "../../src/store/manifest.js";
import { PageStore } from "../../src/store/page-store.js";
import { GpuNode, type Pod } from "../support/gpu-node.js";

const run = promisify(execFile);
const f = new GpuNode();
let store: PageStore;
let storeDir: string;
before(async () => {
  await f.setUp();
  // On the filesystem of containerd's temp dir (the test node's .testnode/tmp), so page images move by a rename.
  storeDir = join(f.scratch, "page-store");
  store = await PageStore.open(storeDir);
});
after(() => f.tearDown());

const MIB = 64;

async function storeDaemon(extra: string[] = []) {
  if (f.kyb) return f.kyb;
  return f.startDaemon(undefined, [
    "--page-store",
    storeDir,
    "--page-store-keep",
    "2",
    "--archive-dir",
    f.scratch,
    "--node-name",
    "test-node-a",
    ...extra,
  ]);
}

/** The page images' names in a tar, and whether it carries the page manifest. */
function members(tar: string): { pages: string[]; manifest: boolean } {
  const names = execFileSync("tar", ["-tf", tar], { encoding: "utf8" }).split("\n");
  return {
    pages: names.filter((n) => /pages-\d+\.img$/.test(n)),
    manifest: names.some((n) => n.endsWith(`checkpoint/${PAGES_MANIFEST}`)),
  };
}

function kybernate(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(
      process.execPath,
      [...NODE_FLAGS, join(packageRoot, "dist/src/cli/main.js"), ...args],
      { timeout: 120_000 },
      (error, stdout, stderr) =>
        resolve({ code: error ? Number((error as { code?: number }).code ?? 1) : 0, stdout, stderr }),
    );
  });
}

async function status(): Promise<DaemonStatusData> {
  const reply = await askDaemon(f.kyb?.socket ?? "", { kind: "status" }, 5000);
  return reply.data as DaemonStatusData;
}

async function manifestOf(tar: string) {
  return parseManifest(
    (await readTarMember(tar, `checkpoint/${PAGES_MANIFEST}`, { maxBytes: 1 << 20 })) as Buffer,
    tar,
  );
}

describe("checkpoints through the node page store", () => {
  let original: string;
  let thin: string;
  let checkpointId: string;

  test("a CRI checkpoint leaves the page images in the store: the archive is small and holds none, checkpointctl reads it", async () => {
    const daemon = await storeDaemon();
    const pod = await f.newPod("store-gpu");
    original = await f.gpuContainer(pod, { mib: MIB });
    const mark = daemon.logs.length;
    thin = f.archivePath("thin");
    await f.checkpointOrShowLogs(original, "thin");
    await f.assertRunningOnGpu(original, { checkpoints: 1, restores: 1, verifyFailures: 0 });
    const inside = members(thin);
    assert.deepEqual(inside.pages, [], "no page image in the archive");
    assert.ok(inside.manifest, "the page manifest is in the archive");
    const size = statSync(thin).size;
    assert.ok(size < (MIB / 4) * 2 ** 20, `the archive is ${size} bytes for ${MIB} MiB of VRAM`);
    const manifest = await manifestOf(thin);
    checkpointId = manifest.checkpointId;
    assert.equal(manifest.node, "test-node-a");
    const entry = (await store.entries()).find((e) => e.id === checkpointId);
    assert.ok(entry?.complete, "the store holds the checkpoint");
    assert.ok((entry?.bytes ?? 0) >= MIB * 2 ** 20, `the store holds ${entry?.bytes} bytes`);
    const { stdout } = await run(f.node.bin.checkpointctl, ["show", thin]);
    assert.match(stdout, /cuda/);
    // The phase breakdown, in the log and in what `kybernate ps` shows.
    const phases = await daemon.waitForLog(
      (l) => l.containerId === original && /^checkpoint phases/.test(String(l.msg)),
      {
        since: mark,
      },
    );
    for (const p of ["gpuFreeze", "criuDump", "pageStore", "untilResume", "total"])
      assert.equal(
        typeof (phases.phasesMs as Record<string, unknown>)[p],
        "number",
        `${p}: ${JSON.stringify(phases)}`,
      );
    const last = (await status()).last.find((l) => l.containerId === original);
    assert.equal(last?.checkpointId, checkpointId);
    assert.equal(typeof last?.phasesMs?.criuDump, "number");
    // The archive found where the caller wrote it, so that the pages go once it does.
    const until = Date.now() + 10_000;
    while (!(await store.record(checkpointId))?.archive && Date.now() < until) await sleep(200);
    assert.equal((await store.record(checkpointId))?.archive, thin);
  });

  test("restore on the same node links the pages back and continues with its VRAM verified", async () => {
    const daemon = await storeDaemon();
    const pod = await f.newPod("store-restored");
    const mark = daemon.logs.length;
    const id = await f.cri.restoreFromArchive(pod.podId, pod.config, thin, "cuda", { mounts: f.gpuMounts() });
    await f.cri.startContainer(id);
    await f.assertRunningOnGpu(id, { checkpoints: 1, restores: 1, verified: 1, verifyFailures: 0 });
    const linked = await daemon.waitForLog((l) => l.msg === "page images linked from the page store", {
      since: mark,
    });
    assert.equal(linked.checkpointId, checkpointId);
    assert.equal(linked.method, "hard link");
    assert.deepEqual(await store.inUse(), [], "released once the restore ran");
  });

  test("archive inline makes it self-contained; with the store emptied the thin archive is refused at pre-restore, the inline one restores", async () => {
    const daemon = await storeDaemon();
    const full = f.archivePath("inline");
    const inline = await kybernate(["archive", "inline", thin, "-o", full, "--socket", daemon.socket]);
    assert.equal(inline.code, 0, inline.stderr);
    assert.match(inline.stdout, new RegExp(`checkpoint ${checkpointId}`));
    const inside = members(full);
    assert.ok(inside.pages.length > 0 && !inside.manifest, JSON.stringify(inside));
    assert.ok(statSync(full).size > MIB * 2 ** 20);

    const gc = await kybernate(["store", "gc", "--keep", "0", "--socket", daemon.socket]);
    assert.equal(gc.code, 0, gc.stderr);
    assert.equal((await store.entries()).length, 0, `the store is empty: ${gc.stdout}`);

    const refusedPod = await f.newPod("store-thin-refused");
    const mark = daemon.logs.length;
    const refused = await f.cri.restoreFromArchive(refusedPod.podId, refusedPod.config, thin, "cuda", {
      mounts: f.gpuMounts(),
    });
    await assert.rejects(f.cri.startContainer(refused), /pre-restore|criu|restore/i);
    const failure = await daemon.waitForLog(
      (l) => l.containerId === refused && l.msg === "GPU stage failed",
      {
        since: mark,
      },
    );
    assert.match(
      String(failure.error),
      new RegExp(
        `checkpoint ${checkpointId} keeps its page images in the page store of node test-node-a, and the page store ${storeDir} of this node \\(test-node-a\\) does not have them: .*kybernate archive inline.*; nothing was restored`,
      ),
    );
    const state = (await f.cri.containerStatus(refused)).status;
    assert.equal(state?.state, "CONTAINER_EXITED", "nothing restored");

    const pod = await f.newPod("store-inline-restored");
    const id = await f.cri.restoreFromArchive(pod.podId, pod.config, full, "cuda", { mounts: f.gpuMounts() });
    await f.cri.startContainer(id);
    await f.assertRunningOnGpu(id, { checkpoints: 1, restores: 1, verified: 1, verifyFailures: 0 });
  });

  test("archive thin of the self-contained archive restores through the store again", async () => {
    const daemon = await storeDaemon();
    const thinAgain = f.archivePath("thin-again");
    const r = await kybernate([
      "archive",
      "thin",
      f.archivePath("inline"),
      "-o",
      thinAgain,
      "--socket",
      daemon.socket,
    ]);
    assert.equal(r.code, 0, r.stderr);
    assert.deepEqual(members(thinAgain).pages, []);
    const pod = await f.newPod("store-thin-again");
    const id = await f.cri.restoreFromArchive(pod.podId, pod.config, thinAgain, "cuda", {
      mounts: f.gpuMounts(),
    });
    await f.cri.startContainer(id);
    await f.assertRunningOnGpu(id, { restores: 1, verified: 1, verifyFailures: 0 });
  });
});

describe("the store's lifetime", () => {
  test("it keeps the newest 2 checkpoints of a container; pages a restore holds survive gc until the restore's container goes", async () => {
    const daemon = await storeDaemon();
    const pod = await f.newPod("store-keep");
    const id = await f.gpuContainer(pod);
    const ids: string[] = [];
    for (let i = 0; i < 3; i++) {
      const archive = f.archivePath(`keep-${i}`);
      // kybernate's own CLI: it tells the store where the archive went.
      const c = await kybernate([
        "checkpoint",
        id,
        "-o",
        archive,
        "--timeout",
        "60",
        "--runtime-endpoint",
        f.node.criSocket,
        "--socket",
        daemon.socket,
      ]);
      assert.equal(c.code, 0, c.stderr);
      assert.match(c.stdout, /thin: pages in this node's page store as checkpoint /);
      ids.push((await manifestOf(archive)).checkpointId);
      await f.assertRunningOnGpu(id, { checkpoints: i + 1, restores: i + 1 });
    }
    const until = Date.now() + 10_000;
    const mine = async () =>
      (await store.entries()).filter((e) => e.record?.containerId === id).map((e) => e.id);
    while ((await mine()).length > 2 && Date.now() < until) await sleep(100);
    assert.deepEqual((await mine()).sort(), ids.slice(1).sort(), "the oldest went");

    // A restore whose CRIU fails after pre-restore linked the pages (the double's /kyb mount left out, the GPU
    // device kept: still a GPU container): they stay in use.
    const failing = await f.newPod("store-in-use");
    const gpuOnly = f.gpuMounts().filter((m) => m.containerPath !== "/kyb");
    const holder = await f.cri.restoreFromArchive(
      failing.podId,
      failing.config,
      f.archivePath("keep-2"),
      "cuda",
      {
        mounts: gpuOnly,
      },
    );
    await assert.rejects(f.cri.startContainer(holder));
    assert.deepEqual(
      (await store.inUse()).map((u) => u.checkpointId),
      [ids[2]],
      "the failed restore still holds its pages",
    );
    const gc = await kybernate(["store", "gc", "--keep", "0", "--socket", daemon.socket]);
    assert.equal(gc.code, 0, gc.stderr);
    assert.match(gc.stdout, new RegExp(`kept\\t${ids[2]}\\tbeyond keep, but a restore uses it`));
    assert.deepEqual(await mine(), [ids[2]]);
    await f.cri.removeContainer(holder);
    const released = Date.now() + 10_000;
    while ((await store.inUse()).length > 0 && Date.now() < released) await sleep(100);
    assert.deepEqual(await store.inUse(), [], "released when its container was removed");
    await kybernate(["store", "gc", "--keep", "0", "--socket", daemon.socket]);
    assert.deepEqual(await mine(), []);
    const ls = await kybernate(["store", "ls", "--socket", daemon.socket]);
    assert.equal(ls.code, 0, ls.stderr);
    assert.match(ls.stdout, new RegExp(`^page store ${storeDir} on node test-node-a, keeps 2 per container`));
  });

  test("ctr tasks checkpoint works with the store on: the container goes on, its pages are in the store", async () => {
    await storeDaemon();
    const pod = await f.newPod("store-ctr");
    const id = await f.gpuContainer(pod);
    const before = (await store.entries()).length;
    await run(f.node.bin.ctr, [
      "--address",
      f.node.containerdSocket,
      "-n",
      f.node.namespace,
      "tasks",
      "checkpoint",
      id,
    ]);
    await f.assertRunningOnGpu(id, { checkpoints: 1, restores: 1, verifyFailures: 0 });
    assert.equal((await store.entries()).length, before + 1);
  });

  test("kybernate checkpoint --push with the store on: the image carries every page (inlined), the archive kept with --output stays thin", async () => {
    const daemon = await storeDaemon();
    const pod = await f.newPod("store-push");
    const id = await f.gpuContainer(pod, { mib: MIB });
    const repo = "kybernate-test/store-push";
    const tag = String(Date.now());
    const output = f.archivePath("store-push");
    const r = await kybernate([
      "checkpoint",
      id,
      "--push",
      `${f.node.registry}/${repo}:${tag}`,
      "--output",
      output,
      "--runtime-endpoint",
      f.node.criSocket,
      "--socket",
      daemon.socket,
    ]);
    assert.equal(r.code, 0, r.stderr);
    await f.assertRunningOnGpu(id, { checkpoints: 1, restores: 1, verifyFailures: 0 });
    assert.deepEqual(members(output).pages, [], "the archive on this node is thin");
    assert.deepEqual(
      readdirSync(dirname(output)).filter((n) => n.endsWith(".inline.tar")),
      [],
      "no inlined copy left",
    );
    const res = await fetch(`http://${f.node.registry}/v2/${repo}/manifests/${tag}`, {
      headers: { accept: "application/vnd.oci.image.manifest.v1+json" },
    });
    assert.equal(res.status, 200);
    const manifest = (await res.json()) as { layers: Array<{ size: number }> };
    const layerBytes = manifest.layers.reduce((n, l) => n + l.size, 0);
    assert.ok(layerBytes >= MIB * 2 ** 20, `the image's layer is ${layerBytes} bytes for ${MIB} MiB of VRAM`);
  });

  test('a container annotated kybernate.io/page-store: "false" gets a self-contained archive', async () => {
    await storeDaemon();
    const pod: Pod = await f.newPod("store-opt-out");
    const id = await f.cri.createContainer(pod.podId, pod.config, {
      name: "cuda",
      image: f.node.image,
      command: ["/kyb/fake-cuda-workload", "--mib", "32"],
      mounts: f.gpuMounts(),
      annotations: { "kybernate.io/page-store": "false" },
    });
    await f.cri.startContainer(id);
    await f.waitFor(id, (all) => all.every((s) => s.state === "running" && s.counter > 5));
    await f.checkpointOrShowLogs(id, "opt-out");
    const inside = members(f.archivePath("opt-out"));
    assert.ok(inside.pages.length > 0 && !inside.manifest, JSON.stringify(inside));
  });
});

describe("disk admission", () => {
  test("a checkpoint that does not fit on containerd's temp dir is refused before the GPU stage, naming the filesystem, its need and its room", async () => {
    await f.kyb?.stop();
    f.kyb = undefined;
    const daemon = await f.startDaemon(undefined, ["--vram-estimate-mib", "32"]);
    try {
      const pod = await f.newPod("disk-small");
      const id = await f.gpuContainer(pod);
      const temp = join(dirname(f.node.root), "tmp");
      mkdirSync(temp, { recursive: true });
      execFileSync("mount", ["-t", "tmpfs", "-o", "size=16m", "kyb-small", temp]);
      const mark = daemon.logs.length;
      try {
        await assert.rejects(f.cri.checkpoint(id, f.archivePath("disk-small"), 60), /criu failed|kybernate/i);
      } finally {
        execFileSync("umount", [temp]);
      }
      const refusal = await daemon.waitForLog((l) => l.containerId === id && l.msg === "GPU stage failed", {
        since: mark,
      });
      assert.match(
        String(refusal.error),
        new RegExp(
          `^disk admission refused the checkpoint of container ${id}: at its peak it needs \\d+ MiB on the filesystem mounted at ${temp} \\(kyb-small, tmpfs\\) — .* but 16 MiB is free there; nothing was frozen or locked`,
        ),
      );
      assert.ok(
        !daemon.logs.slice(mark).some((l) => l.msg === "gpu checkpoint starting"),
        "no driver step was taken",
      );
      await f.assertRunningOnGpu(id, { checkpoints: 0, verifyFailures: 0 });
      await f.assertExecWorks(id);
      assert.deepEqual(readdirSync(join(daemon.stateDir, "journal")), []);
    } finally {
      await daemon.stop();
      f.kyb = undefined;
    }
  });
});

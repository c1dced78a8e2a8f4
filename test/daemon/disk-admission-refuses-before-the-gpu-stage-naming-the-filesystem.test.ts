/**
 * The disk admission: a self-contained checkpoint on containerd's CRI path needs ≈ 3× its image where containerd's
 * temp dir, root and the archive share a filesystem, one with the page store ≈ 1×; a checkpoint that does not fit
 * is refused before the driver is touched, naming the filesystem, the need and the free space. A long estimate
 * warns with the kubelet ?timeout= to use, and does not refuse.
 */
import assert from "node:assert/strict";
import { afterEach, test } from "node:test";
import { Deadline } from "../../src/base/deadline.js";
import { fixedEstimator } from "../../src/checkpoint/admission.js";
import { peakNeeds, planDisk } from "../../src/daemon/disk-admission.js";
import { preDump } from "../../src/daemon/pre-dump.js";
import { RateBook } from "../../src/daemon/rates.js";
import { ProcessState } from "../../src/gpu/types.js";
import type { Filesystem } from "../../src/host/filesystems.js";
import { hookRequest, type Rig, rig, states } from "./fakes.js";

const GiB = 2 ** 30;

/** One disk mounted at / with `freeGiB`, and a tmpfs at /run. */
function disks(freeGiB: number) {
  const root: Filesystem = {
    dev: 1n,
    mountPoint: "/",
    source: "/dev/vda",
    type: "ext4",
    freeBytes: freeGiB * GiB,
    sizeBytes: 64 * GiB,
  };
  const run: Filesystem = {
    dev: 2n,
    mountPoint: "/run",
    source: "tmpfs",
    type: "tmpfs",
    freeBytes: 1 * GiB,
    sizeBytes: GiB,
  };
  return async (path: string) => (path.startsWith("/run") ? run : root);
}

const criPath = {
  containerId: "c0ffee",
  imageDir: "/tmp/ctrd-checkpoint123",
  criuLog: "/var/lib/containerd/io.containerd.grpc.v1.cri/containers/c0ffee/ctrd-checkpoint/dump.log",
  containerdRoot: "/var/lib/containerd",
  archiveDir: "/var/lib/kubelet/checkpoints",
};

test("self-contained on one disk: 3× the image; refused naming the filesystem, its need and its room", async () => {
  const plan = await planDisk({ ...criPath, imageBytes: 16 * GiB, filesystemOf: disks(40) });
  assert.equal(plan.ok, false);
  assert.equal(plan.withStore, false);
  assert.deepEqual([...peakNeeds(plan.shares)], [["/", 48 * GiB]]);
  assert.match(
    plan.ok ? "" : plan.error,
    /at its peak it needs 48\.0 GiB on the filesystem mounted at \/ \(\/dev\/vda, ext4\) — 16\.0 GiB for containerd's content store, 16\.0 GiB for the unpacked copy under containerd's root, 16\.0 GiB for the archive — but 40\.0 GiB is free there; nothing was frozen or locked.*--page-store DIR/,
  );
});

test("with the page store on the temp dir's filesystem: ≈ 1× the image, admitted", async () => {
  const plan = await planDisk({
    ...criPath,
    imageBytes: 16 * GiB,
    storeDir: "/var/lib/kybernate/pages",
    filesystemOf: disks(40),
  });
  assert.equal(plan.ok, true);
  assert.equal(plan.withStore, true);
  const total = peakNeeds(plan.shares).get("/") ?? 0;
  assert.ok(total >= 16 * GiB && total < 16.2 * GiB, `${total / GiB} GiB`);
});

test("a page store on another filesystem: the checkpoint stays self-contained, and says why", async () => {
  const plan = await planDisk({
    ...criPath,
    imageBytes: 1 * GiB,
    storeDir: "/run/pages",
    filesystemOf: disks(40),
  });
  assert.equal(plan.ok, true);
  assert.equal(plan.withStore, false);
  assert.match(
    plan.ok ? (plan.selfContainedBecause ?? "") : "",
    /on another filesystem \(\/run\) than containerd's temp dir \/tmp \(\/\)/,
  );
});

test("ctr tasks checkpoint (no CRI work dir): the temp dir and the content store only", async () => {
  const { criuLog: _log, archiveDir: _dir, ...ctr } = criPath;
  const plan = await planDisk({ ...ctr, imageBytes: 10 * GiB, filesystemOf: disks(25) });
  assert.equal(plan.ok, true);
  assert.deepEqual([...peakNeeds(plan.shares)], [["/", 20 * GiB]]);
});

let r: Rig;
afterEach(() => r?.cleanup());

/** pre-dump over fakes, with a VRAM estimate (admission runs only when it knows what the freeze stages). */
async function preDumpWith(o: { freeGiB: number; vramGiB: number; hintS?: number }) {
  r = await rig();
  const c = r.host.addContainer(100, [101]);
  c.freezer.frozen = true;
  r.host.checkpointUnderWay();
  const estimate = await fixedEstimator(o.vramGiB * GiB)([101], []);
  const admit = r.policy.admit.bind(r.policy);
  r.policy.admit = async (ctx) => ({ ...(await admit(ctx)), estimate });
  const warnings: string[] = [];
  r.ctx.log = {
    ...r.ctx.log,
    child: () => ({ warn: (_o: unknown, m: string) => warnings.push(m), info() {}, debug() {}, error() {} }),
  } as never;
  r.ctx.checkpoint = {
    node: "node-a",
    disk: { enabled: true, containerdRoot: "/var/lib/containerd" },
    deadlineHintMs: (o.hintS ?? 120) * 1000,
    rates: new RateBook(),
    filesystemOf: disks(o.freeGiB),
  };
  const result = await preDump(
    r.ctx,
    hookRequest("pre-dump", 100, { imageDir: "/tmp/ctrd-checkpoint123" }),
    Deadline.after(2000, { what: "test" }),
  );
  return { c, result, warnings };
}

test("pre-dump: a checkpoint that does not fit is refused before any driver call; the container is frozen again", async () => {
  const { c, result } = await preDumpWith({ freeGiB: 10, vramGiB: 16 });
  assert.equal(result.reply.ok, false);
  assert.match(
    result.reply.error ?? "",
    /^disk admission refused the checkpoint of container c0ffee: at its peak it needs/,
  );
  assert.deepEqual(
    r.driver.calls.filter((x) => x.op !== "getState"),
    [],
    "nothing locked",
  );
  assert.deepEqual(states(r.driver, [101]), [ProcessState.RUNNING]);
  assert.equal(c.freezer.frozen, true, "frozen again for containerd's resume");
  assert.deepEqual(r.metrics.results, ["checkpoint:refused"]);
});

test("pre-dump: an estimate past --deadline-hint warns with the ?timeout= to use and goes on", async () => {
  const { result, warnings } = await preDumpWith({ freeGiB: 1000, vramGiB: 32 });
  assert.equal(result.reply.ok, true, result.reply.error);
  const warning = warnings.find((w) => /estimated at/.test(w)) ?? "";
  assert.match(
    warning,
    /the checkpoint of container c0ffee is estimated at \d+ s \(32\.0 GiB of VRAM: .* at the default rates \(no checkpoint measured on this node yet\)\), past --deadline-hint 120 s: .*\?timeout=\d+ .*--page-store/,
  );
  const timeout = Number(/\?timeout=(\d+)/.exec(warning)?.[1]);
  assert.ok(timeout > 120, `a timeout past the estimate: ${timeout}`);
});

test("pre-dump: an estimate within the hint says nothing", async () => {
  const { warnings } = await preDumpWith({ freeGiB: 1000, vramGiB: 1 });
  assert.deepEqual(
    warnings.filter((w) => /estimated at/.test(w)),
    [],
  );
});

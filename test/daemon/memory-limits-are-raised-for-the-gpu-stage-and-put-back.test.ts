/**
 * Memory limits below the VRAM a GPU stage stages: raised (journalled first) before the driver is touched, and
 * put back once the staged memory is gone — after a checkpoint's GPU state is back, after a restore's
 * post-resume, at once when the stage failed — never under memory the kernel could not reclaim, and never
 * over a value someone else wrote meanwhile. A crash leaves the record, and the next start puts them back.
 */
import assert from "node:assert/strict";
import { afterEach, test } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { Deadline } from "../../src/base/deadline.js";
import { silentLogger } from "../../src/base/log.js";
import { MemoryLimits } from "../../src/daemon/memory-limits.js";
import { preDump } from "../../src/daemon/pre-dump.js";
import { postResume, preRestore } from "../../src/daemon/restore.js";
import { ResumeWatchers } from "../../src/daemon/resume-watcher.js";
import { ProcessState } from "../../src/gpu/types.js";
import { hookRequest, type Rig, rig, states } from "./fakes.js";

const { RUNNING, CHECKPOINTED } = ProcessState;
const MiB = 1024 * 1024;
const C = "/sys/fs/cgroup/kubepods/pod1/c0ffee";
const POD = "/sys/fs/cgroup/kubepods/pod1";
let r: Rig;
let watchers: ResumeWatchers | undefined;
afterEach(async () => {
  await watchers?.close();
  r?.cleanup();
});

/** A frozen GPU container with a 96 MiB limit in a 128 MiB pod, using 40 MiB; a checkpoint stages 64 MiB. */
async function limitedContainer() {
  r = await rig();
  r.host.cgroups.add(C, 96 * MiB, 40 * MiB);
  r.host.cgroups.add(POD, 128 * MiB, 70 * MiB);
  const c = r.host.addContainer(100, [101], [C, POD]);
  c.freezer.frozen = true;
  r.policy.stagedBytes = 64 * MiB;
  return c;
}

const dump = () => preDump(r.ctx, hookRequest("pre-dump", 100), Deadline.after(2000));

async function until(what: string, ok: () => boolean | Promise<boolean>, ms = 3000): Promise<void> {
  const end = Date.now() + ms;
  while (!(await ok())) {
    if (Date.now() > end) assert.fail(`${what}: not within ${ms} ms`);
    await sleep(5);
  }
}

test("checkpoint: raised before the driver's checkpoint, kept while the VRAM is in host memory, back once the watcher restored it", async () => {
  const c = await limitedContainer();
  let limitAtCheckpoint: string | undefined;
  const checkpoint = r.driver.checkpoint.bind(r.driver);
  r.driver.checkpoint = async (pid, opts) => {
    limitAtCheckpoint = r.host.cgroups.limit(C);
    return checkpoint(pid, opts);
  };
  const result = await dump();
  assert.equal(result.reply.ok, true, result.reply.error);
  assert.equal(
    limitAtCheckpoint,
    String(160 * MiB),
    "raised by the staged 64 MiB before the driver moved it",
  );
  assert.equal(r.host.cgroups.limit(POD), String(192 * MiB), "the pod's limit too");
  assert.equal(r.limitRecords().length, 1, "journalled");
  // The staged copy is charged to the container now.
  r.host.cgroups.use(C, 104 * MiB);
  await sleep(50);
  assert.equal(r.host.cgroups.limit(C), String(160 * MiB), "kept while the VRAM sits in host memory");
  // containerd resumes the container; the watcher brings the GPU back and the staged copy is freed.
  watchers = new ResumeWatchers(r.ctx);
  r.ctx.containers.begin("c0ffee", "pre-dump");
  c.freezer.frozen = false;
  r.host.cgroups.use(C, 40 * MiB);
  watchers.start(result.watch ?? assert.fail("no watch"));
  await until(
    "limits back",
    () => r.host.cgroups.limit(C) === String(96 * MiB) && r.limitRecords().length === 0,
  );
  assert.equal(r.host.cgroups.limit(POD), String(128 * MiB));
  assert.deepEqual(states(r.driver, c.cudaPids), [RUNNING]);
});

test("the driver fails: rolled back, the limits back at once", async () => {
  await limitedContainer();
  r.driver.fault(101, "checkpoint", { kind: "fail" });
  const result = await dump();
  assert.equal(result.reply.ok, false);
  assert.equal(r.host.cgroups.limit(C), String(96 * MiB));
  assert.equal(r.host.cgroups.limit(POD), String(128 * MiB));
  assert.deepEqual(r.limitRecords(), []);
});

test("a limit cannot be raised: refused before the driver is touched, what was raised put back", async () => {
  await limitedContainer();
  r.host.cgroups.failWrite = (dir, _file, text) => dir === C && text !== String(96 * MiB);
  const result = await dump();
  assert.equal(result.reply.ok, false);
  assert.match(
    result.reply.error ?? "",
    /could not raise the memory limit .*c0ffee\/memory\.max.*busy.*keeps running untouched/,
  );
  assert.ok(!r.driver.calls.some((x) => x.op === "lock"), "the driver was never asked to lock");
  assert.equal(r.host.cgroups.limit(POD), String(128 * MiB), "the pod's raise undone");
  assert.deepEqual(r.limitRecords(), []);
});

test("put back only once what the kernel cannot reclaim fits under the original limit", async () => {
  await limitedContainer();
  await r.ctx.limits.raise(C, { containerId: "c0ffee", stage: "checkpoint" }, [
    { dir: C, file: "memory.max", from: String(96 * MiB), to: String(160 * MiB) },
  ]);
  r.host.cgroups.use(C, 120 * MiB);
  assert.equal(await r.ctx.limits.settle(C), false, "not while 120 MiB are held");
  assert.equal(r.host.cgroups.limit(C), String(160 * MiB));
  r.host.cgroups.use(C, 50 * MiB);
  await until(
    "put back by the retry",
    () => r.host.cgroups.limit(C) === String(96 * MiB) && r.limitRecords().length === 0,
  );
});

test("a limit someone else changed meanwhile is left as they set it", async () => {
  await limitedContainer();
  await r.ctx.limits.raise(C, { containerId: "c0ffee", stage: "checkpoint" }, [
    { dir: C, file: "memory.max", from: String(96 * MiB), to: String(160 * MiB) },
  ]);
  await r.host.cgroups.writeLimit(C, "memory.max", String(256 * MiB));
  assert.equal(await r.ctx.limits.settle(C), true);
  assert.equal(r.host.cgroups.limit(C), String(256 * MiB));
});

test("a second raise before the first was put back keeps the original: never raised on top of a raise", async () => {
  await limitedContainer();
  const raise = (from: number) =>
    r.ctx.limits.raise(C, { containerId: "c0ffee", stage: "checkpoint" }, [
      { dir: C, file: "memory.max", from: String(from), to: String(from + 64 * MiB) },
    ]);
  await raise(96 * MiB);
  await raise(160 * MiB);
  assert.equal(r.host.cgroups.limit(C), String(160 * MiB));
  assert.equal(await r.ctx.limits.settle(C), true);
  assert.equal(r.host.cgroups.limit(C), String(96 * MiB));
});

test("a crash with limits raised: the next start puts them back, but not under a checkpoint the journal still repairs", async () => {
  await limitedContainer();
  await r.ctx.limits.raise(C, { containerId: "c0ffee", stage: "checkpoint" }, [
    { dir: C, file: "memory.max", from: String(96 * MiB), to: String(160 * MiB) },
  ]);
  r.ctx.limits.close();
  const restarted = new MemoryLimits(`${r.stateDir}/memory-limits`, r.host.cgroups, silentLogger, {
    retryMs: 10,
    marginBytes: 0,
  });
  await restarted.recover(new Set(["c0ffee"]));
  assert.equal(r.host.cgroups.limit(C), String(160 * MiB), "left to the watcher of the journal entry");
  await restarted.recover();
  assert.equal(r.host.cgroups.limit(C), String(96 * MiB));
  assert.deepEqual(r.limitRecords(), []);
  restarted.close();
});

/** A restore: CRIU (pid 9000) is in the restored container's cgroup, whose limit is below what it staged. */
async function restoring() {
  r = await rig();
  // Only CRIU is in the cgroup yet; what the container held at checkpoint comes back with the staged VRAM.
  r.host.cgroups.add(C, 96 * MiB, 4 * MiB);
  r.host.addContainer(9000, [], [C]);
  const c = r.host.addContainer(200, [201], [C]);
  r.driver.states.set(201, CHECKPOINTED);
  r.policy.plan = {
    ok: true,
    deviceMap: [],
    reason: "same GPUs",
    stagedBytes: 64 * MiB,
    usageBytes: 36 * MiB,
  };
  return c;
}

test("restore: raised at pre-restore, kept while CRIU restores the pages, back after post-resume moved the VRAM back", async () => {
  const c = await restoring();
  assert.deepEqual(await preRestore(r.ctx, hookRequest("pre-restore", 0)), { ok: true });
  assert.equal(r.host.cgroups.limit(C), String(160 * MiB));
  r.host.cgroups.traces.add(C);
  assert.equal(await r.ctx.limits.settle(C), false, "not while CRIU still restores into the cgroup");
  r.host.cgroups.traces.delete(C);
  const reply = await postResume(r.ctx, hookRequest("post-resume", 200), Deadline.after(2000));
  assert.equal(reply.ok, true, reply.error);
  assert.deepEqual(states(r.driver, c.cudaPids), [RUNNING]);
  await until("limit back", () => r.host.cgroups.limit(C) === String(96 * MiB));
});

test("restore: the node lacks the room: pre-restore refuses, naming it, nothing raised", async () => {
  await restoring();
  r.policy.refuseRestore =
    "host-RAM admission refused the restore of container c0ffee: MemAvailable is 100 MiB";
  const reply = await preRestore(r.ctx, hookRequest("pre-restore", 0));
  assert.equal(reply.ok, false);
  assert.match(reply.error ?? "", /MemAvailable is 100 MiB; nothing was restored/);
  assert.equal(r.host.cgroups.limit(C), String(96 * MiB));
});

test("restore: post-resume fails for good: the VRAM stays staged, and so do the raised limits", async () => {
  await restoring();
  await preRestore(r.ctx, hookRequest("pre-restore", 0));
  r.driver.fault(201, "restore", { kind: "fail" });
  const reply = await postResume(r.ctx, hookRequest("post-resume", 200), Deadline.after(2000));
  assert.equal(reply.ok, false);
  assert.equal(r.host.cgroups.limit(C), String(160 * MiB));
  assert.equal(r.limitRecords().length, 1);
});

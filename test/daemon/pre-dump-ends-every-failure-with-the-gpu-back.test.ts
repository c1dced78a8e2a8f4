/**
 * The pre-dump stage over fakes: on success the VRAM is in host memory, the container frozen again and a watch
 * left for the resume; on every failure after the driver was touched the processes end RUNNING (or a watch is
 * left that will bring them back), the journal says so, and the error names the cause.
 */
import assert from "node:assert/strict";
import { afterEach, test } from "node:test";
import { Deadline } from "../../src/base/deadline.js";
import { preDump } from "../../src/daemon/pre-dump.js";
import { ProcessState } from "../../src/gpu/types.js";
import { hookRequest, type Rig, rig, states } from "./fakes.js";

const { RUNNING, CHECKPOINTED } = ProcessState;
let r: Rig;
afterEach(() => r?.cleanup());

/** A frozen container (containerd paused it) with two CUDA processes. */
async function frozenContainer(timing = {}) {
  r = await rig(timing);
  const c = r.host.addContainer(100, [101, 102]);
  c.freezer.frozen = true;
  return c;
}

const run = (budgetMs = 2000) =>
  preDump(r.ctx, hookRequest("pre-dump", 100), Deadline.after(budgetMs, { what: "test stage" }));

test("success: VRAM in host memory, the container frozen again, a watch left and journalled", async () => {
  const c = await frozenContainer();
  const result = await run();
  assert.equal(result.reply.ok, true, result.reply.error);
  assert.deepEqual(states(r.driver, c.cudaPids), [CHECKPOINTED, CHECKPOINTED]);
  assert.equal(c.freezer.frozen, true, "frozen again for containerd's resume");
  assert.deepEqual(result.watch?.entry.pids, [101, 102]);
  assert.deepEqual(
    r.journalEntries().map((e) => e.action),
    ["thaw-after-resume"],
  );
  assert.deepEqual(r.metrics.results, ["checkpoint:success"]);
});

const failures: Array<{
  name: string;
  arrange: (c: Awaited<ReturnType<typeof frozenContainer>>) => void;
  budgetMs?: number;
  error: RegExp;
}> = [
  {
    name: "the driver fails on one process: the set is rolled back",
    arrange: () => r.driver.fault(102, "checkpoint", { kind: "fail" }),
    error: /GPU checkpoint failed at process 102: .*unknown error.*every process is back on the GPU/,
  },
  {
    name: "the GPU stage runs past its budget: the driver call is cut and the set rolled back",
    arrange: () => r.driver.fault(101, "checkpoint", { kind: "hang" }),
    budgetMs: 150,
    error: /DEADLINE_EXCEEDED.*over its budget of 150 ms.*raise kybernate's --gpu-budget/,
  },
  {
    name: "the container cannot be frozen again: the GPU is brought back",
    arrange: (c) => {
      c.freezer.failFreeze = true;
    },
    error: /could not freeze the container again: cgroup .* did not freeze/,
  },
  {
    name: "something unexpected after the driver moved the VRAM: undone",
    arrange: () => {
      r.policy.failRecord = true;
    },
    error: /the GPU stage failed: metadata writer broke/,
  },
  {
    name: "a CUDA process still holds what CRIU cannot dump once its GPU state is out: the GPU put back",
    arrange: () => {
      r.policy.undumpableAfterFreeze = "refusing to checkpoint: process 101 (python3) uses io_uring (…)";
    },
    error: /^refusing to checkpoint: process 101 \(python3\) uses io_uring/,
  },
];

for (const f of failures) {
  test(`${f.name}; every process RUNNING, the journal empty`, async () => {
    const c = await frozenContainer();
    f.arrange(c);
    const result = await run(f.budgetMs);
    assert.equal(result.reply.ok, false);
    assert.match(result.reply.error ?? "", f.error);
    assert.deepEqual(states(r.driver, c.cudaPids), [RUNNING, RUNNING]);
    // containerd paused the container: a watch stays until it runs again, with no GPU state to bring back.
    assert.deepEqual(result.watch?.entry.pids ?? [], [], "no GPU state left to bring back");
    assert.deepEqual(
      r.journalEntries().map((e) => e.pids),
      result.watch ? [[]] : [],
    );
    assert.ok(r.metrics.results.includes("checkpoint:failure"), JSON.stringify(r.metrics.results));
    assert.equal(r.ctx.containers.last("c0ffee")?.ok, false, "the failure is the container's last operation");
  });
}

test("the driver answers only after the budget: undone after the fact; every process RUNNING, the journal empty", async () => {
  r = await rig();
  const c = r.host.addContainer(100, [101]);
  c.freezer.frozen = true;
  // The call holds the event loop past the budget, so it answers before its deadline's timer can fire.
  r.driver.fault(101, "checkpoint", { kind: "busy", ms: 500 });
  const result = await run(400);
  assert.match(result.reply.error ?? "", /^the GPU stage took \d+ ms, over its budget of 400 ms/);
  assert.deepEqual(states(r.driver, c.cudaPids), [RUNNING]);
  assert.deepEqual(result.watch?.entry.pids ?? [], []);
  assert.ok(r.metrics.results.includes("checkpoint:failure"));
});

test("the driver fails and so does the rollback: the entry stays journalled and a watch will finish it", async () => {
  const c = await frozenContainer();
  r.driver.fault(102, "unlock", { kind: "fail" });
  r.driver.fault(101, "checkpoint", { kind: "fail" });
  const result = await run();
  assert.equal(result.reply.ok, false);
  assert.match(result.reply.error ?? "", /ROLLBACK INCOMPLETE/);
  assert.deepEqual(result.watch?.entry.pids, c.cudaPids);
  assert.deepEqual(
    r.journalEntries().map((e) => e.action),
    ["thaw-after-resume"],
  );
});

test("the container cannot be frozen again and the undo fails too: a watch is left", async () => {
  const c = await frozenContainer();
  c.freezer.failFreeze = true;
  r.driver.fault(101, "restore", { kind: "fail" });
  const result = await run();
  assert.equal(result.reply.ok, false);
  assert.match(result.reply.error ?? "", /could not freeze the container again/);
  assert.equal(result.watch?.entry.action, "thaw-after-resume");
  assert.equal(r.journalEntries().length, 1);
});

test("admission refuses: nothing touched, nothing journalled, counted as refused", async () => {
  const c = await frozenContainer();
  r.policy.refuse = "host-RAM admission refused the checkpoint of container c0ffee: …";
  const result = await run();
  assert.match(result.reply.error ?? "", /host-RAM admission refused/);
  assert.deepEqual(states(r.driver, c.cudaPids), [RUNNING, RUNNING]);
  assert.equal(r.driver.calls.filter((x) => x.op !== "getState").length, 0, "no driver step taken");
  assert.deepEqual(
    r.journalEntries().map((e) => e.pids),
    [[]],
    "only the watch for containerd's resume",
  );
  assert.deepEqual(r.metrics.results, ["checkpoint:refused"]);
  assert.equal(c.freezer.frozen, true);
});

test("containerd abandons the checkpoint mid-stage (runc killed): the stage stops at once, the GPU back", async () => {
  const c = await frozenContainer();
  const checkpoint = r.host.checkpointUnderWay();
  r.driver.fault(101, "checkpoint", { kind: "slow", ms: 1500 });
  r.driver.fault(102, "lock", { kind: "slow", ms: 400 });
  setTimeout(() => checkpoint.cut(), 100);
  const t0 = Date.now();
  const result = await run(10_000);
  assert.match(result.reply.error ?? "", /containerd abandoned the checkpoint: runc \(pid 8999\) was killed/);
  // The driver finishes 101's checkpoint (1.5 s; no driver call can be interrupted), then it is rolled back;
  // 102 never takes its checkpoint step. Without the abandonment the stage would run to its 10 s budget.
  assert.ok(Date.now() - t0 < 2500, `the stage went on for ${Date.now() - t0} ms`);
  assert.equal(r.driver.calls.filter((x) => x.pid === 102 && x.op === "checkpoint").length, 0);
  assert.deepEqual(states(r.driver, c.cudaPids), [RUNNING, RUNNING]);
  assert.equal(result.watch?.caller?.abandoned, true, "the watch knows containerd abandoned it");
  assert.deepEqual(result.watch?.caller?.task, { namespace: "k8s.io", containerId: "c0ffee" });
});

test("no running CUDA process: nothing to move, success", async () => {
  r = await rig();
  r.host.addContainer(100, []);
  const result = await run();
  assert.deepEqual(result.reply, { ok: true, data: { pids: [] } });
  assert.equal(result.watch, undefined);
});

test("the container is gone: the error names its cgroup", async () => {
  r = await rig();
  const result = await run();
  assert.match(result.reply.error ?? "", /cannot find the container's cgroup: pid 100 not found/);
});

test("the journal cannot take the resume watch (disk full): the watch is still returned, from memory", async () => {
  const c = await frozenContainer();
  const record = r.ctx.journal.record.bind(r.ctx.journal);
  r.ctx.journal.record = async (entry) => {
    if (entry.action === "thaw-after-resume") throw new Error("ENOSPC: no space left on device");
    await record(entry);
  };
  const result = await run();
  assert.equal(result.reply.ok, true, result.reply.error);
  assert.deepEqual(states(r.driver, c.cudaPids), [CHECKPOINTED, CHECKPOINTED]);
  assert.deepEqual(result.watch?.entry.pids, [101, 102], "a watcher will bring them back");
  assert.deepEqual(
    r.journalEntries().map((e) => e.action),
    ["pre-dump"],
    "the moved processes stay journalled for a repair after a crash",
  );
});

/**
 * Restore's two stages over fakes: pre-restore refuses what this node cannot restore while a refusal still fails
 * StartContainer cleanly; post-resume brings every process back, retrying a failed restore (runc ignores a
 * post-resume failure, so nobody else would), and never restores onto GPUs the plan refuses.
 */
import assert from "node:assert/strict";
import { afterEach, test } from "node:test";
import { Deadline } from "../../src/base/deadline.js";
import { postResume, preRestore } from "../../src/daemon/restore.js";
import { ProcessState } from "../../src/gpu/types.js";
import { hookRequest, type Rig, rig, states } from "./fakes.js";

const { RUNNING, CHECKPOINTED } = ProcessState;
const MAP = [
  { from: "GPU-aaaaaaaa-0000-0000-0000-000000000000", to: "GPU-bbbbbbbb-0000-0000-0000-000000000000" },
];
let r: Rig;
afterEach(() => r?.cleanup());

/** A restored container: its processes run, their GPU state still CHECKPOINTED in host memory. */
async function restored() {
  r = await rig();
  const c = r.host.addContainer(200, [201, 202]);
  for (const pid of c.cudaPids) r.driver.states.set(pid, CHECKPOINTED);
  return c;
}

const resume = () => postResume(r.ctx, hookRequest("post-resume", 200), Deadline.after(2000));

test("pre-restore keeps the plan and its device map; post-resume restores onto it and forgets both", async () => {
  const c = await restored();
  r.policy.plan = { ok: true, deviceMap: MAP, reason: "other GPUs of the same model" };
  assert.deepEqual(await preRestore(r.ctx, hookRequest("pre-restore", 0)), { ok: true });
  assert.deepEqual(await r.ctx.plans.load("c0ffee"), MAP, "the map is on disk for a repair after a crash");
  r.policy.plan = { ok: false, error: "must not be asked again" };
  const reply = await resume();
  assert.equal(reply.ok, true, reply.error);
  assert.deepEqual(states(r.driver, c.cudaPids), [RUNNING, RUNNING]);
  assert.ok(r.driver.calls.some((x) => x.op === "restore" && x.deviceMap?.[0]?.to === MAP[0]?.to));
  assert.equal(await r.ctx.plans.load("c0ffee"), undefined);
  assert.deepEqual(r.journalEntries(), []);
});

test("pre-restore refuses an incompatible target: nothing was restored, counted as refused", async () => {
  await restored();
  r.policy.plan = { ok: false, error: "refusing to restore: the checkpoint was taken on NVIDIA H200" };
  const reply = await preRestore(r.ctx, hookRequest("pre-restore", 0));
  assert.equal(reply.ok, false);
  assert.match(
    reply.error ?? "",
    /refusing to restore: .*; nothing was restored \(the checkpoint archive is unchanged\)/,
  );
  assert.deepEqual(r.metrics.results, ["restore:refused"]);
});

test("post-resume without a pre-restore plans itself; a refusal leaves the processes CHECKPOINTED, named", async () => {
  const c = await restored();
  r.policy.plan = { ok: false, error: "refusing to restore: another GPU model" };
  const reply = await resume();
  assert.match(
    reply.error ?? "",
    /another GPU model; the restored processes stay CHECKPOINTED \(pids 201, 202\)/,
  );
  assert.deepEqual(states(r.driver, c.cudaPids), [CHECKPOINTED, CHECKPOINTED]);
  assert.equal(r.driver.calls.filter((x) => x.op === "restore").length, 0);
});

test("a restore the driver fails once is retried and the set ends RUNNING, counted as a retry repair", async () => {
  const c = await restored();
  r.driver.fault(202, "restore", { kind: "fail", times: 1 });
  const reply = await resume();
  assert.equal(reply.ok, true, reply.error);
  assert.deepEqual(states(r.driver, c.cudaPids), [RUNNING, RUNNING]);
  assert.deepEqual(r.metrics.repairs, ["retry:2"]);
  assert.deepEqual(r.metrics.results, ["restore:success"]);
});

test("a restore that keeps failing: reported after the retries, the entry done, the VRAM safe in host memory", async () => {
  const c = await restored();
  r.driver.fault(201, "restore", { kind: "fail" });
  const reply = await resume();
  assert.equal(reply.ok, false);
  assert.match(reply.error ?? "", /GPU (restore|ensureRunning) failed at process 201/);
  assert.equal(
    r.driver.calls.filter((x) => x.pid === 201 && x.op === "restore").length >= 4,
    true,
    "tried again",
  );
  assert.equal(states(r.driver, c.cudaPids)[0], CHECKPOINTED);
  assert.deepEqual(r.metrics.results, ["restore:failure"]);
});

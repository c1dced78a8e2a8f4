/**
 * Repairs after a (re)start, over fakes: the journal's unfinished operations get a watcher; GPU processes left
 * LOCKED or CHECKPOINTED in a running container are brought back onto the GPUs a restore planned; a container
 * frozen or traced is mid-checkpoint and left alone.
 */
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { afterEach, test } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { recover, repairStranded } from "../../src/daemon/repair.js";
import { ResumeWatchers } from "../../src/daemon/resume-watcher.js";
import { ProcessState } from "../../src/gpu/types.js";
import { type Rig, rig, states } from "./fakes.js";

const { RUNNING, LOCKED, CHECKPOINTED } = ProcessState;
const MAP = [
  { from: "GPU-aaaaaaaa-0000-0000-0000-000000000000", to: "GPU-bbbbbbbb-0000-0000-0000-000000000000" },
];
let r: Rig;
afterEach(() => r?.cleanup());

test("stranded processes in a running container are brought back onto the planned GPUs; the plan goes", async () => {
  r = await rig();
  r.host.addContainer(500, [501, 502]);
  r.driver.states.set(501, CHECKPOINTED);
  r.driver.states.set(502, LOCKED);
  await r.ctx.plans.save("c0ffee", MAP);
  await repairStranded(r.ctx, [{ containerId: "c0ffee", initPid: 500 }]);
  assert.deepEqual(states(r.driver, [501, 502]), [RUNNING, RUNNING]);
  assert.ok(r.driver.calls.some((x) => x.pid === 501 && x.op === "restore" && x.deviceMap?.length === 1));
  assert.equal(await r.ctx.plans.load("c0ffee"), undefined);
  assert.deepEqual(r.metrics.repairs, ["recovery:2"]);
  assert.equal(r.ctx.containers.last("c0ffee")?.action, "repair");
});

test("a frozen or traced container is mid-checkpoint: left to its journal entry", async () => {
  r = await rig();
  const frozen = r.host.addContainer(500, [501]);
  frozen.freezer.frozen = true;
  r.driver.states.set(501, CHECKPOINTED);
  r.host.addContainer(600, [601]);
  r.driver.states.set(601, CHECKPOINTED);
  r.host.processes.set(601, { startTime: "1", tracer: 4242 });
  await repairStranded(r.ctx, [
    { containerId: "frozen", initPid: 500 },
    { containerId: "traced", initPid: 600 },
  ]);
  assert.deepEqual(states(r.driver, [501, 601]), [CHECKPOINTED, CHECKPOINTED]);
});

test("an unfinished journal entry gets a watcher that brings its processes back once the container runs", async () => {
  r = await rig();
  r.host.addContainer(700, [701]);
  r.driver.states.set(701, LOCKED);
  await r.ctx.journal.record({
    id: randomUUID(),
    containerId: "c0ffee",
    action: "pre-dump",
    pids: [701],
    initPid: 700,
    startedAt: new Date().toISOString(),
  });
  const watchers = new ResumeWatchers(r.ctx);
  await recover(r.ctx, watchers);
  assert.equal(r.ctx.containers.isBusy("c0ffee"), true, "no checkpoint starts under the repair");
  const end = Date.now() + 2000;
  while (r.ctx.containers.isBusy("c0ffee") && Date.now() < end) await sleep(5);
  assert.deepEqual(states(r.driver, [701]), [RUNNING]);
  assert.deepEqual(r.journalEntries(), []);
  assert.deepEqual(r.metrics.repairs, ["recovery:1"]);
  await watchers.close();
});

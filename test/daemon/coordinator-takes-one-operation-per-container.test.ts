/**
 * The coordinator over fakes: one GPU operation per container at a time (a second is refused, naming the first),
 * a checkpoint's slot held by its resume watcher until the GPU is back, and the stage's deadline taken from
 * --gpu-budget, never past the moment the hook stops waiting.
 */
import assert from "node:assert/strict";
import { afterEach, test } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { Coordinator } from "../../src/daemon/coordinator.js";
import { HOOK_REPLY_MARGIN_MS } from "../../src/daemon/protocol.js";
import { ProcessState } from "../../src/gpu/types.js";
import { hookRequest, type Rig, rig } from "./fakes.js";

let r: Rig;
let coordinator: Coordinator | undefined;
afterEach(async () => {
  await coordinator?.close();
  r?.cleanup();
});

test("a second operation on a busy container is refused with the first one's name and start", async () => {
  r = await rig();
  const c = r.host.addContainer(400, [401]);
  c.freezer.frozen = true;
  r.driver.fault(401, "checkpoint", { kind: "slow", ms: 200 });
  coordinator = new Coordinator(r.ctx);
  const first = coordinator.handle(hookRequest("pre-dump", 400));
  await sleep(20);
  const second = await coordinator.handle(hookRequest("post-resume", 400));
  assert.match(second.error ?? "", /container c0ffee is busy: a pre-dump started at .* is still in progress/);
  assert.equal((await first).ok, true);
  assert.equal(r.ctx.containers.isBusy("c0ffee"), true, "the resume watcher holds the slot");
  c.freezer.frozen = false;
  const end = Date.now() + 2000;
  while (r.ctx.containers.isBusy("c0ffee") && Date.now() < end) await sleep(5);
  assert.equal(r.driver.states.get(401), ProcessState.RUNNING);
  assert.equal(r.ctx.containers.isBusy("c0ffee"), false, "freed once the GPU is back");
});

test("the stage's budget is --gpu-budget, cut to what the hook still waits for", async () => {
  r = await rig({ gpuBudgetMs: 60_000 });
  const c = r.host.addContainer(400, [401]);
  c.freezer.frozen = true;
  r.driver.fault(401, "checkpoint", { kind: "hang" });
  coordinator = new Coordinator(r.ctx);
  const t0 = Date.now();
  const reply = await coordinator.handle(
    hookRequest("pre-dump", 400, { deadlineMs: HOOK_REPLY_MARGIN_MS + 200 }),
  );
  assert.ok(Date.now() - t0 < 3000, "cut long before --gpu-budget");
  assert.match(reply.error ?? "", /over its budget of 2\d\d ms/);
  assert.equal(r.driver.states.get(401), ProcessState.RUNNING);
});

test("a request for a container that is not there answers at once and frees the slot", async () => {
  r = await rig();
  coordinator = new Coordinator(r.ctx);
  const reply = await coordinator.handle(hookRequest("pre-dump", 999));
  assert.match(reply.error ?? "", /cannot find the container's cgroup/);
  assert.equal(r.ctx.containers.isBusy("c0ffee"), false);
});

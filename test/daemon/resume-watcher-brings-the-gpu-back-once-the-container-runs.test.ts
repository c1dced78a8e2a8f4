/**
 * The resume watcher over fakes: no CRIU action fires after a leave-running or failed dump, so the watcher waits
 * for CRIU to exit and the container to run (thawed, untraced), then brings the GPU back; a container left frozen
 * after CRIU is thawed after the grace; one that exited needs nothing. The container's slot is freed at the end.
 */
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { afterEach, test } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import type { JournalEntry } from "../../src/daemon/journal.js";
import { ResumeWatchers } from "../../src/daemon/resume-watcher.js";
import { ProcessState } from "../../src/gpu/types.js";
import { type Rig, rig, states } from "./fakes.js";

const { RUNNING, CHECKPOINTED } = ProcessState;
let r: Rig;
let watchers: ResumeWatchers | undefined;
afterEach(async () => {
  await watchers?.close();
  r?.cleanup();
});

/** A container right after pre-dump: frozen, its processes CHECKPOINTED, CRIU (pid 9000) still dumping. */
async function checkpointed() {
  r = await rig({ frozenGraceMs: 150 });
  const c = r.host.addContainer(300, [301]);
  c.freezer.frozen = true;
  r.driver.states.set(301, CHECKPOINTED);
  r.host.processes.set(9000, { startTime: "7", tracer: 0 });
  r.host.processes.set(301, { startTime: "1", tracer: 9000 });
  const entry: JournalEntry = {
    id: randomUUID(),
    containerId: "c0ffee",
    action: "thaw-after-resume",
    pids: [301],
    initPid: 300,
    startedAt: new Date().toISOString(),
  };
  await r.ctx.journal.record(entry);
  r.ctx.containers.begin("c0ffee", "pre-dump");
  watchers = new ResumeWatchers(r.ctx);
  watchers.start({ entry, freezer: c.freezer, criu: { pid: 9000, startTime: "7" } });
  return c;
}

async function until(what: string, ok: () => boolean, ms = 2000): Promise<void> {
  const end = Date.now() + ms;
  while (!ok()) {
    if (Date.now() > end) assert.fail(`${what} did not happen within ${ms} ms`);
    await sleep(5);
  }
}

test("CRIU exits, containerd resumes: the GPU comes back, the journal entry and the slot are freed", async () => {
  const c = await checkpointed();
  await sleep(50);
  assert.equal(
    states(r.driver, [301])[0],
    CHECKPOINTED,
    "nothing while CRIU runs and the container is frozen",
  );
  r.host.processes.delete(9000);
  r.host.processes.set(301, { startTime: "1", tracer: 0 });
  c.freezer.frozen = false;
  await until("the restore", () => states(r.driver, [301])[0] === RUNNING);
  await until("the slot freed", () => !r.ctx.containers.isBusy("c0ffee"));
  assert.deepEqual(r.journalEntries(), []);
  assert.deepEqual(r.metrics.repairs, ["resume:1"]);
  assert.equal(r.ctx.containers.last("c0ffee")?.ok, true);
});

test("containerd never resumes (its context was cancelled): thawed after the grace, then the GPU comes back", async () => {
  const c = await checkpointed();
  r.host.processes.delete(9000);
  r.host.processes.set(301, { startTime: "1", tracer: 0 });
  await sleep(60);
  assert.equal(c.freezer.frozen, true, "not before the grace");
  await until("the thaw and restore", () => states(r.driver, [301])[0] === RUNNING, 3000);
  assert.equal(c.freezer.frozen, false);
});

test("the container exited after its checkpoint: nothing to bring back, the entry done", async () => {
  await checkpointed();
  r.host.processes.delete(9000);
  r.host.processes.delete(301);
  await until("the slot freed", () => !r.ctx.containers.isBusy("c0ffee"));
  assert.deepEqual(r.journalEntries(), []);
  assert.equal(r.driver.calls.filter((x) => x.op === "restore").length, 0);
});

test("a process still traced (CRIU's ptrace) is not touched", async () => {
  const c = await checkpointed();
  r.host.processes.delete(9000);
  c.freezer.frozen = false;
  await sleep(80);
  assert.equal(states(r.driver, [301])[0], CHECKPOINTED);
  r.host.processes.set(301, { startTime: "1", tracer: 0 });
  await until("the restore", () => states(r.driver, [301])[0] === RUNNING);
});

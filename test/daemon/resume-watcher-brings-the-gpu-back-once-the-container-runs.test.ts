/**
 * The resume watcher over fakes: no CRIU action fires after a leave-running or failed dump, so the watcher waits
 * for CRIU to exit and the container to run (thawed, untraced), then brings the GPU back; a container left frozen
 * after CRIU is thawed after the grace; one that exited needs nothing. The container's slot is freed at the end.
 */
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { afterEach, test } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { CheckpointCaller } from "../../src/daemon/checkpoint-caller.js";
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
async function checkpointed(pids = [301]) {
  r = await rig({ frozenGraceMs: 150 });
  const c = r.host.addContainer(300, pids);
  c.freezer.frozen = true;
  for (const pid of pids) r.driver.states.set(pid, CHECKPOINTED);
  const checkpoint = r.host.checkpointUnderWay();
  for (const pid of pids) r.host.processes.set(pid, { startTime: "1", tracer: 9000 });
  // containerd's shim: runc resume thaws the cgroup.
  r.runtime.onResume = () => {
    c.freezer.frozen = false;
  };
  const entry: JournalEntry = {
    id: randomUUID(),
    containerId: "c0ffee",
    action: "thaw-after-resume",
    pids,
    initPid: 300,
    startedAt: new Date().toISOString(),
  };
  await r.ctx.journal.record(entry);
  r.ctx.containers.begin("c0ffee", "pre-dump");
  watchers = new ResumeWatchers(r.ctx);
  const caller = await CheckpointCaller.find(r.host, {
    containerId: "c0ffee",
    criuPid: 9000,
    imageDir: "/proc/9000/fd/5",
  });
  watchers.start({ entry, freezer: c.freezer, caller });
  return { ...c, checkpoint };
}

/** CRIU done, its processes untraced (CRIU detached): what follows a dump. */
function criuDetached(pids = [301]) {
  r.host.processes.delete(9000);
  for (const pid of pids) r.host.processes.set(pid, { startTime: "1", tracer: 0 });
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

test("containerd never resumes though it finished with the images: resumed through containerd after the grace", async () => {
  const c = await checkpointed();
  c.checkpoint.finish();
  criuDetached();
  await sleep(60);
  assert.equal(c.freezer.frozen, true, "not before the grace");
  await until("the resume and restore", () => states(r.driver, [301])[0] === RUNNING, 3000);
  assert.deepEqual(r.runtime.resumed, [{ namespace: "k8s.io", containerId: "c0ffee" }]);
});

test("containerd still has CRIU's images (it is storing them): no resume, however long it stays frozen", async () => {
  const c = await checkpointed();
  r.host.processes.delete(9000);
  r.host.processes.delete(8999);
  r.host.processes.set(301, { startTime: "1", tracer: 0 });
  await sleep(400);
  assert.equal(c.freezer.frozen, true);
  assert.deepEqual(r.runtime.resumed, []);
  c.checkpoint.finish();
  c.freezer.frozen = false;
  await until("the restore", () => states(r.driver, [301])[0] === RUNNING);
});

test("the caller's deadline cuts the checkpoint (runc killed): resumed through containerd at once, the GPU back", async () => {
  const c = await checkpointed();
  c.checkpoint.cut();
  await sleep(30);
  const cutAt = Date.now();
  criuDetached();
  await until("the restore", () => states(r.driver, [301])[0] === RUNNING, 2000);
  assert.ok(Date.now() - cutAt < 1000, `took ${Date.now() - cutAt} ms after CRIU exited`);
  assert.deepEqual(r.runtime.resumed, [{ namespace: "k8s.io", containerId: "c0ffee" }]);
  await until("the slot freed", () => !r.ctx.containers.isBusy("c0ffee"));
  assert.deepEqual(r.journalEntries(), [], "journal done");
});

test("containerd unreachable: the cgroup is thawed instead, and the GPU comes back", async () => {
  const c = await checkpointed();
  r.runtime.unreachable = true;
  c.checkpoint.cut();
  await sleep(30);
  criuDetached();
  await until("the restore", () => states(r.driver, [301])[0] === RUNNING, 2000);
  assert.equal(c.freezer.frozen, false);
  assert.deepEqual(r.runtime.resumed, []);
});

test("nothing was moved (no CUDA process) and the checkpoint is cut: the task is still resumed", async () => {
  const c = await checkpointed([]);
  c.checkpoint.cut();
  await sleep(30);
  criuDetached([]);
  await until("the resume", () => r.runtime.resumed.length === 1, 2000);
  await until("the slot freed", () => !r.ctx.containers.isBusy("c0ffee"));
  assert.equal(c.freezer.frozen, false);
});

test("the container exited after its checkpoint: nothing to bring back, the entry done", async () => {
  const c = await checkpointed();
  c.checkpoint.finish();
  r.host.processes.delete(301);
  r.host.processes.delete(300);
  await until("the slot freed", () => !r.ctx.containers.isBusy("c0ffee"));
  assert.deepEqual(r.journalEntries(), []);
  assert.equal(r.driver.calls.filter((x) => x.op === "restore").length, 0);
});

test("a process still traced (CRIU's ptrace) is not touched", async () => {
  const c = await checkpointed();
  c.checkpoint.finish();
  c.freezer.frozen = false;
  await sleep(80);
  assert.equal(states(r.driver, [301])[0], CHECKPOINTED);
  r.host.processes.set(301, { startTime: "1", tracer: 0 });
  await until("the restore", () => states(r.driver, [301])[0] === RUNNING);
});

test("a step that throws (the journal on a full disk) is tried again: the GPU still comes back, the slot is freed", async () => {
  const c = await checkpointed();
  const complete = r.ctx.journal.complete.bind(r.ctx.journal);
  let failures = 0;
  r.ctx.journal.complete = async (id: string) => {
    if (failures++ === 0)
      throw Object.assign(new Error("ENOSPC: no space left on device"), { code: "ENOSPC" });
    await complete(id);
  };
  criuDetached();
  c.freezer.frozen = false;
  await until("the restore", () => states(r.driver, [301])[0] === RUNNING, 4000);
  await until("the slot freed", () => !r.ctx.containers.isBusy("c0ffee"), 4000);
  assert.ok(failures >= 2, "the failed step was tried again");
  assert.deepEqual(r.journalEntries(), []);
});

test("a resume through containerd that throws is asked again: the container ends resumed and its GPU back", async () => {
  const c = await checkpointed();
  c.checkpoint.finish();
  criuDetached();
  const record = r.ctx.journal.record.bind(r.ctx.journal);
  let failed = false;
  r.ctx.journal.record = async (entry) => {
    if (entry.resumedTaskAt && !failed) {
      failed = true;
      throw new Error("EIO: i/o error");
    }
    await record(entry);
  };
  await until("the resume and restore", () => states(r.driver, [301])[0] === RUNNING, 5000);
  assert.ok(failed, "the first resume failed");
  assert.deepEqual(r.runtime.resumed, [{ namespace: "k8s.io", containerId: "c0ffee" }]);
});

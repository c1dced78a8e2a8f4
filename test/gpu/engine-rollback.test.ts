import assert from "node:assert/strict";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { after, describe, test } from "node:test";
import { Deadline } from "../../src/base/deadline.js";
import type { GpuBackend } from "../../src/gpu/backend.js";
import { GpuEngine, type OperationRecord } from "../../src/gpu/engine.js";
import { ProcessState } from "../../src/gpu/types.js";
import { backends } from "./double/backends.js";
import { cleanupScratch, scratch, startWorkload, type Workload } from "./double/harness.js";

const started: Workload[] = [];
after(async () => {
  await Promise.all(started.map((w) => w.stop()));
  cleanupScratch();
});

const faultFile = join(scratch, "fault.%p");
const setFault = (pid: number, rule: string): void =>
  writeFileSync(join(scratch, `fault.${pid}`), `${rule}\n`);

async function threeProcesses(): Promise<Workload> {
  const w = await startWorkload({ procs: 3, faultFile });
  started.push(w);
  return w;
}

async function assertAllRunning(b: GpuBackend, w: Workload): Promise<void> {
  for (const pid of w.pids) {
    assert.equal(
      await b.getState(pid),
      ProcessState.RUNNING,
      `pid ${pid} must be RUNNING after the rollback`,
    );
    const before = w.status(pid).counter;
    await w.waitCounter(pid, before);
    assert.equal(w.status(pid).verifyFailures, 0, `pid ${pid}: VRAM must be intact`);
  }
}

function assertRolledBack(r: OperationRecord, pid: number, op: string, state: string, message: string): void {
  assert.equal(r.ok, false);
  assert.equal(r.failure?.pid, pid, "the failure names the process that failed");
  assert.equal(r.failure?.op, op);
  assert.equal(r.failure?.state, state);
  assert.equal(r.failure?.driverMessage, message);
  assert.ok(r.rollback, "a failure triggers a rollback");
  assert.equal(r.rollback.ok, true, JSON.stringify(r.rollback));
  for (const p of r.rollback.processes) assert.equal(p.to, "RUNNING");
}

const cases = [
  { when: "freeze", rule: "lock fail", op: "lock", state: "RUNNING", message: "unknown error" },
  { when: "freeze", rule: "checkpoint fail", op: "checkpoint", state: "LOCKED", message: "unknown error" },
  { when: "thaw", rule: "restore fail 1", op: "restore", state: "CHECKPOINTED", message: "unknown error" },
  { when: "thaw", rule: "unlock fail 1", op: "unlock", state: "LOCKED", message: "unknown error" },
] as const;

for (const { name, make } of backends) {
  describe(`engine rollback through the ${name} backend`, () => {
    const b = make();

    for (const c of cases) {
      test(`${c.when}: process k fails at ${c.op} → the whole set is back to RUNNING`, async () => {
        const w = await threeProcesses();
        const k = w.pids[1] ?? 0;
        const engine = new GpuEngine({ backend: b, lockTimeoutMs: 2000 });
        if (c.when === "thaw") assert.equal((await engine.checkpoint(w.pids)).ok, true);
        setFault(k, c.rule);
        const r = c.when === "freeze" ? await engine.checkpoint(w.pids) : await engine.restore(w.pids);
        assertRolledBack(r, k, c.op, c.state, c.message);
        await assertAllRunning(b, w);
      });
    }

    test("a device map the driver refuses: the rollback restores onto the original GPUs", async () => {
      const w = await threeProcesses();
      const k = w.pids[0] ?? 0;
      const engine = new GpuEngine({ backend: b, lockTimeoutMs: 2000 });
      assert.equal((await engine.checkpoint(w.pids)).ok, true);
      // The thaw's restore and the rollback's first (mapped) restore fail, as the H200 refused a remap.
      setFault(k, "restore fail 2");
      const map = [
        { from: "GPU-11111111-2222-3333-4444-555555555555", to: "GPU-66666666-7777-8888-9999-000000000000" },
      ];
      const r = await engine.restore(w.pids, map);
      assertRolledBack(r, k, "restore", "CHECKPOINTED", "unknown error");
      assert.equal(
        w.status(k).lastDevicePairs,
        0,
        "the last restore of the failed process went without the map",
      );
      await assertAllRunning(b, w);
    });

    test("a hung checkpoint is cut by its deadline and the set rolled back", async () => {
      const w = await threeProcesses();
      const k = w.pids[2] ?? 0;
      setFault(k, "checkpoint hang 1");
      const engine = new GpuEngine({ backend: b, lockTimeoutMs: 2000 });
      const t = performance.now();
      const r = await engine.checkpoint(w.pids, Deadline.after(700));
      assert.ok(performance.now() - t < 5000, "bounded by the deadline");
      assert.equal(r.failure?.code, "DEADLINE_EXCEEDED");
      assert.equal(r.failure?.pid, k);
      assert.equal(r.failure?.op, "checkpoint");
      assert.equal(r.rollback?.ok, true, JSON.stringify(r.rollback));
      await assertAllRunning(b, w);
    });

    test("a hung restore during thaw is cut, retried by the rollback, and the set ends RUNNING", async () => {
      const w = await threeProcesses();
      const k = w.pids[0] ?? 0;
      const engine = new GpuEngine({ backend: b, lockTimeoutMs: 2000 });
      assert.equal((await engine.checkpoint(w.pids)).ok, true);
      setFault(k, "restore hang 1");
      const r = await engine.restore(w.pids, undefined, Deadline.after(700));
      assert.equal(r.failure?.code, "DEADLINE_EXCEEDED");
      assert.equal(r.failure?.state, "CHECKPOINTED");
      assert.equal(r.rollback?.ok, true, JSON.stringify(r.rollback));
      await assertAllRunning(b, w);
    });

    test("a process the driver reports FAILED is named and the rest still rolled back", async () => {
      const w = await threeProcesses();
      const k = w.pids[1] ?? 0;
      setFault(k, "checkpoint failed");
      const engine = new GpuEngine({ backend: b, lockTimeoutMs: 2000 });
      const r = await engine.checkpoint(w.pids);
      assert.equal(r.ok, false);
      assert.equal(r.failure?.pid, k);
      assert.equal(r.rollback?.ok, false);
      const bad = r.rollback?.processes.find((p) => p.pid === k);
      assert.equal(bad?.to, "FAILED");
      assert.match(String(bad?.error?.message), /cannot be brought back/);
      for (const pid of w.pids.filter((p) => p !== k))
        assert.equal(
          await b.getState(pid),
          ProcessState.RUNNING,
          `pid ${pid}; ${JSON.stringify(r.rollback)}`,
        );
    });
  });
}

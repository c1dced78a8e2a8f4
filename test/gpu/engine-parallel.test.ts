import assert from "node:assert/strict";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { after, describe, test } from "node:test";
import { GpuEngine } from "../../src/gpu/engine.js";
import { ProcessState } from "../../src/gpu/types.js";
import { backends } from "./double/backends.js";
import { cleanupScratch, scratch, startWorkload, type Workload } from "./double/harness.js";

const started: Workload[] = [];
after(async () => {
  await Promise.all(started.map((w) => w.stop()));
  cleanupScratch();
});
const faultFile = join(scratch, "slow.%p");
// Each checkpoint and restore takes 300 ms, so serial work would show as N × 300 ms.
const slow = (pids: number[]): void => {
  for (const pid of pids)
    writeFileSync(join(scratch, `slow.${pid}`), "checkpoint delay 300\nrestore delay 300\n");
};

for (const { name, make } of backends) {
  describe(`engine through the ${name} backend`, () => {
    const b = make();

    test("freezes and thaws 4 processes in parallel, VRAM intact, work goes on, a record per operation", async () => {
      const one = await startWorkload({ mib: 4, faultFile });
      const four = await startWorkload({ mib: 4, procs: 4, faultFile });
      started.push(one, four);
      slow([...one.pids, ...four.pids]);
      const engine = new GpuEngine({ backend: b });

      const single = await engine.checkpoint(one.pids);
      assert.equal(single.ok, true);
      const counters = four.pids.map((p) => four.status(p).counter);
      const f = await engine.checkpoint(four.pids);
      assert.equal(f.ok, true, JSON.stringify(f.failure));
      assert.ok(f.totalMs < single.totalMs * 2, `parallel ${f.totalMs} ms vs one ${single.totalMs} ms`);
      assert.deepEqual(f.pids, four.pids);
      for (const p of f.processes) {
        assert.equal(p.startState, "RUNNING");
        assert.equal(p.endState, "CHECKPOINTED");
        assert.ok((p.phasesMs.checkpoint ?? 0) >= 290);
        assert.ok(p.vramBytes !== undefined && p.vramBytes >= 3 * 2 ** 20, `VmRSS growth ${p.vramBytes}`);
      }
      assert.ok((f.phasesMs.lock ?? -1) >= 0);

      const t = await engine.restore(four.pids);
      assert.equal(t.ok, true, JSON.stringify(t.failure));
      assert.ok((t.phasesMs.restore ?? 0) >= 290 && (t.phasesMs.unlock ?? -1) >= 0);
      for (const [i, pid] of four.pids.entries()) {
        assert.equal(await b.getState(pid), ProcessState.RUNNING);
        await four.waitCounter(pid, counters[i] ?? 0);
        assert.equal(four.status(pid).verified, 1);
        assert.equal(four.status(pid).verifyFailures, 0);
      }
      assert.equal((await engine.restore(one.pids)).ok, true);
    });

    test("idempotent: freezing a CHECKPOINTED set and thawing a RUNNING one succeed as no-ops", async () => {
      const w = await startWorkload({ procs: 2 });
      started.push(w);
      const engine = new GpuEngine({ backend: b });
      assert.equal((await engine.checkpoint(w.pids)).ok, true);
      const again = await engine.checkpoint(w.pids);
      assert.equal(again.ok, true);
      assert.ok(again.processes.every((p) => p.skipped && p.endState === "CHECKPOINTED"));
      assert.equal((await engine.restore(w.pids)).ok, true);
      const noop = await engine.restore(w.pids);
      assert.ok(noop.ok && noop.processes.every((p) => p.skipped && p.endState === "RUNNING"));
    });

    test("ensureRunning brings RUNNING, LOCKED and CHECKPOINTED processes all to RUNNING", async () => {
      const w = await startWorkload({ procs: 3 });
      started.push(w);
      const [a, l, c] = w.pids as [number, number, number];
      await b.lock(l, 1000);
      await b.lock(c, 1000);
      await b.checkpoint(c);
      const r = await new GpuEngine({ backend: b }).ensureRunning(w.pids);
      assert.equal(r.ok, true);
      assert.deepEqual(
        r.processes.map((p) => [p.pid, p.startState, p.endState]),
        [
          [a, "RUNNING", "RUNNING"],
          [l, "LOCKED", "RUNNING"],
          [c, "CHECKPOINTED", "RUNNING"],
        ],
      );
      assert.equal(w.status(c).verifyFailures, 0);
    });
  });
}

import assert from "node:assert/strict";
import { type ChildProcess, spawn, spawnSync } from "node:child_process";
import { existsSync, readFileSync, rmSync } from "node:fs";
import { join } from "node:path";
import { after, describe, test } from "node:test";
import { Deadline } from "../../src/base/deadline.js";
import { discoverCudaProcesses } from "../../src/gpu/discovery.js";
import { GpuEngine, type OperationRecord } from "../../src/gpu/engine.js";
import { readStatus } from "../../src/host/proc.js";
import { backends } from "./double/backends.js";
import { cleanupScratch, isFakeDevice, scratch, startWorkload, type Workload } from "./double/harness.js";

// Every call that reaches the fake driver (library or tool) is logged: a refused process must have none.
const callLog = join(scratch, "calls.log");
process.env.FAKE_CUDA_CALL_LOG = callLog;
const calls = (): string[] =>
  existsSync(callLog) ? readFileSync(callLog, "utf8").split("\n").filter(Boolean) : [];
const callsFor = (pid: number): string[] => calls().filter((l) => l.endsWith(` ${pid}`));

const started: Workload[] = [];
const tracers: ChildProcess[] = [];
after(async () => {
  for (const t of tracers) t.kill("SIGKILL");
  await Promise.all(started.map((w) => w.stop()));
  cleanupScratch();
});

async function waitFor(what: string, check: () => Promise<boolean>): Promise<void> {
  for (const end = Date.now() + 5000; !(await check()); ) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** A real SIGSTOP: the double's control socket then answers nobody, as the driver blocks on such a process. */
async function stop(pid: number): Promise<void> {
  process.kill(pid, "SIGSTOP");
  await waitFor(`pid ${pid} in state T`, async () => (await readStatus(pid))?.state === "T");
}

async function resume(pid: number): Promise<void> {
  process.kill(pid, "SIGCONT");
  await waitFor(`pid ${pid} running`, async () => (await readStatus(pid))?.state !== "T");
}

async function twoProcesses(): Promise<Workload> {
  const w = await startWorkload({ procs: 2 });
  started.push(w);
  return w;
}

const ops: Array<{ name: string; run: (e: GpuEngine, pids: number[]) => Promise<OperationRecord> }> = [
  { name: "checkpoint", run: (e, pids) => e.checkpoint(pids, Deadline.after(5000)) },
  { name: "restore", run: (e, pids) => e.restore(pids, undefined, Deadline.after(5000)) },
  { name: "ensureRunning", run: (e, pids) => e.ensureRunning(pids, undefined, Deadline.after(5000)) },
];

for (const { name, make } of backends) {
  describe(`a stopped or traced process through the ${name} backend`, () => {
    const backend = make();
    const engine = new GpuEngine({ backend, lockTimeoutMs: 2000 });

    for (const op of ops) {
      test(`${op.name}: the set is refused at once, naming the pid, its state and the fix; no driver call`, async () => {
        const w = await twoProcesses();
        const [stopped = 0] = w.pids;
        await stop(stopped);
        rmSync(callLog, { force: true });
        const t = performance.now();
        const r = await op.run(engine, w.pids);
        assert.ok(performance.now() - t < 1000, `refused in ${Math.round(performance.now() - t)} ms`);
        assert.equal(r.ok, false);
        assert.equal(r.failure?.code, "PROCESS_STOPPED");
        assert.equal(r.failure?.pid, stopped);
        assert.match(
          String(r.failure?.message),
          new RegExp(`pid ${stopped} is stopped \\(state T\\).*kill -CONT ${stopped}`),
        );
        assert.equal(r.rollback, undefined, "nothing was touched, so nothing is rolled back");
        assert.deepEqual(calls(), [], "no process of the set reached the driver");
        await resume(stopped);
      });
    }

    test("states: the stopped one is an error without a driver call, the other is asked", async () => {
      const w = await twoProcesses();
      const [stopped = 0, running = 0] = w.pids;
      await stop(stopped);
      rmSync(callLog, { force: true });
      const s = await engine.states(w.pids, Deadline.after(5000));
      assert.equal(s[0]?.error?.code, "PROCESS_STOPPED");
      assert.equal(s[1]?.state, "RUNNING");
      assert.deepEqual(callsFor(stopped), []);
      assert.deepEqual(callsFor(running), [`state ${running}`]);
      await resume(stopped);
      const frozen = await engine.checkpoint(w.pids);
      assert.equal(frozen.ok, true, "once continued, the set freezes");
      assert.equal((await engine.restore(w.pids)).ok, true);
    });

    test("discovery: held lists it as stopped, any skips it, and neither asks the driver about it", async () => {
      const w = await twoProcesses();
      const [stopped = 0, running = 0] = w.pids;
      await stop(stopped);
      rmSync(callLog, { force: true });
      const held = await discoverCudaProcesses({
        pids: w.pids,
        backend,
        mode: "held",
        deviceMatch: isFakeDevice,
        deadline: Deadline.after(5000),
      });
      assert.deepEqual(held.stopped, [{ pid: stopped, reason: "stopped (state T)" }]);
      assert.deepEqual(
        held.cuda.map((c) => c.pid),
        [running],
      );
      const any = await discoverCudaProcesses({ pids: w.pids, backend, mode: "any" });
      assert.deepEqual(any.stopped, []);
      assert.ok(any.skipped.some((s) => s.pid === stopped && s.reason === "stopped (state T)"));
      assert.deepEqual(callsFor(stopped), []);
      await resume(stopped);
    });

    const strace = spawnSync("strace", ["-V"]).status === 0;
    test("a traced process (strace attached) is refused with the tracer's pid", {
      skip: !strace,
    }, async () => {
      const w = await twoProcesses();
      const [traced = 0] = w.pids;
      const tracer = spawn("strace", ["-p", String(traced), "-o", "/dev/null"], { stdio: "ignore" });
      tracers.push(tracer);
      await waitFor(`strace on ${traced}`, async () => ((await readStatus(traced))?.tracerPid ?? 0) !== 0);
      rmSync(callLog, { force: true });
      const r = await engine.checkpoint(w.pids, Deadline.after(5000));
      assert.equal(r.failure?.code, "PROCESS_TRACED");
      assert.match(
        String(r.failure?.message),
        new RegExp(`traced by pid ${tracer.pid}.*detach the debugger`),
      );
      assert.deepEqual(calls(), []);
      tracer.kill("SIGKILL");
    });
  });
}

import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { mkdtempSync, readdirSync, readFileSync, readlinkSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, test } from "node:test";
import { GpuError, ProcessState } from "../../src/gpu/types.js";
import { backends } from "./double/backends.js";
import { cleanupScratch, fakeDevice, startWorkload, type Workload } from "./double/harness.js";

const started: Workload[] = [];
after(async () => {
  await Promise.all(started.map((w) => w.stop()));
  cleanupScratch();
});

async function rejectsWith(p: Promise<unknown>, code: string, message: string | RegExp): Promise<GpuError> {
  const err = await p.then(
    () => assert.fail(`expected ${code}`),
    (e: unknown) => e,
  );
  assert.ok(err instanceof GpuError, `not a GpuError: ${String(err)}`);
  assert.equal(err.code, code);
  if (typeof message === "string") assert.equal(err.driverMessage, message);
  else assert.match(err.driverMessage, message);
  return err;
}

const holdsFakeDevice = (pid: number): boolean =>
  readdirSync(`/proc/${pid}/fd`).some((fd) => {
    try {
      return readlinkSync(`/proc/${pid}/fd/${fd}`) === fakeDevice;
    } catch {
      return false;
    }
  });

for (const { name, make } of backends) {
  describe(`driver state machine through the ${name} backend`, () => {
    const b = make();

    test("RUNNING → LOCKED → CHECKPOINTED → LOCKED → RUNNING, the GPU released and taken back, VRAM intact", async () => {
      const w = await startWorkload({ mib: 8 });
      started.push(w);
      const pid = w.pids[0] ?? 0;
      assert.equal(await b.getState(pid), ProcessState.RUNNING);
      assert.ok(holdsFakeDevice(pid));
      await b.lock(pid, 2000);
      assert.equal(await b.getState(pid), ProcessState.LOCKED);
      await b.checkpoint(pid);
      assert.equal(await b.getState(pid), ProcessState.CHECKPOINTED);
      const s = w.status(pid);
      assert.equal(s.ring, false, "the io_uring ring must be gone while checkpointed");
      assert.equal(s.device, false);
      assert.equal(holdsFakeDevice(pid), false, "a checkpointed process holds no device fd");
      const counterBefore = s.counter;
      await b.restore(pid);
      assert.equal(await b.getState(pid), ProcessState.LOCKED);
      await b.unlock(pid);
      assert.equal(await b.getState(pid), ProcessState.RUNNING);
      await w.waitCounter(pid, counterBefore);
      const after = w.status(pid);
      assert.equal(after.verified, 1);
      assert.equal(after.verifyFailures, 0);
      assert.equal(after.ring, true);
      assert.ok(after.counter > counterBefore, "the counter goes on from its value in VRAM");
      assert.ok((await b.getRestoreThreadId(pid)) > 0);
    });

    test("every invalid transition answers ILLEGAL_STATE and changes nothing", async () => {
      const w = await startWorkload();
      started.push(w);
      const pid = w.pids[0] ?? 0;
      const illegal = "the operation cannot be performed in the present state";
      await rejectsWith(b.unlock(pid), "CUDA_ERROR_ILLEGAL_STATE", illegal);
      await rejectsWith(b.checkpoint(pid), "CUDA_ERROR_ILLEGAL_STATE", illegal);
      await rejectsWith(b.restore(pid), "CUDA_ERROR_ILLEGAL_STATE", illegal);
      await b.lock(pid, 1000);
      await rejectsWith(b.lock(pid, 1000), "CUDA_ERROR_ILLEGAL_STATE", illegal);
      await rejectsWith(b.restore(pid), "CUDA_ERROR_ILLEGAL_STATE", illegal);
      await b.checkpoint(pid);
      await rejectsWith(b.unlock(pid), "CUDA_ERROR_ILLEGAL_STATE", illegal);
      await rejectsWith(b.checkpoint(pid), "CUDA_ERROR_ILLEGAL_STATE", illegal);
      assert.equal(await b.getState(pid), ProcessState.CHECKPOINTED);
      await b.restore(pid);
      await b.unlock(pid);
      assert.equal(await b.getState(pid), ProcessState.RUNNING);
    });

    test("a non-CUDA pid and a missing pid give the driver's texts and a hint", async () => {
      const sleeper = spawn("sleep", ["30"], { stdio: "ignore" });
      try {
        const e = await rejectsWith(
          b.getState(sleeper.pid ?? 0),
          "CUDA_ERROR_NOT_INITIALIZED",
          "initialization error",
        );
        assert.match(e.message, /not a CUDA process/);
      } finally {
        sleeper.kill("SIGKILL");
      }
      const e = await rejectsWith(
        b.lock(2 ** 22 + 17, 100),
        "CUDA_ERROR_OPERATING_SYSTEM",
        "OS call failed or operation not supported on this OS",
      );
      assert.match(e.message, /does not exist/);
    });

    test("a stopped process cannot be locked: the lock times out and the process stays RUNNING", async () => {
      const w = await startWorkload();
      started.push(w);
      const pid = w.pids[0] ?? 0;
      process.kill(pid, "SIGSTOP");
      try {
        const t = performance.now();
        const e = await rejectsWith(b.lock(pid, 300), "CUDA_ERROR_NOT_READY", "device not ready");
        assert.ok(performance.now() - t < 2000);
        assert.match(e.message, /lock timed out/);
      } finally {
        process.kill(pid, "SIGCONT");
      }
      assert.equal(await b.getState(pid), ProcessState.RUNNING);
    });

    test("a restore with a GPU device map reaches the driver with every pair", async () => {
      const w = await startWorkload();
      started.push(w);
      const pid = w.pids[0] ?? 0;
      const map = [
        { from: "GPU-11111111-2222-3333-4444-555555555555", to: "GPU-aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee" },
        { from: "GPU-11111111-2222-3333-4444-555555555556", to: "GPU-aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeef" },
      ];
      const log = join(mkdtempSync(join(tmpdir(), "kyb-pairs-")), "pairs.log");
      process.env.FAKE_CUDA_PAIRS_LOG = log;
      try {
        await b.lock(pid, 1000);
        await b.checkpoint(pid);
        await b.restore(pid, map);
        await b.unlock(pid);
      } finally {
        delete process.env.FAKE_CUDA_PAIRS_LOG;
      }
      await new Promise((r) => setTimeout(r, 150));
      assert.equal(w.status(pid).lastDevicePairs, 2);
      // Every UUID's 16 bytes, in order: the array behind the struct's pointer is laid out as the driver reads it.
      if (name.startsWith("driver"))
        assert.equal(readFileSync(log, "utf8"), `${pid} ${map.map((p) => `${p.from}=${p.to}`).join(",")}\n`);
    });
  });
}

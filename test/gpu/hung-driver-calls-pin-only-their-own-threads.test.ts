import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { existsSync, readFileSync } from "node:fs";
import { readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { after, describe, test } from "node:test";
import { promisify } from "node:util";
import { Deadline } from "../../src/base/deadline.js";
import { packageRoot } from "../../src/base/paths.js";
import { DriverBackend } from "../../src/gpu/driver-backend.js";
import { GpuError, ProcessState } from "../../src/gpu/types.js";
import { cleanupScratch, fakeLibcuda, scratch, startWorkload, type Workload } from "./double/harness.js";

// Every call that reaches the fake driver is logged, so a test knows its calls are in it.
const callLog = join(scratch, "calls.log");
process.env.FAKE_CUDA_CALL_LOG = callLog;
const callsFor = (pid: number): number =>
  existsSync(callLog)
    ? readFileSync(callLog, "utf8")
        .split("\n")
        .filter((l) => l.endsWith(` ${pid}`)).length
    : 0;

const started: Workload[] = [];
after(async () => {
  await Promise.all(started.map((w) => w.stop()));
  cleanupScratch();
});

/** A workload whose every getState hangs (the double keeps the call unanswered), and a healthy one. */
async function hungAndHealthy(): Promise<{ hung: Workload; healthy: Workload }> {
  const faultFile = join(scratch, `hang.${started.length}`);
  await writeFile(faultFile, "state hang\n");
  const hung = await startWorkload({ faultFile });
  const healthy = await startWorkload();
  started.push(hung, healthy);
  return { hung, healthy };
}

const timed = async <T>(work: Promise<T>): Promise<{ value: T; ms: number }> => {
  const t = performance.now();
  const value = await work;
  return { value, ms: performance.now() - t };
};

const rejectsWith = async (p: Promise<unknown>, code: string): Promise<GpuError> => {
  try {
    await p;
  } catch (err) {
    assert.ok(err instanceof GpuError, String(err));
    assert.equal(err.code, code, err.message);
    return err;
  }
  assert.fail(`expected ${code}`);
};

async function until(what: string, check: () => boolean): Promise<void> {
  for (const end = Date.now() + 5000; !check(); ) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

describe("the driver backend's calls run on kybernate's own threads", () => {
  test("8 hung driver calls: file I/O and another process's getState still answer at once", async () => {
    const { hung, healthy } = await hungAndHealthy();
    const backend = new DriverBackend(fakeLibcuda());
    const pid = hung.pids[0] ?? 0;
    const hanging = Array.from({ length: 8 }, () =>
      backend.getState(pid, { deadline: Deadline.after(4000) }).catch((e: unknown) => e),
    );
    await until("8 calls in the driver", () => callsFor(pid) === 8);
    const read = await timed(readFile(join(packageRoot, "package.json"), "utf8"));
    assert.ok(read.ms < 200, `readFile took ${Math.round(read.ms)} ms`);
    const other = await timed(backend.getState(healthy.pids[0] ?? 0, { deadline: Deadline.after(2000) }));
    assert.equal(other.value, ProcessState.RUNNING);
    assert.ok(other.ms < 200, `getState of another process took ${Math.round(other.ms)} ms`);
    for (const e of await Promise.all(hanging)) assert.equal((e as GpuError).code, "DEADLINE_EXCEEDED");
    assert.equal(backend.threads.stuck, 8, "each call cut by its deadline leaves its thread stuck");
  });

  test("a stuck thread is never reused and does not take a free one's place", async () => {
    const { hung, healthy } = await hungAndHealthy();
    const backend = new DriverBackend(fakeLibcuda(), { maxThreads: 1, maxStuck: 4 });
    const cut = rejectsWith(
      backend.getState(hung.pids[0] ?? 0, { deadline: Deadline.after(300) }),
      "DEADLINE_EXCEEDED",
    );
    // Waits for the only thread, then gets a new one once the first is given up.
    const queued = backend.getState(healthy.pids[0] ?? 0, { deadline: Deadline.after(3000) });
    await cut;
    assert.equal(await queued, ProcessState.RUNNING);
    assert.deepEqual(backend.threads, { busy: 0, idle: 1, stuck: 1, queued: 0 });
  });

  test("at the cap of stuck calls a new call fails at once, saying how many and since when; they free up when the driver returns", async () => {
    const { hung, healthy } = await hungAndHealthy();
    const backend = new DriverBackend(fakeLibcuda(), { maxThreads: 4, maxStuck: 2 });
    const hungPid = hung.pids[0] ?? 0;
    const before = new Date().toISOString().slice(0, 16);
    await Promise.all(
      [1, 2].map(() =>
        rejectsWith(backend.getState(hungPid, { deadline: Deadline.after(200) }), "DEADLINE_EXCEEDED"),
      ),
    );
    const refused = await timed(
      rejectsWith(
        backend.getState(healthy.pids[0] ?? 0, { deadline: Deadline.after(5000) }),
        "DRIVER_CALLS_STUCK",
      ),
    );
    assert.ok(refused.ms < 50, `refused in ${Math.round(refused.ms)} ms, not queued`);
    assert.match(
      refused.value.message,
      new RegExp(`2 driver calls are stuck .*GPU getState of pid ${hungPid}, since ${before}`),
    );
    // The driver answers the stuck calls at last (here: the hung process exits); their threads end.
    await hung.stop();
    await until("the stuck threads end", () => backend.threads.stuck === 0);
    assert.equal(await backend.getState(healthy.pids[0] ?? 0), ProcessState.RUNNING);
  });

  test("idle driver threads do not keep the process alive", async () => {
    const w = await startWorkload();
    started.push(w);
    const script = join(scratch, "idle.mjs");
    await writeFile(
      script,
      `import { DriverBackend } from ${JSON.stringify(join(packageRoot, "dist/src/gpu/driver-backend.js"))};
       const b = new DriverBackend(${JSON.stringify(fakeLibcuda())});
       console.log(await b.getState(${w.pids[0]}));`,
    );
    const { value, ms } = await timed(promisify(execFile)(process.execPath, [script], { timeout: 5000 }));
    assert.equal(value.stdout.trim(), "0");
    assert.ok(ms < 3000, `exited after ${Math.round(ms)} ms`);
  });
});

import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { after, describe, test } from "node:test";
import { runGpuCommand } from "../../src/cli/commands/gpu.js";
import {
  cleanupScratch,
  fakeLibcuda,
  fakeTool,
  startWorkload,
  type Workload,
} from "../gpu/double/harness.js";

const started: Workload[] = [];
after(async () => {
  await Promise.all(started.map((w) => w.stop()));
  cleanupScratch();
});

for (const backend of ["driver", "binary"] as const) {
  describe(`runGpuCommand with --gpu-backend ${backend}`, () => {
    const base = { backend, libcuda: fakeLibcuda(), cudaCheckpoint: fakeTool() };

    test("state, freeze, thaw by pid: exit 0, a summary, and the record", async () => {
      const w = await startWorkload({ procs: 2 });
      started.push(w);
      const lines: string[] = [];
      const print = (l: string) => lines.push(l);
      const s = await runGpuCommand({ ...base, action: "state", pids: w.pids, print });
      assert.equal(s.exitCode, 0);
      assert.deepEqual(
        lines,
        w.pids.map((p) => `${p}\tRUNNING`),
      );
      const f = await runGpuCommand({ ...base, action: "freeze", pids: w.pids, print });
      assert.equal(f.exitCode, 0);
      assert.match(lines.at(-1) ?? "", /-> CHECKPOINTED/);
      assert.equal(f.record?.processes.length, 2);
      const t = await runGpuCommand({ ...base, action: "thaw", pids: w.pids, print, json: true });
      assert.equal(t.exitCode, 0);
      assert.equal(JSON.parse(lines.at(-1) ?? "{}").ok, true);
    });

    test("a non-CUDA pid, a missing pid, a set with a missing pid: exit 1 with what to fix", async () => {
      const w = await startWorkload();
      started.push(w);
      const sleeper = spawn("sleep", ["30"], { stdio: "ignore" });
      const lines: string[] = [];
      const print = (l: string) => lines.push(l);
      try {
        const r = await runGpuCommand({
          ...base,
          action: "state",
          pids: [sleeper.pid ?? 0, 2 ** 22 + 5],
          print,
        });
        assert.equal(r.exitCode, 1);
        assert.match(lines[0] ?? "", /initialization error.*not a CUDA process/);
        assert.match(lines[1] ?? "", /OS call failed.*does not exist/);
      } finally {
        sleeper.kill("SIGKILL");
      }
      const pid = w.pids[0] ?? 0;
      // The engine starts from each process's state, so a "wrong state" cannot come from freeze/thaw order;
      // a set with one missing process fails as a whole and the CUDA one is rolled back.
      const f = await runGpuCommand({ ...base, action: "freeze", pids: [pid, 2 ** 22 + 7], print });
      assert.equal(f.exitCode, 1);
      assert.match(lines.join("\n"), /cause: GPU getState of pid \d+ failed: OS call failed/);
      assert.match(lines.join("\n"), /rollback ok, every process RUNNING|rollback INCOMPLETE/);
    });

    test("a bad target gives exit 2 and names the problem", async () => {
      const lines: string[] = [];
      const r = await runGpuCommand({
        ...base,
        action: "freeze",
        cgroup: "/no/such/kyb",
        print: (l) => lines.push(l),
      });
      assert.equal(r.exitCode, 2);
      assert.match(lines[0] ?? "", /cgroup \/no\/such\/kyb not found/);
    });
  });
}

test("--gpu-backend driver with a library that does not exist says how to fix it", async () => {
  const lines: string[] = [];
  const r = await runGpuCommand({
    action: "state",
    pids: [1],
    backend: "driver",
    libcuda: "/no/such/libcuda.so.1",
    print: (l) => lines.push(l),
  });
  assert.equal(r.exitCode, 2);
  assert.match(lines[0] ?? "", /cannot load the NVIDIA driver library.*--libcuda PATH/);
});

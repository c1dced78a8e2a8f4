import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { after, describe, test } from "node:test";
import { packageRoot } from "../../src/base/paths.js";
import { readStatus } from "../../src/host/proc.js";
import {
  cleanupScratch,
  fakeLibcuda,
  fakeTool,
  scratch,
  startWorkload,
  type Workload,
} from "../gpu/double/harness.js";

const started: Workload[] = [];
after(async () => {
  await Promise.all(started.map((w) => w.stop()));
  cleanupScratch();
});

/** `kybernate gpu ARGS…` as a user runs it: its exit code, output and how long it took (killed after 20 s). */
function kybernateGpu(args: string[]): Promise<{ code: number | null; out: string; ms: number }> {
  const t = performance.now();
  const child = spawn(process.execPath, [join(packageRoot, "dist/src/cli/main.js"), "gpu", ...args], {
    stdio: ["ignore", "pipe", "pipe"],
  });
  let out = "";
  child.stdout.on("data", (d) => {
    out += d;
  });
  child.stderr.on("data", (d) => {
    out += d;
  });
  const killer = setTimeout(() => child.kill("SIGKILL"), 20_000);
  return new Promise((resolve) =>
    child.on("close", (code) => {
      clearTimeout(killer);
      resolve({ code, out, ms: performance.now() - t });
    }),
  );
}

const backends = [
  { name: "driver", args: () => ["--gpu-backend", "driver", "--libcuda", fakeLibcuda()] },
  { name: "binary", args: () => ["--gpu-backend", "binary", "--cuda-checkpoint", fakeTool()] },
];

for (const b of backends) {
  describe(`kybernate gpu freeze --gpu-backend ${b.name}`, () => {
    test("a stopped process: exit 1 at once with the refusal, naming the pid and kill -CONT", async () => {
      const w = await startWorkload();
      started.push(w);
      const pid = w.pids[0] ?? 0;
      process.kill(pid, "SIGSTOP");
      for (let i = 0; (await readStatus(pid))?.state !== "T" && i < 100; i++)
        await new Promise((r) => setTimeout(r, 20));
      const r = await kybernateGpu(["freeze", "--pid", String(pid), ...b.args()]);
      process.kill(pid, "SIGCONT");
      assert.equal(r.code, 1, r.out);
      assert.match(
        r.out,
        new RegExp(`pid ${pid} is stopped \\(state T\\).*PROCESS_STOPPED.*kill -CONT ${pid}`),
      );
      assert.ok(r.ms < 10_000, `took ${Math.round(r.ms)} ms`);
    });

    test("a driver call that never returns: exit 1 with the deadline error once --timeout passes", async () => {
      const faultFile = join(scratch, `hang-${b.name}`);
      writeFileSync(faultFile, "checkpoint hang\n");
      const w = await startWorkload({ faultFile });
      started.push(w);
      const pid = w.pids[0] ?? 0;
      const r = await kybernateGpu(["freeze", "--pid", String(pid), "--timeout", "1", ...b.args()]);
      assert.equal(r.code, 1, r.out);
      assert.match(r.out, /cause: GPU checkpoint of pid \d+ failed: .*\(DEADLINE_EXCEEDED\)/);
      assert.match(r.out, /rollback ok, every process RUNNING/);
      // 1 s of deadline, the rollback (getState, unlock) and node's start; not the hung call's forever.
      assert.ok(r.ms < 8000, `took ${Math.round(r.ms)} ms`);
    });
  });
}

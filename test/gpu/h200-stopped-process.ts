/**
 * For the GPU machine (not a unit test): the driver backend's own threads against the real libcuda, and a
 * SIGSTOPped CUDA process. Prints what it sees: the engine's refusal, whether a bare GetState on the stopped
 * process blocks (FACTS: it does on the H200), that file I/O and another process's GetState answer meanwhile,
 * and that the stuck thread ends once the process continues.
 *   node dist/test/gpu/h200-stopped-process.js --workload PATH [--libcuda PATH]
 * (PATH: test/gpu/workload.cu built with nvcc -arch=sm_90 -cudart static -O2, as h200-engine-bench.sh does)
 */
import { spawn } from "node:child_process";
import { readFile } from "node:fs/promises";
import { parseArgs } from "node:util";
import { Deadline } from "../../src/base/deadline.js";
import { DriverBackend } from "../../src/gpu/driver-backend.js";
import { exitProcess } from "../../src/gpu/driver-pool.js";
import { GpuEngine } from "../../src/gpu/engine.js";
import { readStatus } from "../../src/host/proc.js";

const { values } = parseArgs({ options: { workload: { type: "string" }, libcuda: { type: "string" } } });
if (!values.workload) {
  console.error("h200-stopped-process: give the compiled CUDA workload with --workload PATH");
  process.exit(2);
}
const workload = values.workload;
const children: number[] = [];
process.on("exit", () => {
  for (const pid of children) {
    try {
      process.kill(pid, "SIGKILL");
    } catch {}
  }
});

const start = (i: number): Promise<number> =>
  new Promise((resolve, reject) => {
    const c = spawn(
      workload,
      ["--gib", "1", "--status", `/tmp/kyb-stopped-${i}.json`, "--verify-every", "3600"],
      {
        stdio: ["ignore", "pipe", "inherit"],
      },
    );
    children.push(c.pid ?? 0);
    c.stdout.on("data", (d: Buffer) => d.toString().includes("ready") && resolve(c.pid ?? 0));
    c.once("exit", (code) => reject(new Error(`workload exited ${code} before it was ready`)));
  });

async function timed<T>(work: Promise<T>): Promise<string> {
  const t = performance.now();
  const r = await work.then(
    (v) => JSON.stringify(v),
    (e: { code?: string; message?: string }) => `error ${e.code ?? ""} ${e.message ?? e}`,
  );
  return `${r} in ${Math.round(performance.now() - t)} ms`;
}

const pids = await Promise.all([0, 1, 2, 3].map(start));
const [a = 0, b = 0] = pids;
const backend = new DriverBackend(values.libcuda);
const engine = new GpuEngine({ backend });
console.log(`backend: ${backend.description}`);
console.log(`getState ×4 (threads start): ${await timed(Promise.all(pids.map((p) => backend.getState(p))))}`);
console.log(`getState ×4 (warm): ${await timed(Promise.all(pids.map((p) => backend.getState(p))))}`);
const freeze = await engine.checkpoint(pids, Deadline.after(60_000));
console.log(
  `freeze 4 × 1 GiB: ok ${freeze.ok}, ${Math.round(freeze.totalMs)} ms ${freeze.failure?.message ?? ""}`,
);
const thaw = await engine.restore(pids, undefined, Deadline.after(60_000));
console.log(`thaw: ok ${thaw.ok}, ${Math.round(thaw.totalMs)} ms ${thaw.failure?.message ?? ""}`);

process.kill(a, "SIGSTOP");
await new Promise((r) => setTimeout(r, 300));
console.log(`/proc status of the stopped one: ${JSON.stringify(await readStatus(a))}`);
console.log(
  `engine freeze of [stopped, running]: ${await timed(engine.checkpoint([a, b]).then((r) => r.failure?.message))}`,
);
const bare = [1, 2, 3, 4, 5].map(() => timed(backend.getState(a, { deadline: Deadline.after(3000) })));
await new Promise((r) => setTimeout(r, 500));
console.log(`meanwhile readFile: ${await timed(readFile("/proc/self/status", "utf8").then(() => "ok"))}`);
console.log(
  `meanwhile getState of another: ${await timed(backend.getState(b, { deadline: Deadline.after(3000) }))}`,
);
for (const r of await Promise.all(bare)) console.log(`bare getState of the stopped one: ${r}`);
console.log(`threads after the cut: ${JSON.stringify(backend.threads)}`);
process.kill(a, "SIGCONT");
for (let i = 0; i < 50 && backend.threads.stuck > 0; i++) await new Promise((r) => setTimeout(r, 100));
console.log(`threads after SIGCONT: ${JSON.stringify(backend.threads)}`);
console.log(`getState after SIGCONT: ${await timed(backend.getState(a))}`);
exitProcess(0);

/**
 * GPU engine benchmark for the GPU machine (test/gpu/h200-engine-bench.sh runs it): real CUDA workloads
 * (test/gpu/workload.cu) frozen and thawed through GpuEngine with each backend, VRAM verified after every
 * thaw, per-phase figures and the parallel ÷ single ratio printed as markdown.
 *   node dist/test/bench/gpu-engine.js --workload PATH [--libcuda PATH] [--cuda-checkpoint PATH]
 *        [--cases 2,16,4x4] [--json OUT]
 */
import { type ChildProcess, spawn } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { Deadline } from "../../src/base/deadline.js";
import type { GpuBackend } from "../../src/gpu/backend.js";
import { BinaryBackend } from "../../src/gpu/binary-backend.js";
import { DriverBackend } from "../../src/gpu/driver-backend.js";
import { GpuEngine, type OperationRecord } from "../../src/gpu/engine.js";

const { values } = parseArgs({
  options: {
    workload: { type: "string" },
    libcuda: { type: "string" },
    "cuda-checkpoint": { type: "string" },
    cases: { type: "string", default: "2,16,1x4,4x4" },
    json: { type: "string" },
  },
});
if (!values.workload || !existsSync(values.workload)) {
  console.error(
    "gpu-engine bench: give the compiled CUDA workload with --workload PATH (see h200-engine-bench.sh)",
  );
  process.exit(2);
}
const workloadBin = values.workload;
const dir = mkdtempSync("/tmp/kyb-bench-");

interface Status {
  pid: number;
  counter: number;
  verified: number;
  verifyFailures: number;
}
const statusOf = (i: number): Status => JSON.parse(readFileSync(join(dir, `${i}.json`), "utf8")) as Status;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

const children: ChildProcess[] = [];
process.on("exit", () => {
  for (const c of children) c.kill("SIGKILL");
  rmSync(dir, { recursive: true, force: true });
});
for (const sig of ["SIGINT", "SIGTERM"] as const) process.on(sig, () => process.exit(130));

async function start(procs: number, gib: number, base: number): Promise<Array<{ pid: number; idx: number }>> {
  const out: Array<{ pid: number; idx: number }> = [];
  await Promise.all(
    Array.from({ length: procs }, async (_, k) => {
      const idx = base + k;
      const c = spawn(
        workloadBin,
        ["--gib", String(gib), "--status", join(dir, `${idx}.json`), "--verify-every", "3600"],
        {
          stdio: ["ignore", "pipe", "inherit"],
        },
      );
      children.push(c);
      await new Promise<void>((resolve, reject) => {
        const t = setTimeout(() => reject(new Error(`workload ${idx} not ready in 120 s`)), 120_000);
        c.stdout?.on("data", (d: Buffer) => {
          if (d.toString().includes("ready")) {
            clearTimeout(t);
            resolve();
          }
        });
        c.once("exit", (code) => reject(new Error(`workload ${idx} exited ${code} before ready`)));
      });
      while (!existsSync(join(dir, `${idx}.json`))) await sleep(20);
      out.push({ pid: c.pid ?? 0, idx });
    }),
  );
  return out.sort((a, b) => a.idx - b.idx);
}

/** Asks each workload to verify its whole buffer (SIGUSR1) and waits for the answer. */
async function verify(ps: Array<{ pid: number; idx: number }>): Promise<string> {
  const before = ps.map((p) => statusOf(p.idx));
  for (const p of ps) process.kill(p.pid, "SIGUSR1");
  const end = Date.now() + 60_000;
  for (const [i, p] of ps.entries()) {
    for (;;) {
      const s = statusOf(p.idx);
      const b = before[i] as Status;
      if (s.verified + s.verifyFailures > b.verified + b.verifyFailures && s.counter > b.counter) {
        if (s.verifyFailures > b.verifyFailures) return `CORRUPT (pid ${p.pid})`;
        break;
      }
      if (Date.now() > end) return `NO ANSWER (pid ${p.pid})`;
      await sleep(50);
    }
  }
  return "intact";
}

interface Row {
  case: string;
  backend: string;
  procs: number;
  gib: number;
  freeze: OperationRecord;
  thaw: OperationRecord;
  verify: string;
}
const rows: Row[] = [];

function backends(): Array<{ name: string; b: GpuBackend }> {
  const list: Array<{ name: string; b: GpuBackend }> = [];
  try {
    list.push({ name: "driver", b: new DriverBackend(values.libcuda) });
  } catch (err) {
    console.error(`driver backend unavailable: ${(err as Error).message}`);
  }
  if (values["cuda-checkpoint"])
    list.push({ name: "binary", b: new BinaryBackend(values["cuda-checkpoint"]) });
  else console.error("binary backend skipped: no --cuda-checkpoint PATH");
  return list;
}

const bs = backends();
let base = 0;
for (const spec of (values.cases ?? "").split(",").filter(Boolean)) {
  const [a, b] = spec.includes("x") ? spec.split("x").map(Number) : [1, Number(spec)];
  const procs = a ?? 1;
  const gib = b ?? 1;
  const ps = await start(procs, gib, base);
  base += procs;
  for (const { name, b: backend } of bs) {
    const engine = new GpuEngine({ backend });
    const pids = ps.map((p) => p.pid);
    const freeze = await engine.checkpoint(pids, Deadline.after(120_000));
    if (!freeze.ok) console.error(`${spec} ${name}: freeze failed: ${JSON.stringify(freeze.failure)}`);
    const thaw = await engine.restore(pids, undefined, Deadline.after(120_000));
    if (!thaw.ok) console.error(`${spec} ${name}: thaw failed: ${JSON.stringify(thaw.failure)}`);
    const v = await verify(ps);
    rows.push({ case: spec, backend: name, procs, gib, freeze, thaw, verify: v });
    console.error(
      `${spec} ${name}: freeze ${freeze.totalMs.toFixed(0)} ms, thaw ${thaw.totalMs.toFixed(0)} ms, VRAM ${v}`,
    );
  }
  for (const p of ps) process.kill(p.pid, "SIGTERM");
  await sleep(500);
}

const ms = (x: number | undefined) => (x === undefined ? "–" : (x / 1000).toFixed(2));
const lines = [
  `GPU engine benchmark, ${new Date().toISOString()}, ${bs.map((b) => b.b.description).join("; ")}`,
  "",
  "| case | backend | procs × GiB | freeze s | lock s | checkpoint s | thaw s | restore s | unlock s | VRAM moved (VmRSS est.) | VRAM after thaw | ok |",
  "|---|---|---|---|---|---|---|---|---|---|---|---|",
  ...rows.map(
    (r) =>
      `| ${r.case} | ${r.backend} | ${r.procs} × ${r.gib} | ${ms(r.freeze.totalMs)} | ${ms(r.freeze.phasesMs.lock)} | ` +
      `${ms(r.freeze.phasesMs.checkpoint)} | ${ms(r.thaw.totalMs)} | ${ms(r.thaw.phasesMs.restore)} | ` +
      `${ms(r.thaw.phasesMs.unlock)} | ${r.freeze.vramBytes === undefined ? "–" : `${(r.freeze.vramBytes / 2 ** 30).toFixed(2)} GiB`} | ` +
      `${r.verify} | ${r.freeze.ok && r.thaw.ok ? "yes" : "NO"} |`,
  ),
  "",
];
for (const { name } of bs) {
  const one = rows.find((r) => r.case === "1x4" && r.backend === name);
  const four = rows.find((r) => r.case === "4x4" && r.backend === name);
  if (one && four)
    lines.push(
      `${name}: 4 × 4 GiB in parallel ÷ 1 × 4 GiB: freeze ${(four.freeze.totalMs / one.freeze.totalMs).toFixed(2)}, ` +
        `thaw ${(four.thaw.totalMs / one.thaw.totalMs).toFixed(2)} (goal ≤ 1.3)`,
    );
}
console.log(lines.join("\n"));
if (values.json) writeFileSync(values.json, JSON.stringify(rows, null, 2));
const bad = rows.some((r) => r.verify !== "intact" || !r.freeze.ok || !r.thaw.ok);
process.exit(bad ? 1 : 0);

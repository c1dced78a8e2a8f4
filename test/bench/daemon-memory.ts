// kybernate run's resident memory: idle after registration, and while the runtime sends it mixed NRI requests
// (GPU and plain CreateContainer, RemoveContainer, StateChange events, resynchronizations). Prints figures; not
// a test. The daemon runs as a node runs it (node's flags from src/base/node-flags.ts, the CLI's `run`), against
// the fake NRI runtime over a real unix socket, with the GPU double's libcuda (no GPU, no containerd needed).
// Usage: node dist/test/bench/daemon-memory.js [requests=2000] [sampleEvery=200] [warmup=1000]
// The first requests are also the ones node compiles kybernate's NRI path on: their growth is reported apart.
// KYBERNATE_DIST=DIR measures another build's dist/ (an older checkout) as it ran then (KYBERNATE_NODE_FLAGS="").
import { spawn } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { NODE_FLAGS } from "../../src/base/node-flags.js";
import { packageRoot } from "../../src/base/paths.js";
import { NriEvent } from "../../src/nri/types.js";
import { buildDouble } from "../gpu/double/harness.js";
import { FakeRuntime } from "../nri/fake-nri-runtime.js";
import { container, pod } from "../nri/fixtures.js";

const requests = Number(process.argv[2] ?? 2000);
const sampleEvery = Number(process.argv[3] ?? 200);
const warmup = Number(process.argv[4] ?? 1000);
const MiB = 1024 * 1024;

const rss = (pid: number): number =>
  Number(/^VmRSS:\s+(\d+)\s+kB/m.exec(readFileSync(`/proc/${pid}/status`, "utf8"))?.[1] ?? 0) * 1024;

const runtime = await FakeRuntime.start();
const stateDir = mkdtempSync(join(tmpdir(), "kyb-memory-"));
const dist = process.env.KYBERNATE_DIST ?? join(packageRoot, "dist");
const flags = process.env.KYBERNATE_NODE_FLAGS?.split(" ").filter(Boolean) ?? NODE_FLAGS;
const child = spawn(
  process.execPath,
  [
    ...flags,
    join(dist, "src/cli/main.js"),
    "run",
    "--nri-socket",
    runtime.socketPath,
    "--socket",
    join(stateDir, "run", "daemon.sock"),
    "--state-dir",
    stateDir,
    "--gpu-backend",
    "driver",
    "--libcuda",
    join(buildDouble(), "libcuda.so.1"),
    "--log-level",
    "warn",
  ],
  { stdio: ["ignore", "ignore", "inherit"] },
);
try {
  const conn = await runtime.nextConnection(15_000);
  await conn.handshake;
  // Idle: what a GPU node pays while nothing is checkpointed (after start-up's garbage is collected).
  await sleep(5000);
  const idle = rss(child.pid ?? 0);
  const samples: Array<{ after: number; bytes: number }> = [];
  const p = pod("bench-pod");
  let warm = idle;
  for (let i = 0; i < warmup + requests; i++) {
    if (i === warmup) warm = rss(child.pid ?? 0);
    const id = `c${i.toString(16).padStart(8, "0")}`;
    switch (i % 4) {
      case 0: // a GPU container: kybernate writes its CRIU files and keeps its record
        await conn.createContainer(p, container(id, p.id, { env: ["NVIDIA_VISIBLE_DEVICES=0"] }));
        break;
      case 1: // a plain container: classified and passed through
        await conn.createContainer(p, container(id, p.id));
        break;
      case 2: // the GPU container of two requests ago goes away
        await conn.stateChange(
          NriEvent.RemoveContainer,
          p,
          container(`c${(i - 2).toString(16).padStart(8, "0")}`, p.id),
        );
        break;
      default: // an event kybernate does not subscribe: containerd would not send it; the wire answers
        await conn.stateChange(NriEvent.StartContainer, p, container(id, p.id));
    }
    if (i >= warmup && (i + 1 - warmup) % sampleEvery === 0)
      samples.push({ after: i + 1 - warmup, bytes: rss(child.pid ?? 0) });
  }
  await sleep(2000);
  const settled = rss(child.pid ?? 0);
  const mib = (b: number): string => `${(b / MiB).toFixed(1)} MiB`;
  console.log(`| kybernate run | resident memory |`);
  console.log(`|---|---|`);
  console.log(`| idle, 5 s after registration | ${mib(idle)} (${(idle / 1e6).toFixed(1)} MB) |`);
  console.log(`| after ${warmup} warm-up requests (node compiles the NRI path) | ${mib(warm)} |`);
  for (const s of samples) console.log(`| then after ${s.after} mixed NRI requests | ${mib(s.bytes)} |`);
  console.log(`| 2 s after the last request | ${mib(settled)} |`);
  const last = samples.at(-1)?.bytes ?? warm;
  console.log(
    `growth over the ${requests} requests after the warm-up: ${mib(last - warm)}; idle → warm: ${mib(warm - idle)}`,
  );
} finally {
  child.kill("SIGTERM");
  await new Promise((resolve) => child.once("exit", resolve));
  await runtime.close();
  rmSync(stateDir, { recursive: true, force: true });
}

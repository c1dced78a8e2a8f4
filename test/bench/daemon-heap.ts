// kybernate's JS heap after full garbage collections while the runtime sends it mixed NRI requests: resident
// memory (daemon-memory.js) rises and falls with V8's collections; what would show a leak is the live heap.
// The agent runs in this process against the fake NRI runtime. Run with: node --expose-gc dist/test/bench/daemon-heap.js [requests=10000]
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { startAgent } from "../../src/agent/agent.js";
import { silentLogger } from "../../src/base/log.js";
import { NriEvent } from "../../src/nri/types.js";
import { buildDouble } from "../gpu/double/harness.js";
import { FakeRuntime } from "../nri/fake-nri-runtime.js";
import { container, pod } from "../nri/fixtures.js";

const requests = Number(process.argv[2] ?? 10_000);
const gc = (globalThis as { gc?: () => void }).gc;
if (!gc) throw new Error("run with node --expose-gc: the live heap is measured after full collections");
const MiB = 1024 * 1024;
const live = (): number => {
  gc();
  gc();
  return process.memoryUsage().heapUsed;
};

const runtime = await FakeRuntime.start();
const stateDir = mkdtempSync(join(tmpdir(), "kyb-heap-"));
const agent = await startAgent({
  nriSocket: runtime.socketPath,
  pluginIndex: "10",
  daemonSocket: join(stateDir, "run", "daemon.sock"),
  stateDir,
  gpuBackend: "driver",
  libcuda: join(buildDouble(), "libcuda.so.1"),
  gpuBudgetMs: 90_000,
  lockTimeoutMs: 10_000,
  frozenGraceMs: 30_000,
  criuNetworkLock: "",
  log: silentLogger,
});
try {
  const conn = await runtime.nextConnection(10_000);
  await conn.handshake;
  const p = pod("bench-pod");
  const id = (i: number): string => `c${i.toString(16).padStart(8, "0")}`;
  const rows: string[] = [];
  for (let i = 0; i <= requests; i++) {
    if (i % Math.max(1, Math.floor(requests / 5)) === 0)
      rows.push(`| ${i} | ${(live() / MiB).toFixed(2)} MiB |`);
    if (i === requests) break;
    if (i % 4 === 0)
      await conn.createContainer(p, container(id(i), p.id, { env: ["NVIDIA_VISIBLE_DEVICES=0"] }));
    else if (i % 4 === 1) await conn.createContainer(p, container(id(i), p.id));
    else if (i % 4 === 2) await conn.stateChange(NriEvent.RemoveContainer, p, container(id(i - 2), p.id));
    else await conn.stateChange(NriEvent.StartContainer, p, container(id(i), p.id));
  }
  console.log("| mixed NRI requests so far | live JS heap after full GC |\n|---|---|");
  console.log(rows.join("\n"));
} finally {
  await agent.stop();
  await runtime.close();
  rmSync(stateDir, { recursive: true, force: true });
}
process.exit(0);

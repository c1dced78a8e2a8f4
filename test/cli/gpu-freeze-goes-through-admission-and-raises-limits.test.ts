/**
 * `kybernate gpu freeze` goes through the daemon's admission: refused (nothing frozen) when the node lacks the
 * room, and the memory limits below the staged VRAM raised (journalled) before the driver's checkpoint; `gpu thaw`
 * puts them back once the VRAM is on the GPU again.
 */
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, test } from "node:test";
import { silentLogger } from "../../src/base/log.js";
import type { CheckpointPolicy } from "../../src/checkpoint/policy.js";
import { runGpuCommand } from "../../src/cli/commands/gpu.js";
import { MemoryLimits } from "../../src/daemon/memory-limits.js";
import { FakeCgroups } from "../daemon/fakes.js";
import { cleanupScratch, fakeLibcuda, startWorkload, type Workload } from "../gpu/double/harness.js";

const MiB = 1024 * 1024;
const started: Workload[] = [];
const dir = mkdtempSync(join(tmpdir(), "kyb-gpu-limits-"));
after(async () => {
  await Promise.all(started.map((w) => w.stop()));
  cleanupScratch();
  rmSync(dir, { recursive: true, force: true });
});

const C = "/sys/fs/cgroup/fake/c";

/** A policy that admits or refuses, raising C's limit from 96 to 160 MiB. */
function policy(refuse?: string): CheckpointPolicy {
  const snapshot = { inventory: { gpus: [] }, apps: [] };
  return {
    admit: async () =>
      refuse
        ? { verdict: { ok: false, error: refuse }, snapshot, raises: [] }
        : {
            verdict: { ok: true },
            snapshot,
            raises: [{ dir: C, file: "memory.max", from: String(96 * MiB), to: String(160 * MiB) }],
          },
    admitRestore: async () => ({ verdict: { ok: true }, raises: [] }),
    checkFrozen: async () => undefined,
    recordCheckpoint: async () => undefined,
    planRestore: async () => ({ ok: true, deviceMap: [], reason: "" }),
  };
}

test("refused by admission: nothing frozen, the reason printed, exit 1", async () => {
  const w = await startWorkload();
  started.push(w);
  const lines: string[] = [];
  const cgroups = new FakeCgroups();
  cgroups.add(C, 96 * MiB, 40 * MiB);
  const r = await runGpuCommand({
    action: "freeze",
    pids: w.pids,
    backend: "driver",
    libcuda: fakeLibcuda(),
    print: (l) => lines.push(l),
    policy: policy("host-RAM admission refused the checkpoint: MemAvailable is 100 MiB"),
    limits: new MemoryLimits(join(dir, "a"), cgroups, silentLogger),
  });
  assert.equal(r.exitCode, 1);
  assert.match(lines.join("\n"), /MemAvailable is 100 MiB/);
  assert.equal(w.status(w.pids[0] ?? 0).state, "running", "never frozen");
  assert.deepEqual(cgroups.writes, []);
});

test("admitted: the limit raised before the freeze, put back by the thaw", async () => {
  const w = await startWorkload();
  started.push(w);
  const cgroups = new FakeCgroups();
  cgroups.add(C, 96 * MiB, 40 * MiB);
  const limits = new MemoryLimits(join(dir, "b"), cgroups, silentLogger, { marginBytes: 0 });
  const base = {
    pids: w.pids,
    backend: "driver" as const,
    libcuda: fakeLibcuda(),
    print: () => undefined,
    policy: policy(),
    limits,
  };
  const f = await runGpuCommand({ ...base, action: "freeze" });
  assert.equal(f.exitCode, 0);
  assert.equal(cgroups.limit(C), String(160 * MiB));
  const t = await runGpuCommand({ ...base, action: "thaw" });
  assert.equal(t.exitCode, 0);
  assert.equal(cgroups.limit(C), String(96 * MiB));
  limits.close();
});

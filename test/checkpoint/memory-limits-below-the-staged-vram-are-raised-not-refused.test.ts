/**
 * A container (or pod) memory limit below the VRAM a checkpoint stages is no reason to refuse: the levels whose
 * room is short are raised by the staged bytes, outermost first; the node's own room still decides.
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import { silentLogger } from "../../src/base/log.js";
import { fixedEstimator, limitRaises } from "../../src/checkpoint/admission.js";
import { NodePolicy } from "../../src/checkpoint/policy.js";
import type { MemoryLevel } from "../../src/host/cgroup.js";

const MiB = 1024 * 1024;
const GiB = 1024 * MiB;

const v2 = (dir: string, limit: number | undefined, usage: number): MemoryLevel => ({
  dir,
  version: 2,
  usage,
  unreclaimable: usage,
  limits: [
    limit === undefined
      ? { file: "memory.max", text: "max" }
      : { file: "memory.max", text: String(limit), bytes: limit },
  ],
});

const cases: Array<{
  name: string;
  levels: MemoryLevel[];
  staged: number;
  coming?: number;
  raised: string[];
}> = [
  {
    name: "container limit below the staged VRAM (32 GiB of RAM, 80 GB of VRAM): the container and its pod raised",
    levels: [v2("/c", 32 * GiB, 2 * GiB), v2("/pod", 33 * GiB, 2 * GiB), v2("/kubepods", undefined, 9 * GiB)],
    staged: 80 * GiB,
    raised: [`/pod/memory.max=${113 * GiB}`, `/c/memory.max=${112 * GiB}`],
  },
  {
    name: "room enough in the container, not in the pod: only the pod",
    levels: [v2("/c", 8 * GiB, GiB), v2("/pod", 4 * GiB, 3 * GiB)],
    staged: 2 * GiB,
    raised: [`/pod/memory.max=${6 * GiB}`],
  },
  { name: "no limit anywhere: nothing", levels: [v2("/c", undefined, GiB)], staged: 8 * GiB, raised: [] },
  {
    name: "restore: what the container held at checkpoint is still to come besides the staged bytes",
    levels: [v2("/c", 4 * GiB, 16 * MiB)],
    staged: 2 * GiB,
    coming: 3 * GiB,
    raised: [`/c/memory.max=${6 * GiB}`],
  },
  {
    name: "v1: memsw raised before the memory limit (v1 refuses a limit above memsw)",
    levels: [
      {
        dir: "/v1c",
        version: 1,
        usage: MiB,
        unreclaimable: MiB,
        limits: [
          { file: "memory.memsw.limit_in_bytes", text: String(96 * MiB), bytes: 96 * MiB },
          { file: "memory.limit_in_bytes", text: String(96 * MiB), bytes: 96 * MiB },
        ],
      },
    ],
    staged: 100 * MiB + 1,
    raised: [
      `/v1c/memory.memsw.limit_in_bytes=${196 * MiB + 4096}`,
      `/v1c/memory.limit_in_bytes=${196 * MiB + 4096}`,
    ],
  },
];

for (const c of cases)
  test(c.name, () => {
    assert.deepEqual(
      limitRaises(c.levels, c.staged, c.coming).map((r) => `${r.dir}/${r.file}=${r.to}`),
      c.raised,
    );
    for (const r of limitRaises(c.levels, c.staged))
      assert.equal(
        r.from,
        c.levels.find((l) => l.dir === r.dir)?.limits.find((l) => l.file === r.file)?.text,
      );
  });

test("NodePolicy.admit: a limit below the staged VRAM is raised, not refused; the node's own room still refuses, naming it", async () => {
  const policy = (memAvailable: number) =>
    new NodePolicy({
      probe: { inventory: async () => ({ gpus: [] }), computeApps: async () => [] },
      version: "0.1.0",
      log: silentLogger,
      estimator: fixedEstimator(4 * GiB),
      memAvailable: async () => memAvailable,
      admission: { enabled: true, headroomBytes: GiB },
    });
  const ctx = {
    containerId: "c1",
    pids: [process.pid],
    memoryLevels: async () => [v2("/c", 2 * GiB, 24 * MiB)],
  };
  const roomy = await policy(64 * GiB).admit(ctx);
  assert.equal(roomy.verdict.ok, true);
  assert.deepEqual(
    roomy.raises.map((r) => r.to),
    [String(6 * GiB)],
  );
  assert.equal(roomy.snapshot.stagedBytes, 4 * GiB);
  const tight = await policy(4 * GiB).admit(ctx);
  assert.match(tight.verdict.ok ? "" : tight.verdict.error, /MemAvailable is 4096 MiB/);
});

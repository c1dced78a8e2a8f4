/**
 * A process holding an io_uring instance (CRIU 4.2 cannot dump one) is refused by name: the container's other
 * processes before the freeze, its CUDA processes after it (the freeze takes their GPU mappings away).
 */
import assert from "node:assert/strict";
import { mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, test } from "node:test";
import { silentLogger } from "../../src/base/log.js";
import { criuRefusal, type DumpFacts, readDumpFacts } from "../../src/checkpoint/criu-limits.js";
import { NodePolicy } from "../../src/checkpoint/policy.js";

const RING = "anon_inode:[io_uring]";
const facts = (pid: number, ioUring: boolean, comm = "python3"): DumpFacts => ({ pid, comm, ioUring });

const cases: Array<{ name: string; processes: DumpFacts[]; error?: RegExp }> = [
  { name: "no process holds a ring", processes: [facts(10, false), facts(11, false)] },
  { name: "no process at all", processes: [] },
  {
    name: "one holds a ring",
    processes: [facts(10, false), facts(11, true, "loader")],
    error:
      /^refusing to checkpoint: process 11 \(loader\) uses io_uring \(anon_inode:\[io_uring\]\), which CRIU cannot dump; nothing was frozen: run the workload with io_uring off/,
  },
  {
    name: "two hold one",
    processes: [facts(10, true), facts(11, true)],
    error: /^refusing to checkpoint: processes 10 \(python3\), 11 \(python3\) use io_uring/,
  },
];

for (const c of cases) {
  test(`criuRefusal: ${c.name}`, () => {
    const why = criuRefusal(c.processes, "before the freeze");
    if (c.error) assert.match(why ?? "", c.error);
    else assert.equal(why, undefined);
  });
}

test("criuRefusal after the freeze says the GPU state was put back", () => {
  assert.match(
    criuRefusal([facts(7, true)], "after the freeze") ?? "",
    /which CRIU cannot dump even with the GPU state moved out; the GPU state was put back: /,
  );
});

const root = mkdtempSync(join(tmpdir(), "kyb-proc-"));
after(() => rmSync(root, { recursive: true, force: true }));

/** A /proc/PID with a comm, maps text and fds pointing where given. */
function fakeProcess(pid: number, maps: string, fds: string[]): void {
  const dir = join(root, String(pid));
  mkdirSync(join(dir, "fd"), { recursive: true });
  writeFileSync(join(dir, "comm"), `proc${pid}\n`);
  writeFileSync(join(dir, "maps"), maps);
  for (const [i, target] of fds.entries()) symlinkSync(target, join(dir, "fd", String(i)));
}

test("readDumpFacts sees a ring held as an fd or only as a mapping, and none in a gone process", async () => {
  fakeProcess(20, "7f00-7f01 r-xp 00000000 08:01 12 /usr/lib/libc.so.6\n", ["/dev/null", RING]);
  fakeProcess(21, `7f03e6a73000-7f03e6a74000 rw-s 10000000 00:0f 1040 ${RING}\n`, ["/dev/null"]);
  fakeProcess(22, "7f00-7f01 r-xp 00000000 08:01 12 /usr/lib/libc.so.6\n", [
    "socket:[123]",
    "anon_inode:[eventfd]",
  ]);
  const got = await readDumpFacts([20, 21, 22, 99], root);
  assert.deepEqual(got, [
    facts(20, true, "proc20"),
    facts(21, true, "proc21"),
    facts(22, false, "proc22"),
    facts(99, false, "?"),
  ]);
});

const policy = (ringHolders: number[]) =>
  new NodePolicy({
    probe: { inventory: async () => ({ gpus: [] }), computeApps: async () => [] },
    version: "0.1.0",
    log: silentLogger,
    admission: { enabled: true, headroomBytes: 0 },
    memAvailable: async () => 64 * 2 ** 30,
    ncclFacts: async (pids) => pids.map((pid) => ({ pid, mapped: [] })),
    dumpFacts: async (pids) => pids.map((pid) => facts(pid, ringHolders.includes(pid))),
  });
const ctx = { containerId: "c1", pids: [10], containerPids: [1, 10, 11], memoryLevels: async () => [] };

test("admission refuses a non-CUDA process holding a ring before the freeze; a CUDA one waits for checkFrozen", async () => {
  const refused = await policy([11]).admit(ctx);
  assert.equal(refused.verdict.ok, false);
  assert.match(
    refused.verdict.ok ? "" : refused.verdict.error,
    /process 11 \(python3\) uses io_uring.*nothing was frozen/,
  );

  const cuda = policy([10]);
  const admitted = await cuda.admit(ctx);
  assert.equal(
    admitted.verdict.ok,
    true,
    "the CUDA process's ring may be its GPU mapping, gone after the freeze",
  );
  assert.match(
    (await cuda.checkFrozen(ctx)) ?? "",
    /process 10 \(python3\) uses io_uring.*the GPU state was put back/,
  );
  assert.equal(await policy([]).checkFrozen(ctx), undefined);
});

/**
 * NCCL ranks whose transports the driver's checkpoint cannot move are refused before any driver call, naming the
 * variables to set; a single process that merely links NCCL, and ranks started with the socket transport, pass.
 */
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { copyFileSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, test } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { silentLogger } from "../../src/base/log.js";
import {
  NCCL_CHECK_VARIABLE,
  type NcclFacts,
  ncclRefusal,
  readNcclFacts,
} from "../../src/checkpoint/nccl.js";
import { NodePolicy } from "../../src/checkpoint/policy.js";
import { parseEnviron } from "../../src/host/proc.js";

const NCCL = "/usr/lib/python3/dist-packages/nvidia/nccl/lib/libnccl.so.2";
const SAFE = {
  NCCL_NVLS_ENABLE: "0",
  NCCL_P2P_DISABLE: "1",
  NCCL_SHM_DISABLE: "1",
  NCCL_IB_DISABLE: "1",
};
const rank = (
  pid: number,
  env: Record<string, string>,
  mapped = [NCCL, "/usr/lib/libc.so.6"],
): NcclFacts => ({
  pid,
  env: new Map(Object.entries(env)),
  mapped,
});

const scratch = mkdtempSync(join(tmpdir(), "kyb-nccl-"));
after(() => rmSync(scratch, { recursive: true, force: true }));

test("two ranks with NCCL's defaults: refused, naming every variable to set and the way out", () => {
  const why = ncclRefusal([rank(10, {}), rank(11, {})]);
  assert.match(
    why ?? "",
    /^refusing to checkpoint: process 10 is one of 2 NCCL ranks \(it loaded libnccl\.so\.2\) and its environment lacks NCCL_NVLS_ENABLE=0 NCCL_P2P_DISABLE=1 NCCL_SHM_DISABLE=1 NCCL_IB_DISABLE=1; .*so it was not asked: start every rank with .*docs\/MULTI-GPU\.md.*KYBERNATE_NCCL_CHECK=off$/,
  );
});

test("each rank is checked; the message names what that rank lacks", () => {
  const why = ncclRefusal([
    rank(10, SAFE),
    rank(11, { ...SAFE, NCCL_NVLS_ENABLE: "1", NCCL_SHM_DISABLE: "true" }),
  ]);
  assert.match(why ?? "", /process 11 .*lacks NCCL_NVLS_ENABLE=0 NCCL_SHM_DISABLE=1;/);
});

test("ranks started with the socket transport pass; equivalent spellings count", () => {
  assert.equal(ncclRefusal([rank(10, SAFE), rank(11, SAFE)]), undefined);
  const other = { NCCL_NVLS_ENABLE: " 0", NCCL_P2P_LEVEL: "LOC", NCCL_SHM_DISABLE: "1", NCCL_NET: "Socket" };
  assert.equal(ncclRefusal([rank(10, other), rank(11, other)]), undefined);
});

test("a single process that links NCCL is no rank of several: not refused; with a world size > 1 it is", () => {
  assert.equal(ncclRefusal([rank(10, {})]), undefined, "PyTorch links NCCL whether or not it uses it");
  assert.equal(ncclRefusal([rank(10, {}), rank(11, {}, ["/usr/lib/libc.so.6"])]), undefined);
  assert.match(ncclRefusal([rank(10, { WORLD_SIZE: "2" })]) ?? "", /process 10 is one of 2 NCCL ranks/);
  assert.match(ncclRefusal([rank(10, { OMPI_COMM_WORLD_SIZE: "4" })]) ?? "", /process 10/);
  assert.equal(ncclRefusal([rank(10, { WORLD_SIZE: "1" })]), undefined);
});

test(`${NCCL_CHECK_VARIABLE}=off in a rank's environment skips that rank; an unreadable environment passes`, () => {
  assert.equal(ncclRefusal([rank(10, { [NCCL_CHECK_VARIABLE]: "off" }), rank(11, SAFE)]), undefined);
  assert.equal(ncclRefusal([{ pid: 10, mapped: [NCCL] }, rank(11, SAFE)]), undefined);
});

test("the environ parser keeps the first definition of a name, as getenv does", () => {
  const env = parseEnviron("A=1\0B=x=y\0A=2\0NOEQ\0=bad\0");
  assert.deepEqual(
    [...env],
    [
      ["A", "1"],
      ["B", "x=y"],
    ],
  );
});

test("read from /proc: a process that loaded a library named libnccl.so.2 and the environment it started with", async (t) => {
  // A real shared library under NCCL's name, preloaded: mapped exactly as the loader maps NCCL.
  const lib = join(scratch, "libnccl.so.2");
  copyFileSync("/lib/x86_64-linux-gnu/libutil.so.1", lib);
  const start = (env: Record<string, string>) =>
    spawn("sleep", ["30"], { env: { PATH: process.env.PATH ?? "/usr/bin:/bin", LD_PRELOAD: lib, ...env } });
  const a = start({ WORLD_SIZE: "2", NCCL_P2P_DISABLE: "1" });
  const b = start({ WORLD_SIZE: "2", ...SAFE });
  t.after(() => {
    a.kill("SIGKILL");
    b.kill("SIGKILL");
  });
  await sleep(200);
  const facts = await readNcclFacts([a.pid ?? 0, b.pid ?? 0]);
  assert.ok(facts[0]?.mapped.includes(lib), "the preloaded library is among the mappings");
  assert.equal(facts[0]?.env?.get("NCCL_P2P_DISABLE"), "1");
  assert.match(
    ncclRefusal(facts) ?? "",
    new RegExp(
      `process ${a.pid} is one of 2 NCCL ranks .*lacks NCCL_NVLS_ENABLE=0 NCCL_SHM_DISABLE=1 NCCL_IB_DISABLE=1;`,
    ),
  );
  const gone = await readNcclFacts([2 ** 22 + 1]);
  assert.deepEqual(gone, [{ pid: 2 ** 22 + 1, mapped: [] }]);
});

test("the node policy refuses such ranks at admission, before host memory is even looked at, admission on or off", async () => {
  const options = {
    probe: { inventory: async () => ({ gpus: [] }), computeApps: async () => [] },
    version: "0.1.0",
    log: silentLogger,
    memAvailable: async () => {
      throw new Error("host memory must not be asked");
    },
    ncclFacts: async (pids: readonly number[]) => pids.map((pid) => rank(pid, { NCCL_NVLS_ENABLE: "0" })),
  };
  const ctx = { containerId: "c1", pids: [10, 11], memoryLevels: async () => [] };
  for (const enabled of [true, false]) {
    const { verdict } = await new NodePolicy({ ...options, admission: { enabled, headroomBytes: 0 } }).admit(
      ctx,
    );
    assert.equal(verdict.ok, false);
    assert.match(
      verdict.ok ? "" : verdict.error,
      /process 10 .*lacks NCCL_P2P_DISABLE=1 NCCL_SHM_DISABLE=1 NCCL_IB_DISABLE=1/,
    );
  }
  const fine = new NodePolicy({
    ...options,
    ncclFacts: async (pids) => pids.map((pid) => rank(pid, SAFE)),
    admission: { enabled: false, headroomBytes: 0 },
  });
  assert.equal((await fine.admit(ctx)).verdict.ok, true);
});

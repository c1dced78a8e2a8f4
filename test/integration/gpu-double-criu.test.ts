/**
 * The GPU double is faithful where it matters to kybernate: CRIU cannot dump the fake workload while it is
 * "on the GPU" (the io_uring ring stands for the GPU mapping), and can once the driver (fake) has
 * checkpointed it; after CRIU restore, the driver's restore + unlock bring it back with its VRAM intact.
 */
import assert from "node:assert/strict";
import { execFileSync, spawn } from "node:child_process";
import { existsSync, mkdirSync, openSync, readFileSync, rmSync } from "node:fs";
import { join } from "node:path";
import { after, test } from "node:test";
import { packageRoot } from "../../src/base/paths.js";
import { DriverBackend } from "../../src/gpu/driver-backend.js";
import { GpuEngine } from "../../src/gpu/engine.js";
import { ProcessState } from "../../src/gpu/types.js";
import { buildDouble, cleanupScratch, fakeDevice, fakeLibcuda, scratch } from "../gpu/double/harness.js";

function criuPath(): string {
  const envFile = join(packageRoot, ".testnode/env.json");
  const criu = existsSync(envFile)
    ? (JSON.parse(readFileSync(envFile, "utf8")) as { bin?: { criu?: string } }).bin?.criu
    : undefined;
  if (!criu || !existsSync(criu))
    throw new Error(
      `no CRIU from the test node (${envFile} bin.criu): run \`npm run testnode:up\` first (as root)`,
    );
  return criu;
}

let pid = 0;
after(() => {
  if (pid) {
    try {
      process.kill(pid, "SIGKILL");
    } catch {}
  }
  cleanupScratch();
});

function criu(args: string[]): { ok: boolean; log: string; logFile: string } {
  const dir = args[args.indexOf("-D") + 1] ?? scratch;
  const logFile = join(dir, `${args[0]}.log`);
  try {
    execFileSync(criuPath(), [...args, "-o", `${args[0]}.log`, "-v4"], { stdio: "pipe", timeout: 60_000 });
    return { ok: true, log: readFileSync(logFile, "utf8"), logFile };
  } catch {
    return { ok: false, log: existsSync(logFile) ? readFileSync(logFile, "utf8") : "", logFile };
  }
}

async function statusOf(
  p: number,
): Promise<{ state: string; counter: number; verified: number; verifyFailures: number }> {
  const file = join(process.env.FAKE_CUDA_DIR ?? "", `${p}.json`);
  for (let i = 0; i < 50 && !existsSync(file); i++) await new Promise((r) => setTimeout(r, 50));
  return JSON.parse(readFileSync(file, "utf8"));
}

test("CRIU cannot dump the fake workload on the GPU, can once checkpointed, and the restored one thaws intact", async () => {
  const criuBin = criuPath();
  assert.ok(criuBin);
  const bin = join(buildDouble(), "fake-cuda-workload");
  const log = openSync(join(scratch, "workload.log"), "w");
  // Own session, no pipes to this test: CRIU dumps the process tree alone.
  const child = spawn(bin, ["--mib", "8", "--device", fakeDevice], {
    detached: true,
    stdio: ["ignore", log, log],
  });
  pid = child.pid ?? 0;
  const exited = new Promise((r) => child.once("exit", r));
  await statusOf(pid);
  const engine = new GpuEngine({ backend: new DriverBackend(fakeLibcuda()) });

  const onGpu = join(scratch, "img-on-gpu");
  mkdirSync(onGpu);
  const first = criu(["dump", "-t", String(pid), "-D", onGpu, "--leave-running"]);
  assert.equal(first.ok, false, "CRIU must refuse the workload while it holds its ring");
  assert.match(
    first.log,
    /io_uring/,
    `expected CRIU to stumble on the io_uring mapping; see ${first.logFile}`,
  );

  assert.equal((await engine.checkpoint([pid])).ok, true);
  const img = join(scratch, "img");
  mkdirSync(img);
  const dumped = criu(["dump", "-t", String(pid), "-D", img]);
  assert.equal(dumped.ok, true, `CRIU dump of the checkpointed workload failed; see ${dumped.logFile}`);
  // Dumped without --leave-running, the process is killed; reap it so the restore can have its pid back,
  // and drop its stale socket file so the restore can bind it again.
  await exited;
  rmSync(join(process.env.FAKE_CUDA_DIR ?? "", `${pid}.sock`), { force: true });
  const restored = criu(["restore", "-D", img, "-d"]);
  assert.equal(restored.ok, true, `CRIU restore failed; see ${restored.logFile}`);
  assert.equal(await new DriverBackend(fakeLibcuda()).getState(pid), ProcessState.CHECKPOINTED);

  const before = await statusOf(pid);
  const t = await engine.restore([pid]);
  assert.equal(t.ok, true, JSON.stringify(t.failure));
  await new Promise((r) => setTimeout(r, 300));
  const s = await statusOf(pid);
  assert.equal(s.state, "running");
  assert.equal(s.verifyFailures, 0);
  assert.equal(s.verified, before.verified + 1, "VRAM verified after the restore");
  assert.ok(s.counter > before.counter, "work goes on after the restore");
});

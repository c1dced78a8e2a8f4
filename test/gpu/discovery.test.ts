import assert from "node:assert/strict";
import { type ChildProcess, spawn } from "node:child_process";
import { copyFileSync, existsSync, mkdirSync, readFileSync, rmdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { after, describe, test } from "node:test";
import { discoverCudaProcesses } from "../../src/gpu/discovery.js";
import { DriverBackend } from "../../src/gpu/driver-backend.js";
import { GpuEngine } from "../../src/gpu/engine.js";
import { ProcessState } from "../../src/gpu/types.js";
import { ProcessCgroups, processesOfCgroup, resolveCgroupDir } from "../../src/host/cgroup.js";
import {
  cleanupScratch,
  fakeDevice,
  fakeLibcuda,
  isFakeDevice,
  scratch,
  startWorkload,
  type Workload,
} from "./double/harness.js";

// Both kinds of hierarchy where this machine has them: v1 (pids controller) and v2 (unified, or the root on v2 hosts).
const v2Root = existsSync("/sys/fs/cgroup/cgroup.controllers") ? "/sys/fs/cgroup" : "/sys/fs/cgroup/unified";
const hierarchies = [
  { name: "v2", root: v2Root },
  { name: "v1", root: "/sys/fs/cgroup/pids" },
].filter((h) => existsSync(join(h.root, "cgroup.procs")));

/** The cgroup directory that lists a process's cgroup, as discovery finds it from an init pid. */
const cgroupOfPid = async (pid: number): Promise<string> => (await ProcessCgroups.ofPid(pid)).processesDir();

const workloads: Workload[] = [];
const helpers: ChildProcess[] = [];
const cgroups: string[] = [];
after(async () => {
  for (const h of helpers) h.kill("SIGKILL");
  await Promise.all(workloads.map((w) => w.stop()));
  await new Promise((r) => setTimeout(r, 100));
  for (const dir of cgroups.reverse()) {
    try {
      rmdirSync(dir);
    } catch {}
  }
  cleanupScratch();
});

function moveInto(dir: string, pid: number): void {
  writeFileSync(join(dir, "cgroup.procs"), String(pid));
}

/** A "container": the --procs parent (no CUDA), 3 workers (one in a nested cgroup), a helper, a cuda-checkpoint. */
async function container(root: string) {
  const dir = join(root, `kyb-gpu-test-${process.pid}-${cgroups.length}`);
  mkdirSync(dir);
  cgroups.push(dir);
  const nested = join(dir, "worker");
  mkdirSync(nested);
  cgroups.push(nested);
  const w = await startWorkload({ procs: 3 });
  workloads.push(w);
  const helper = spawn("sleep", ["60"], { stdio: "ignore" });
  // A process named cuda-checkpoint that even holds the device: it must never be picked.
  const toolPath = join(scratch, "cuda-checkpoint");
  if (!existsSync(toolPath)) copyFileSync("/bin/sleep", toolPath);
  const tool = spawn("bash", ["-c", `exec 3<${fakeDevice}; exec ${toolPath} 60`], { stdio: "ignore" });
  await new Promise((r) => setTimeout(r, 100));
  helpers.push(helper, tool);
  const [w0, w1, w2] = w.pids as [number, number, number];
  for (const pid of [w.child.pid ?? 0, w0, w1, helper.pid ?? 0, tool.pid ?? 0]) moveInto(dir, pid);
  moveInto(nested, w2);
  return { dir, w, helper: helper.pid ?? 0, tool: tool.pid ?? 0 };
}

describe("discovery of a container's CUDA processes", () => {
  const backend = new DriverBackend(fakeLibcuda());

  for (const h of hierarchies) {
    test(`cgroup ${h.name}: picks the 3 workers, not the parent, the helper or itself; after freeze finds them by state`, async () => {
      const { dir, w, helper, tool } = await container(h.root);
      const all = await processesOfCgroup(dir);
      assert.ok(all.includes(helper) && w.pids.every((p) => all.includes(p)), "nested cgroups are included");

      const held = await discoverCudaProcesses({
        cgroup: dir,
        backend,
        mode: "held",
        deviceMatch: isFakeDevice,
      });
      assert.deepEqual(
        held.cuda.map((c) => c.pid),
        w.pids,
      );
      assert.ok(held.cuda.every((c) => c.state === ProcessState.RUNNING));
      assert.ok(held.skipped.some((s) => s.pid === w.child.pid && /no NVIDIA device/.test(s.reason)));
      assert.ok(held.skipped.some((s) => s.pid === tool && s.reason === "cuda-checkpoint tool"));

      const engine = new GpuEngine({ backend });
      assert.equal((await engine.checkpoint(held.cuda.map((c) => c.pid))).ok, true);
      // CHECKPOINTED processes hold no device: "held" finds nothing, "any" asks the driver about everyone.
      const none = await discoverCudaProcesses({
        cgroup: dir,
        backend,
        mode: "held",
        deviceMatch: isFakeDevice,
      });
      assert.deepEqual(none.cuda, []);
      const any = await discoverCudaProcesses({ cgroup: dir, backend, mode: "any" });
      assert.deepEqual(
        any.cuda.map((c) => [c.pid, c.state]),
        w.pids.map((p) => [p, ProcessState.CHECKPOINTED]),
      );
      assert.ok(any.skipped.some((s) => s.pid === helper && /initialization error/.test(s.reason)));
      assert.equal((await engine.restore(any.cuda.map((c) => c.pid))).ok, true);

      // The same from the init pid, and from the hierarchy-relative path /proc/PID/cgroup shows.
      const fromInit = await discoverCudaProcesses({
        initPid: w.child.pid ?? 0,
        backend,
        mode: "held",
        deviceMatch: isFakeDevice,
      });
      assert.deepEqual(
        fromInit.cuda.map((c) => c.pid),
        w.pids,
      );
      assert.equal(resolveCgroupDir(dir.slice(h.root.length)), dir);
    });
  }

  test("a process in the root cgroup is refused with a hint to pass pids", async () => {
    const line = readFileSync("/proc/1/cgroup", "utf8");
    if (!line.split("\n").every((l) => l.endsWith(":/") || !l)) return; // pid 1 is not at the root here
    await assert.rejects(cgroupOfPid(1), /root cgroup: give its pids with --pid/);
  });

  test("an unknown cgroup or pid says what to check", async () => {
    assert.throws(() => resolveCgroupDir("/no/such/cgroup-kyb"), /not found under/);
    await assert.rejects(cgroupOfPid(2 ** 22 + 3), /not found .* is the container running/);
  });
});

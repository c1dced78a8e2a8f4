/** Test helpers for the GPU double: build it, start fake workloads, read their status, never leak them. */
import { type ChildProcess, execFileSync, spawn } from "node:child_process";
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { packageRoot } from "../../../src/base/paths.js";

// One control directory per test process, shared with the fake libcuda / cuda-checkpoint through the env.
const controlDir = `/tmp/kyb-fc-${process.pid}`;
process.env.FAKE_CUDA_DIR = controlDir;
mkdirSync(controlDir, { recursive: true });

export const scratch = mkdtempSync("/tmp/kyb-gpu-test-");
/** The "device" the fake workloads hold open while on the GPU (plain-process tests have no /dev/nvidiactl). */
export const fakeDevice = join(scratch, "nvidiactl");
writeFileSync(fakeDevice, "");
export const isFakeDevice = (p: string): boolean => p === fakeDevice;

let built: string | undefined;
/** Builds the double (idempotent) and returns its directory. */
export function buildDouble(): string {
  built ??= execFileSync("bash", [join(packageRoot, "test/gpu/double/build.sh")], {
    encoding: "utf8",
  }).trim();
  return built;
}
export const fakeLibcuda = (): string => join(buildDouble(), "libcuda.so.1");
export const fakeTool = (): string => join(buildDouble(), "cuda-checkpoint");

export interface WorkloadStatus {
  pid: number;
  state: string;
  counter: number;
  mib: number;
  ring: boolean;
  device: boolean;
  verified: number;
  verifyFailures: number;
  checkpoints: number;
  restores: number;
  lastDevicePairs: number;
  /** --serve: requests answered, connections accepted, ended by the other side (or an error), open now. */
  served: number;
  accepted: number;
  closed: number;
  open: number;
  /** --traits: "ok", or the first trait that stopped working; how many rounds checked them. */
  traits?: string;
  traitChecks?: number;
  /** The GPUs it holds (--gpus), where a restore's device map moved them; empty without --gpus. */
  gpus: string[];
}

export interface Workload {
  /** The CUDA processes (the workers, not the --procs parent). */
  pids: number[];
  child: ChildProcess;
  status(pid: number): WorkloadStatus;
  /** Resolves once the process's counter moved past `after` (work goes on), or rejects after timeoutMs. */
  waitCounter(pid: number, after: number, timeoutMs?: number): Promise<number>;
  stop(): Promise<void>;
}

const live = new Set<ChildProcess>();
const livePids = new Set<number>();
process.on("exit", () => {
  for (const pid of livePids) {
    try {
      process.kill(pid, "SIGKILL");
    } catch {}
  }
});

export async function startWorkload(
  opts: {
    mib?: number;
    procs?: number;
    faultFile?: string;
    device?: string;
    /** The GPUs each process holds: a restore's map must name all of them. */
    gpus?: string[];
    /** A file each process maps for good, as a shared library (a stand-in for libnccl.so.2). */
    library?: string;
    env?: NodeJS.ProcessEnv;
  } = {},
): Promise<Workload> {
  const args = ["--mib", String(opts.mib ?? 4), "--device", opts.device ?? fakeDevice];
  if (opts.gpus?.length) args.push("--gpus", opts.gpus.join(","));
  if (opts.library) args.push("--library", opts.library);
  if (opts.procs) args.push("--procs", String(opts.procs));
  if (opts.faultFile) args.push("--fault-file", opts.faultFile);
  const child = spawn(join(buildDouble(), "fake-cuda-workload"), args, {
    stdio: ["ignore", "pipe", "pipe"],
    ...(opts.env ? { env: { ...process.env, ...opts.env } } : {}),
  });
  live.add(child);
  if (child.pid) livePids.add(child.pid);
  const want = opts.procs ?? 1;
  const pids: number[] = [];
  let stderr = "";
  child.stderr?.on("data", (d) => {
    stderr += d;
  });
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`fake workload not ready after 5 s: ${stderr}`)), 5000);
    let buf = "";
    child.stdout?.on("data", (d) => {
      buf += d;
      for (const m of buf.matchAll(/ready pid=(\d+)/g)) {
        const pid = Number(m[1]);
        if (!pids.includes(pid)) {
          pids.push(pid);
          livePids.add(pid);
        }
      }
      if (pids.length >= want) {
        clearTimeout(timer);
        resolve();
      }
    });
    child.on("exit", (code) => {
      clearTimeout(timer);
      reject(new Error(`fake workload exited (${code}) before it was ready: ${stderr}`));
    });
  });
  pids.sort((a, b) => a - b);
  // Pids are reused (pid_max may be 32768 and a test run spawns thousands): a fault file an earlier test left
  // for a process that had this pid must not apply to the new one. The workload reads it only at a driver call.
  if (opts.faultFile?.includes("%p"))
    for (const pid of pids) rmSync(opts.faultFile.replace("%p", String(pid)), { force: true });
  const status = (pid: number): WorkloadStatus =>
    JSON.parse(readFileSync(join(controlDir, `${pid}.json`), "utf8")) as WorkloadStatus;
  return {
    pids,
    child,
    status,
    async waitCounter(pid, after, timeoutMs = 3000) {
      const end = Date.now() + timeoutMs;
      for (;;) {
        const c = status(pid).counter;
        if (c > after) return c;
        if (Date.now() > end) throw new Error(`pid ${pid}: counter stuck at ${c} (wanted > ${after})`);
        await new Promise((r) => setTimeout(r, 50));
      }
    },
    async stop() {
      const exited = new Promise<void>((r) => {
        if (child.exitCode !== null || child.signalCode !== null) r();
        else child.once("exit", () => r());
      });
      // SIGKILL: a workload stopped by a test (SIGSTOP) or in a hung call must still go.
      for (const pid of [...pids, child.pid ?? 0]) {
        try {
          if (pid) process.kill(pid, "SIGKILL");
        } catch {}
        livePids.delete(pid);
      }
      await exited;
      live.delete(child);
      for (const pid of pids) rmSync(join(controlDir, `${pid}.sock`), { force: true });
      for (const pid of pids) rmSync(join(controlDir, `${pid}.json`), { force: true });
    },
  };
}

/** Kills every workload still running (for after() hooks). */
export async function stopAll(ws: Workload[]): Promise<void> {
  await Promise.all(ws.map((w) => w.stop()));
}

export function cleanupScratch(): void {
  rmSync(scratch, { recursive: true, force: true });
  rmSync(controlDir, { recursive: true, force: true });
}

import type { Deadline } from "../base/deadline.js";
import { ProcessCgroups, processesOfCgroup, resolveCgroupDir } from "../host/cgroup.js";
import { isNvidiaDevicePath } from "../host/nvidia.js";
import { describeHalt, fdTargets, haltOf, mappedFiles, readStat } from "../host/proc.js";
import type { GpuBackend } from "./backend.js";
import type { ProcessState } from "./types.js";

/** Whether the process has an open fd or a mapping on a device the matcher accepts. */
export async function holdsDevice(
  pid: number,
  match: (path: string) => boolean = isNvidiaDevicePath,
): Promise<boolean> {
  if ((await fdTargets(pid)).some(match)) return true;
  return (await mappedFiles(pid)).some(match);
}

export interface DiscoverOptions {
  /** A cgroup (full path or hierarchy-relative), an init pid (→ its cgroup), or an explicit list of pids. */
  cgroup?: string;
  /** An init pid's cgroups already read (the daemon reads them once per stage). */
  cgroups?: ProcessCgroups;
  initPid?: number;
  pids?: number[];
  backend: GpuBackend;
  /**
   * held: only processes holding an NVIDIA device, confirmed by the driver (for freeze).
   * any: ask the driver about every process (for thaw: a CHECKPOINTED process holds no device any more).
   */
  mode: "held" | "any";
  /** Device matcher; tests pass their fake device's path. */
  deviceMatch?: (path: string) => boolean;
  /** The stage's deadline; each driver query runs inside it. */
  deadline?: Deadline;
}

export interface Discovery {
  cgroupDir?: string;
  /** Every process looked at. */
  candidates: number[];
  /** The CUDA processes and the state the driver reported. */
  cuda: Array<{ pid: number; state: ProcessState }>;
  skipped: Array<{ pid: number; reason: string }>;
  /**
   * mode "held": processes holding an NVIDIA device that are stopped or traced ("stopped (state T)"), never
   * asked about (the driver blocks on them): a freeze must refuse while there are any. Always set by
   * discoverCudaProcesses; optional for stand-ins that know no such process.
   */
  stopped?: Array<{ pid: number; reason: string }>;
}

/** The processes of a container that hold CUDA state, without helpers or cuda-checkpoint itself. */
export async function discoverCudaProcesses(opts: DiscoverOptions): Promise<Discovery> {
  let cgroupDir: string | undefined;
  let candidates: number[];
  if (opts.pids?.length) candidates = [...opts.pids];
  else {
    if (opts.cgroups) cgroupDir = opts.cgroups.processesDir();
    else if (opts.cgroup) cgroupDir = resolveCgroupDir(opts.cgroup);
    else if (opts.initPid) cgroupDir = (await ProcessCgroups.ofPid(opts.initPid)).processesDir();
    else throw new Error("discovery needs a cgroup, an init pid or a list of pids");
    candidates = await processesOfCgroup(cgroupDir);
  }
  const skipped: Discovery["skipped"] = [];
  const stopped: NonNullable<Discovery["stopped"]> = [];
  const cuda: Discovery["cuda"] = [];
  await Promise.all(
    candidates.map(async (pid) => {
      if (pid === process.pid) return skipped.push({ pid, reason: "kybernate itself" });
      const stat = await readStat(pid);
      if (!stat) return skipped.push({ pid, reason: "gone" });
      if (stat.comm === "cuda-checkpoint") return skipped.push({ pid, reason: "cuda-checkpoint tool" });
      if (stat.state === "Z") return skipped.push({ pid, reason: "zombie" });
      if (opts.mode === "held" && !(await holdsDevice(pid, opts.deviceMatch)))
        return skipped.push({ pid, reason: "holds no NVIDIA device" });
      const halt = await haltOf(pid);
      if (halt) return (opts.mode === "held" ? stopped : skipped).push({ pid, reason: describeHalt(halt) });
      try {
        const state = await opts.backend.getState(pid, opts.deadline ? { deadline: opts.deadline } : {});
        cuda.push({ pid, state });
      } catch (err) {
        skipped.push({ pid, reason: `driver: ${(err as Error).message}` });
      }
    }),
  );
  cuda.sort((a, b) => a.pid - b.pid);
  skipped.sort((a, b) => a.pid - b.pid);
  stopped.sort((a, b) => a.pid - b.pid);
  return { ...(cgroupDir ? { cgroupDir } : {}), candidates, cuda, skipped, stopped };
}

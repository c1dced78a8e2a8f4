import { existsSync } from "node:fs";
import { readdir, readFile, readlink } from "node:fs/promises";
import { join } from "node:path";
import type { GpuBackend } from "./backend.js";
import { type ProcessState, stateName } from "./types.js";

const cgroupRoot = "/sys/fs/cgroup";
/** v1 hierarchies that every container is placed in (runc), most useful first. */
const v1Controllers = ["pids", "freezer", "memory", "cpu,cpuacct", "cpu", "systemd"];

/** The NVIDIA device nodes a CUDA process holds open or mapped (nvidiactl, nvidiaN, nvidia-uvm, caps). */
export const isNvidiaDevice = (path: string): boolean => /^\/dev\/nvidia/.test(path);

/**
 * Which cgroup directory an input names: an absolute path under /sys/fs/cgroup as is, otherwise a path
 * relative to a hierarchy root (as /proc/PID/cgroup shows it): the v2 hierarchy first, then v1 ones.
 */
export function resolveCgroupDir(cgroup: string): string {
  if (cgroup.startsWith(`${cgroupRoot}/`)) {
    if (existsSync(join(cgroup, "cgroup.procs"))) return cgroup;
    throw new Error(`cgroup ${cgroup} has no cgroup.procs: is the container still running?`);
  }
  const rel = cgroup.startsWith("/") ? cgroup : `/${cgroup}`;
  const roots = [cgroupRoot, join(cgroupRoot, "unified"), ...v1Controllers.map((c) => join(cgroupRoot, c))];
  for (const root of roots) {
    const dir = join(root, rel);
    if (existsSync(join(dir, "cgroup.procs"))) return dir;
  }
  throw new Error(
    `cgroup ${cgroup} not found under ${roots.join(", ")}: give the full /sys/fs/cgroup/... path`,
  );
}

/**
 * The cgroup of a process: its v2 path when that is not the root, else the most specific v1 path (hybrid
 * hosts keep containers in v1 hierarchies and leave v2 at "/"). The root cgroup is refused: it would be every
 * process on the machine.
 */
export async function cgroupOfPid(pid: number): Promise<string> {
  const entries = await readProcCgroups(pid);
  const v2 = entries.find((e) => e.controllers === "")?.path;
  if (v2 && v2 !== "/") {
    for (const root of [cgroupRoot, join(cgroupRoot, "unified")]) {
      const dir = join(root, v2);
      if (existsSync(join(dir, "cgroup.procs"))) return dir;
    }
  }
  for (const ctrl of v1Controllers) {
    const e = entries.find((x) => x.controllers.replace(/^name=/, "") === ctrl);
    if (e && e.path !== "/") {
      const dir = join(cgroupRoot, ctrl, e.path);
      if (existsSync(join(dir, "cgroup.procs"))) return dir;
    }
  }
  throw new Error(`pid ${pid} is in the root cgroup: give its pids with --pid instead of its cgroup`);
}

/** /proc/PID/cgroup: one entry per hierarchy, "N:controllers:path"; v2's has no controllers ("0::/path"). */
export async function readProcCgroups(pid: number): Promise<Array<{ controllers: string; path: string }>> {
  let text: string;
  try {
    text = await readFile(`/proc/${pid}/cgroup`, "utf8");
  } catch {
    throw new Error(`pid ${pid} not found (no /proc/${pid}/cgroup): is the container running?`);
  }
  return text
    .trim()
    .split("\n")
    .map((line) => {
      const a = line.indexOf(":");
      const b = line.indexOf(":", a + 1);
      return { controllers: line.slice(a + 1, b), path: line.slice(b + 1) };
    });
}

/** Every pid of a cgroup directory and of the cgroups below it. */
export async function processesOfCgroup(dir: string): Promise<number[]> {
  const pids = new Set<number>();
  const walk = async (d: string): Promise<void> => {
    const text = await readFile(join(d, "cgroup.procs"), "utf8").catch(() => "");
    for (const l of text.split("\n")) if (l.trim()) pids.add(Number(l));
    const subs = await readdir(d, { withFileTypes: true }).catch(() => []);
    await Promise.all(subs.filter((s) => s.isDirectory()).map((s) => walk(join(d, s.name))));
  };
  await walk(dir);
  return [...pids].sort((a, b) => a - b);
}

/** Whether the process has an open fd or a mapping on a device the matcher accepts. */
export async function holdsDevice(
  pid: number,
  match: (path: string) => boolean = isNvidiaDevice,
): Promise<boolean> {
  const fds = await readdir(`/proc/${pid}/fd`).catch(() => [] as string[]);
  const targets = await Promise.all(fds.map((fd) => readlink(`/proc/${pid}/fd/${fd}`).catch(() => "")));
  if (targets.some(match)) return true;
  const maps = await readFile(`/proc/${pid}/maps`, "utf8").catch(() => "");
  return maps.split("\n").some((l) => {
    const i = l.indexOf(" /");
    return i >= 0 && match(l.slice(i + 1).replace(/ \(deleted\)$/, ""));
  });
}

async function comm(pid: number): Promise<string> {
  return (await readFile(`/proc/${pid}/comm`, "utf8").catch(() => "")).trim();
}

async function isZombie(pid: number): Promise<boolean> {
  const stat = await readFile(`/proc/${pid}/stat`, "utf8").catch(() => "");
  return / Z /.test(stat.slice(stat.lastIndexOf(")")));
}

export interface DiscoverOptions {
  /** A cgroup (full path or hierarchy-relative), an init pid (→ its cgroup), or an explicit list of pids. */
  cgroup?: string;
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
  deadlineMs?: number;
}

export interface Discovery {
  cgroupDir?: string;
  /** Every process looked at. */
  candidates: number[];
  /** The CUDA processes and the state the driver reported. */
  cuda: Array<{ pid: number; state: ProcessState }>;
  skipped: Array<{ pid: number; reason: string }>;
}

/** The processes of a container that hold CUDA state, without helpers or cuda-checkpoint itself. */
export async function discoverCudaProcesses(opts: DiscoverOptions): Promise<Discovery> {
  let cgroupDir: string | undefined;
  let candidates: number[];
  if (opts.pids?.length) candidates = [...opts.pids];
  else {
    if (opts.cgroup) cgroupDir = resolveCgroupDir(opts.cgroup);
    else if (opts.initPid) cgroupDir = await cgroupOfPid(opts.initPid);
    else throw new Error("discovery needs a cgroup, an init pid or a list of pids");
    candidates = await processesOfCgroup(cgroupDir);
  }
  const skipped: Discovery["skipped"] = [];
  const cuda: Discovery["cuda"] = [];
  await Promise.all(
    candidates.map(async (pid) => {
      if (pid === process.pid) return skipped.push({ pid, reason: "kybernate itself" });
      const name = await comm(pid);
      if (!name) return skipped.push({ pid, reason: "gone" });
      if (name === "cuda-checkpoint") return skipped.push({ pid, reason: "cuda-checkpoint tool" });
      if (await isZombie(pid)) return skipped.push({ pid, reason: "zombie" });
      if (opts.mode === "held" && !(await holdsDevice(pid, opts.deviceMatch)))
        return skipped.push({ pid, reason: "holds no NVIDIA device" });
      try {
        const state = await opts.backend.getState(pid, { deadlineMs: opts.deadlineMs ?? 10_000 });
        cuda.push({ pid, state });
      } catch (err) {
        skipped.push({ pid, reason: `driver: ${(err as Error).message}` });
      }
    }),
  );
  cuda.sort((a, b) => a.pid - b.pid);
  skipped.sort((a, b) => a.pid - b.pid);
  return { ...(cgroupDir ? { cgroupDir } : {}), candidates, cuda, skipped };
}

export function describeDiscovery(d: Discovery): string {
  return d.cuda.map((c) => `${c.pid}:${stateName(c.state)}`).join(" ");
}

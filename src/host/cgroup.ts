// Where a container's processes sit in the cgroup hierarchies, read once from /proc/PID/cgroup: the directory
// that lists its processes, its freezer and its memory controller.
import { existsSync } from "node:fs";
import { readdir, readFile, writeFile } from "node:fs/promises";
import { dirname, join } from "node:path";
import { Freezer } from "./freezer.js";
import { type CgroupEntry, PROC_ROOT, readCgroups } from "./proc.js";

export const CGROUP_ROOT = "/sys/fs/cgroup";

/** v1 hierarchies that runc places every container in, most useful first. */
const V1_CONTROLLERS = ["pids", "freezer", "memory", "cpu,cpuacct", "cpu", "systemd"];

/**
 * Which cgroup directory an input names: an absolute path under the cgroup root as is, otherwise a path
 * relative to a hierarchy root (as /proc/PID/cgroup shows it): the v2 hierarchy first, then v1 ones.
 */
export function resolveCgroupDir(cgroup: string, root = CGROUP_ROOT): string {
  if (cgroup.startsWith(`${root}/`)) {
    if (existsSync(join(cgroup, "cgroup.procs"))) return cgroup;
    throw new Error(`cgroup ${cgroup} has no cgroup.procs: is the container still running?`);
  }
  const rel = cgroup.startsWith("/") ? cgroup : `/${cgroup}`;
  const roots = [root, join(root, "unified"), ...V1_CONTROLLERS.map((c) => join(root, c))];
  for (const base of roots) {
    const dir = join(base, rel);
    if (existsSync(join(dir, "cgroup.procs"))) return dir;
  }
  throw new Error(`cgroup ${cgroup} not found under ${roots.join(", ")}: give the full ${root}/... path`);
}

/** Every pid of a cgroup directory and of the cgroups below it. */
export async function processesOfCgroup(dir: string): Promise<number[]> {
  const pids = new Set<number>();
  const walk = async (d: string): Promise<void> => {
    const text = await readFile(join(d, "cgroup.procs"), "utf8").catch(() => "");
    for (const line of text.split("\n")) if (line.trim()) pids.add(Number(line));
    const subs = await readdir(d, { withFileTypes: true }).catch(() => []);
    await Promise.all(subs.filter((s) => s.isDirectory()).map((s) => walk(join(d, s.name))));
  };
  await walk(dir);
  return [...pids].sort((a, b) => a - b);
}

/** The cgroups of one process (a container's init), from one read of /proc/PID/cgroup. */
export class ProcessCgroups {
  private constructor(
    readonly pid: number,
    readonly entries: readonly CgroupEntry[],
    private readonly root: string,
  ) {}

  static async ofPid(pid: number, roots: { proc?: string; cgroup?: string } = {}): Promise<ProcessCgroups> {
    return new ProcessCgroups(
      pid,
      await readCgroups(pid, roots.proc ?? PROC_ROOT),
      roots.cgroup ?? CGROUP_ROOT,
    );
  }

  private v1(controller: string): CgroupEntry | undefined {
    return this.entries.find((e) =>
      e.controllers
        .replace(/^name=/, "")
        .split(",")
        .includes(controller),
    );
  }

  private v2(): CgroupEntry | undefined {
    return this.entries.find((e) => e.controllers === "");
  }

  /**
   * The directory whose cgroup.procs lists the process's cgroup: v2 when that is not the root, else the most
   * specific v1 one (hybrid hosts keep containers in v1 and leave v2 at "/"). The root cgroup is refused: it
   * would be every process on the machine.
   */
  processesDir(): string {
    const v2 = this.v2()?.path;
    if (v2 && v2 !== "/") {
      for (const base of [this.root, join(this.root, "unified")]) {
        const dir = join(base, v2);
        if (existsSync(join(dir, "cgroup.procs"))) return dir;
      }
    }
    for (const controller of V1_CONTROLLERS) {
      const e = this.entries.find((x) => x.controllers.replace(/^name=/, "") === controller);
      if (e && e.path !== "/") {
        const dir = join(this.root, controller, e.path);
        if (existsSync(join(dir, "cgroup.procs"))) return dir;
      }
    }
    throw new Error(`pid ${this.pid} is in the root cgroup: give its pids with --pid instead of its cgroup`);
  }

  /** runc's freezer for the process: v1's freezer hierarchy when the host has one (hybrid hosts), else v2's. */
  freezer(): Freezer {
    const v1 = this.v1("freezer");
    if (v1 && existsSync(join(this.root, "freezer", v1.path, "freezer.state")))
      return Freezer.v1(join(this.root, "freezer", v1.path));
    const v2 = this.v2();
    if (v2 && v2.path !== "/" && existsSync(join(this.root, v2.path, "cgroup.freeze")))
      return Freezer.v2(join(this.root, v2.path));
    throw new Error(
      `no cgroup freezer found for process ${this.pid} (neither v1 freezer.state nor v2 cgroup.freeze)`,
    );
  }

  /**
   * The process's memory cgroup and each one above it, up to (not including) the hierarchy's root: the staged
   * VRAM is charged to all of them, so each limit on the way counts (the kubelet's pod cgroup included).
   */
  async memoryLevels(): Promise<MemoryLevel[]> {
    const v2 = this.v2();
    const v1 = this.v1("memory");
    const [base, path] =
      v2 && v2.path !== "/" && existsSync(join(this.root, v2.path, "memory.max"))
        ? [this.root, v2.path]
        : v1 && v1.path !== "/"
          ? [join(this.root, "memory"), v1.path]
          : [undefined, undefined];
    if (!base || !path) return [];
    const levels: MemoryLevel[] = [];
    for (let rel = path; rel !== "/" && rel !== "" && rel !== "."; rel = dirname(rel)) {
      const level = await readMemoryLevel(join(base, rel));
      if (level) levels.push(level);
    }
    return levels;
  }
}

/** One memory limit file of a cgroup and its value; `bytes` undefined when it is unlimited. */
export interface MemoryLimitFile {
  file: string;
  text: string;
  bytes?: number;
}

/**
 * One memory cgroup on the way from a container to the root: what is charged to it, what of that the kernel
 * cannot reclaim (anonymous and shared memory: lowering a v2 memory.max below it OOM-kills), and its limits.
 */
export interface MemoryLevel {
  dir: string;
  version: 1 | 2;
  usage: number;
  unreclaimable: number;
  /**
   * Anonymous plus shared memory (tmpfs, memfd): what CRIU dumps into page images (it leaves clean file pages
   * out, which usage counts). Undefined when memory.stat does not say.
   */
  dumpable?: number;
  limits: MemoryLimitFile[];
}

// Raised in this order (v1 refuses a memory limit above memsw), lowered in the reverse one.
const V2_LIMITS = ["memory.max", "memory.high"];
const V1_LIMITS = ["memory.memsw.limit_in_bytes", "memory.limit_in_bytes"];

/** The memory cgroup at `dir` (v1 or v2, by its files), or undefined when it is gone. */
export async function readMemoryLevel(dir: string): Promise<MemoryLevel | undefined> {
  const read = (file: string) =>
    readFile(join(dir, file), "utf8").then(
      (t) => t.trim(),
      () => undefined,
    );
  const v2 = existsSync(join(dir, "memory.max"));
  const usageText = await read(v2 ? "memory.current" : "memory.usage_in_bytes");
  if (usageText === undefined) return undefined;
  const usage = Number(usageText);
  const stat = new Map(
    ((await read("memory.stat")) ?? "").split("\n").map((line) => {
      const [key = "", value = "0"] = line.split(" ");
      return [key, Number(value)] as const;
    }),
  );
  const reclaimable = v2
    ? (stat.get("file") ?? 0) - (stat.get("shmem") ?? 0)
    : (stat.get("total_cache") ?? stat.get("cache") ?? 0) -
      (stat.get("total_shmem") ?? stat.get("shmem") ?? 0);
  const limits: MemoryLimitFile[] = [];
  for (const file of v2 ? V2_LIMITS : V1_LIMITS) {
    const text = await read(file);
    if (text === undefined) continue;
    const bytes = Number(text);
    // v2 says "max"; v1 says a number near 2^63 for "unlimited".
    limits.push(
      text !== "max" && Number.isFinite(bytes) && bytes < 2 ** 62 ? { file, text, bytes } : { file, text },
    );
  }
  // v2 names them anon and shmem; v1 rss and shmem, with total_* including child cgroups.
  const anon = stat.get("anon") ?? stat.get("total_rss") ?? stat.get("rss");
  const dumpable =
    anon === undefined ? undefined : anon + (stat.get("shmem") ?? stat.get("total_shmem") ?? 0);
  return {
    dir,
    version: v2 ? 2 : 1,
    usage,
    unreclaimable: Math.max(0, usage - reclaimable),
    ...(dumpable !== undefined ? { dumpable } : {}),
    limits,
  };
}

export async function writeMemoryLimit(dir: string, file: string, text: string): Promise<void> {
  if (!dir.startsWith(`${CGROUP_ROOT}/`) || !/^memory\.[a-z_.]+$/.test(file))
    throw new Error(`not a memory limit of a cgroup: ${join(dir, file)}`);
  await writeFile(join(dir, file), text);
}

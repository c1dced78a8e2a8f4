// The kernel's per-process files under /proc: one parser for each file, and nowhere else in kybernate.
import { readdir, readFile, readlink, stat } from "node:fs/promises";
import { join } from "node:path";

/** Where the host's /proc is; tests give a directory of their own. */
export const PROC_ROOT = "/proc";

const procFile = (pid: number, file: string, root = PROC_ROOT): string => join(root, String(pid), file);

/** /proc/PID/stat, the fields kybernate reads. */
export interface ProcStat {
  pid: number;
  comm: string;
  /** R, S, D, T (stopped), t (traced stop), Z, X, … */
  state: string;
  ppid: number;
  /** Clock ticks after boot; with the pid, names a process across pid reuse. */
  startTime: string;
}

export function parseStat(text: string): ProcStat | undefined {
  // The command name sits in parentheses and may hold spaces or ")"; the fields after the last ")" are fixed.
  const open = text.indexOf("(");
  const close = text.lastIndexOf(")");
  if (open < 0 || close < open) return undefined;
  const fields = text.slice(close + 2).split(" ");
  return {
    pid: Number(text.slice(0, open).trim()),
    comm: text.slice(open + 1, close),
    state: fields[0] ?? "",
    ppid: Number(fields[1] ?? 0),
    startTime: fields[19] ?? "",
  };
}

export async function readStat(pid: number, root = PROC_ROOT): Promise<ProcStat | undefined> {
  const text = await readFile(procFile(pid, "stat", root), "utf8").catch(() => undefined);
  return text === undefined ? undefined : parseStat(text);
}

/** /proc/PID/status, the fields kybernate reads. */
export interface ProcStatus {
  /** The state letter ("T" stopped, "t" tracing stop, …). */
  state: string;
  /** The ptrace tracer, 0 when none. */
  tracerPid: number;
  vmRssBytes?: number;
  /** The pid in each pid namespace, outermost first (the last is the pid the process sees). */
  nsPids: number[];
}

export function parseStatus(text: string): ProcStatus {
  const field = (name: string): string | undefined =>
    new RegExp(`^${name}:\\s*(.*)$`, "m").exec(text)?.[1]?.trim();
  const rss = /^(\d+)\s+kB$/.exec(field("VmRSS") ?? "")?.[1];
  return {
    state: (field("State") ?? "").slice(0, 1),
    tracerPid: Number(field("TracerPid") ?? 0) || 0,
    ...(rss !== undefined ? { vmRssBytes: Number(rss) * 1024 } : {}),
    nsPids: (field("NSpid") ?? "").split(/\s+/).filter(Boolean).map(Number),
  };
}

export async function readStatus(pid: number, root = PROC_ROOT): Promise<ProcStatus | undefined> {
  const text = await readFile(procFile(pid, "status", root), "utf8").catch(() => undefined);
  return text === undefined ? undefined : parseStatus(text);
}

/** /proc/PID/cmdline: the arguments, empty when the process is gone (or a kernel thread). */
export async function readCmdline(pid: number, root = PROC_ROOT): Promise<string[]> {
  const text = await readFile(procFile(pid, "cmdline", root), "utf8").catch(() => "");
  return text.split("\0").filter((arg, i, all) => arg !== "" || i < all.length - 1);
}

/**
 * /proc/PID/environ: the environment the process started with (what it exec'ed with; a later setenv in the
 * process is not seen); of a name defined twice, the first, which is what glibc's getenv returns. Undefined when unreadable (gone,
 * or another user's without root).
 */
export async function readEnviron(pid: number, root = PROC_ROOT): Promise<Map<string, string> | undefined> {
  const text = await readFile(procFile(pid, "environ", root), "utf8").catch(() => undefined);
  if (text === undefined) return undefined;
  return parseEnviron(text);
}

export function parseEnviron(text: string): Map<string, string> {
  const env = new Map<string, string>();
  for (const entry of text.split("\0")) {
    const eq = entry.indexOf("=");
    if (eq > 0 && !env.has(entry.slice(0, eq))) env.set(entry.slice(0, eq), entry.slice(eq + 1));
  }
  return env;
}

/** /proc/PID/comm: the command name, "" when the process is gone. */
export async function readComm(pid: number, root = PROC_ROOT): Promise<string> {
  return (await readFile(procFile(pid, "comm", root), "utf8").catch(() => "")).trim();
}

/** One line of /proc/PID/cgroup, "N:controllers:path"; v2's has no controllers ("0::/path"). */
export interface CgroupEntry {
  controllers: string;
  path: string;
}

export function parseCgroups(text: string): CgroupEntry[] {
  return text
    .trim()
    .split("\n")
    .filter(Boolean)
    .map((line) => {
      const a = line.indexOf(":");
      const b = line.indexOf(":", a + 1);
      return { controllers: line.slice(a + 1, b), path: line.slice(b + 1) };
    });
}

/** Throws, naming the pid, when the process does not exist. */
export async function readCgroups(pid: number, root = PROC_ROOT): Promise<CgroupEntry[]> {
  let text: string;
  try {
    text = await readFile(procFile(pid, "cgroup", root), "utf8");
  } catch {
    throw new Error(`pid ${pid} not found (no ${procFile(pid, "cgroup", root)}): is the container running?`);
  }
  return parseCgroups(text);
}

/** An open file descriptor of a process: its number and the path it reaches through /proc. */
export interface OpenFd {
  fd: string;
  /** /proc/PID/fd/N: opening or stat'ing it reaches the file itself, whatever mount namespace it lives in. */
  procPath: string;
}

/** The process's fds; empty when it is gone or unreadable. */
export async function openFds(pid: number, root = PROC_ROOT): Promise<OpenFd[]> {
  const dir = procFile(pid, "fd", root);
  const fds = await readdir(dir).catch(() => [] as string[]);
  return fds.map((fd) => ({ fd, procPath: join(dir, fd) }));
}

/** Whether /proc/PID/fd could be read at all (a process of another user or a gone one: no). */
export async function fdsReadable(pid: number, root = PROC_ROOT): Promise<boolean> {
  return readdir(procFile(pid, "fd", root)).then(
    () => true,
    () => false,
  );
}

/** Where each fd points, as the process sees it (the readlink of /proc/PID/fd/N). */
export async function fdTargets(pid: number, root = PROC_ROOT): Promise<string[]> {
  const fds = await openFds(pid, root);
  return Promise.all(fds.map((f) => readlink(f.procPath).catch(() => "")));
}

/** The character devices the process holds open, as dev_t numbers. */
export async function openCharDevices(pid: number, root = PROC_ROOT): Promise<number[]> {
  const fds = await openFds(pid, root);
  const stats = await Promise.all(fds.map((f) => stat(f.procPath).catch(() => undefined)));
  return stats.flatMap((s) => (s?.isCharacterDevice() ? [s.rdev] : []));
}

/** /proc/PID/maps as text; "" when the process is gone or unreadable. */
export async function readMaps(pid: number, root = PROC_ROOT): Promise<string> {
  return readFile(procFile(pid, "maps", root), "utf8").catch(() => "");
}

/** The files mapped into the process (/proc/PID/maps), without " (deleted)". */
export async function mappedFiles(pid: number, root = PROC_ROOT): Promise<string[]> {
  const maps = await readMaps(pid, root);
  return maps.split("\n").flatMap((line) => {
    const i = line.indexOf(" /");
    return i < 0 ? [] : [line.slice(i + 1).replace(/ \(deleted\)$/, "")];
  });
}

/** The mapped files whose mapping path has been unlinked (/proc/PID/maps says " (deleted)"). */
export async function deletedMappings(pid: number, root = PROC_ROOT): Promise<string[]> {
  const maps = await readMaps(pid, root);
  return maps.split("\n").flatMap((line) => {
    const i = line.indexOf(" /");
    return i >= 0 && line.endsWith(" (deleted)") ? [line.slice(i + 1, -" (deleted)".length)] : [];
  });
}

/** /proc/meminfo's MemAvailable, in bytes. */
export async function memAvailableBytes(root = PROC_ROOT): Promise<number> {
  const path = join(root, "meminfo");
  const text = await readFile(path, "utf8");
  const m = /^MemAvailable:\s+(\d+)\s+kB/m.exec(text);
  if (!m) throw new Error(`${path} has no MemAvailable line (kernel older than 3.14?)`);
  return Number(m[1]) * 1024;
}

/** /proc/sys/kernel/osrelease, e.g. "6.18.0". */
export async function kernelRelease(root = PROC_ROOT): Promise<string> {
  return (await readFile(join(root, "sys", "kernel", "osrelease"), "utf8").catch(() => "")).trim();
}

/** The compressed kernel config the kernel exposes (CONFIG_IKCONFIG_PROC), when it does. */
export const procKernelConfig = (root = PROC_ROOT): string => join(root, "config.gz");

// ---- a process's identity and run state, from the files above ----

/** A process as the kernel names it: pid plus start time, so a reused pid is never mistaken for it. */
export interface ProcessIdentity {
  pid: number;
  startTime: string;
}

/** The living process with this pid (zombies and dead ones are gone). */
export async function identify(pid: number, root = PROC_ROOT): Promise<ProcessIdentity | undefined> {
  const s = await readStat(pid, root);
  if (!s || s.state === "Z" || s.state === "X") return undefined;
  return { pid, startTime: s.startTime };
}

export async function isSameProcess(identity: ProcessIdentity, root = PROC_ROOT): Promise<boolean> {
  const now = await identify(identity.pid, root);
  return now !== undefined && now.startTime === identity.startTime;
}

/** The pids of the list that still live. */
export async function livingPids(pids: readonly number[], root = PROC_ROOT): Promise<number[]> {
  const alive = await Promise.all(pids.map(async (pid) => ((await identify(pid, root)) ? pid : 0)));
  return alive.filter((pid) => pid !== 0);
}

/** Why a process cannot run on: stopped by a signal (job control), or held by a tracer. */
export interface Halt {
  pid: number;
  /** The state letter: "T" stopped, "t" tracing stop; a running traced process keeps its own ("S", "R"). */
  state: string;
  /** The tracer, 0 when none. */
  tracerPid: number;
}

/**
 * The process's halt, or undefined when it can run (or is gone). On the H200 even the driver's
 * cuCheckpointProcessGetState blocks until a stopped process continues, so callers ask this first.
 */
export async function haltOf(pid: number, root = PROC_ROOT): Promise<Halt | undefined> {
  const s = await readStatus(pid, root);
  if (!s) return undefined;
  if (s.state === "T" || s.state === "t" || s.tracerPid !== 0)
    return { pid, state: s.state, tracerPid: s.tracerPid };
  return undefined;
}

/** "stopped (state T)", "traced by pid 812 (state t)": for reasons and errors. */
export function describeHalt(h: Halt): string {
  return h.tracerPid !== 0 ? `traced by pid ${h.tracerPid} (state ${h.state})` : `stopped (state ${h.state})`;
}

/** Pid of the process ptrace-attached to `pid` (0 when none), or undefined when the process is gone. */
export async function tracerOf(pid: number, root = PROC_ROOT): Promise<number | undefined> {
  return (await readStatus(pid, root))?.tracerPid;
}

/** The parent of a process, or undefined when it is gone or its parent is init. */
export async function parentOf(pid: number, root = PROC_ROOT): Promise<number | undefined> {
  const ppid = (await readStat(pid, root))?.ppid ?? 0;
  return ppid > 1 ? ppid : undefined;
}

/** Resident memory in bytes, or undefined when unreadable. */
export async function residentBytes(pid: number, root = PROC_ROOT): Promise<number | undefined> {
  return (await readStatus(pid, root))?.vmRssBytes;
}

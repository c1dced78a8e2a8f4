import { readFile } from "node:fs/promises";

/** A process as the kernel names it: pid plus start time, so a reused pid is never mistaken for it. */
export interface ProcessIdentity {
  pid: number;
  startTime: string;
}

export async function identify(pid: number): Promise<ProcessIdentity | undefined> {
  const stat = await readFile(`/proc/${pid}/stat`, "utf8").catch(() => undefined);
  if (!stat) return undefined;
  // Fields after the command name (which may hold spaces) start at ")"; starttime is field 22.
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  if (fields[0] === "Z" || fields[0] === "X") return undefined;
  return { pid, startTime: fields[19] ?? "" };
}

export async function isSameProcess(identity: ProcessIdentity): Promise<boolean> {
  const now = await identify(identity.pid);
  return now !== undefined && now.startTime === identity.startTime;
}

/** Pid of the process ptrace-attached to `pid` (0 when none), or undefined when the process is gone. */
export async function tracerOf(pid: number): Promise<number | undefined> {
  const status = await readFile(`/proc/${pid}/status`, "utf8").catch(() => undefined);
  if (!status) return undefined;
  const match = /^TracerPid:\s+(\d+)/m.exec(status);
  return match ? Number(match[1]) : 0;
}

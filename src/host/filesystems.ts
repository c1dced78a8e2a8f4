// Which filesystem holds a path, and how much room it has: /proc/self/mountinfo for the mount, statfs for the room.
import { type BigIntStats, statfs } from "node:fs";
import { readFile, realpath, stat } from "node:fs/promises";
import { dirname, join } from "node:path";
import { promisify } from "node:util";
import { PROC_ROOT } from "./proc.js";

const statfsAsync = promisify(statfs);

export interface Filesystem {
  /** st_dev of the path: two paths with the same dev are on one filesystem, so a rename between them is free. */
  dev: bigint;
  /** The mount point that holds the path (the longest one of that device above it). */
  mountPoint: string;
  /** What is mounted there (a device, "tmpfs", …). */
  source: string;
  type: string;
  /** Bytes an unprivileged writer may still use (f_bavail): what a checkpoint can count on. */
  freeBytes: number;
  sizeBytes: number;
}

interface MountLine {
  major: number;
  minor: number;
  mountPoint: string;
  type: string;
  source: string;
}

/** /proc/self/mountinfo: "36 35 98:0 /mnt1 /mnt/parent rw,noatime master:1 - ext3 /dev/root rw,errors=continue". */
export function parseMountinfo(text: string): MountLine[] {
  const lines: MountLine[] = [];
  for (const line of text.split("\n")) {
    const [left, right] = line.split(" - ");
    if (!left || !right) continue;
    const fields = left.split(" ");
    const [major, minor] = (fields[2] ?? "").split(":").map(Number);
    const mountPoint = unescapeMount(fields[4] ?? "");
    const [type = "", source = ""] = right.split(" ");
    if (major === undefined || minor === undefined || !mountPoint) continue;
    lines.push({ major, minor, mountPoint, type, source: unescapeMount(source) });
  }
  return lines;
}

// The kernel writes space, tab, newline and backslash in mount paths as octal escapes.
const unescapeMount = (s: string): string =>
  s.replace(/\\([0-7]{3})/g, (_, octal: string) => String.fromCharCode(Number.parseInt(octal, 8)));

/** Linux's dev_t encoding (glibc's gnu_dev_major/minor). */
function majorMinor(dev: bigint): { major: number; minor: number } {
  const major = Number(((dev >> 8n) & 0xfffn) | ((dev >> 32n) & ~0xfffn));
  const minor = Number((dev & 0xffn) | ((dev >> 12n) & ~0xffn));
  return { major, minor };
}

const within = (path: string, mountPoint: string): boolean =>
  mountPoint === "/" || path === mountPoint || path.startsWith(`${mountPoint}/`);

/** The nearest existing directory at or above `path` (a store or archive folder may not exist yet). */
async function existingAncestor(path: string): Promise<string> {
  let dir = path;
  for (;;) {
    try {
      return await realpath(dir);
    } catch {
      const parent = dirname(dir);
      if (parent === dir) return "/";
      dir = parent;
    }
  }
}

/** The filesystem of `path` (or of its nearest existing ancestor). */
export async function filesystemOf(path: string, procRoot = PROC_ROOT): Promise<Filesystem> {
  const real = await existingAncestor(path);
  const st = (await stat(real, { bigint: true })) as BigIntStats;
  const room = await statfsAsync(real);
  const { major, minor } = majorMinor(st.dev);
  const mounts = parseMountinfo(await readFile(join(procRoot, "self", "mountinfo"), "utf8").catch(() => ""))
    .filter((m) => m.major === major && m.minor === minor && within(real, m.mountPoint))
    .sort((a, b) => b.mountPoint.length - a.mountPoint.length);
  const mount = mounts[0];
  return {
    dev: st.dev,
    mountPoint: mount?.mountPoint ?? real,
    source: mount?.source ?? `device ${major}:${minor}`,
    type: mount?.type ?? "unknown",
    freeBytes: Number(room.bavail) * Number(room.bsize),
    sizeBytes: Number(room.blocks) * Number(room.bsize),
  };
}

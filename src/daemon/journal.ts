import { mkdir, open, readdir, readFile, rename, rm } from "node:fs/promises";
import { join } from "node:path";
import type { TaskRef } from "../containerd/tasks.js";
import type { DeviceMap } from "../gpu/types.js";

/** One GPU state change in flight, on disk before the driver is touched. */
export interface JournalEntry {
  id: string;
  containerId: string;
  action: "pre-dump" | "post-resume" | "thaw-after-resume";
  /** Host pids the operation touches; recovery brings each still-living one back to RUNNING. */
  pids: number[];
  /** Host pid of the container's init, to find its cgroup again after a daemon restart. */
  initPid: number;
  /** A restore's UUID device map: recovery must put the processes on the same GPUs the restore chose. */
  deviceMap?: DeviceMap;
  /** The container's task in containerd, to resume it there when containerd's own resume was lost. */
  task?: TaskRef;
  /** When kybernate resumed the task itself (containerd had lost its resume), for the record. */
  resumedTaskAt?: string;
  startedAt: string;
}

/**
 * A directory of in-flight operations. Each entry is written (and fsynced) before acting and removed after,
 * so whatever a crash interrupts is still listed when the daemon starts again.
 */
export class Journal {
  constructor(private readonly dir: string) {}

  async open(): Promise<void> {
    await mkdir(this.dir, { recursive: true, mode: 0o700 });
  }

  /** Writes (or replaces, by id) an entry, durably. */
  async record(entry: JournalEntry): Promise<void> {
    const final = join(this.dir, `${entry.id}.json`);
    const temporary = `${final}.tmp`;
    const file = await open(temporary, "w", 0o600);
    try {
      await file.writeFile(JSON.stringify(entry));
      await file.sync();
    } finally {
      await file.close();
    }
    await rename(temporary, final);
  }

  async complete(id: string): Promise<void> {
    await rm(join(this.dir, `${id}.json`), { force: true });
  }

  async pending(): Promise<JournalEntry[]> {
    const names = (await readdir(this.dir)).filter((name) => name.endsWith(".json"));
    const entries: JournalEntry[] = [];
    for (const name of names) {
      try {
        entries.push(JSON.parse(await readFile(join(this.dir, name), "utf8")) as JournalEntry);
      } catch {
        // A torn write never reached rename(); only complete .json files are entries.
      }
    }
    return entries;
  }
}

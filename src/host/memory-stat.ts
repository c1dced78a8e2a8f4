// A memory cgroup's memory.stat, for what CRIU will write of a container's memory.
import { readFile } from "node:fs/promises";
import { join } from "node:path";

/**
 * Anonymous plus shared memory (tmpfs, memfd) charged to the cgroup: what CRIU dumps into page images. File
 * cache is left out (CRIU does not dump clean file pages), which memory.current would count. Undefined when the
 * file cannot be read. `dir` is a MemoryUse's dir (v2 cgroup, or the v1 memory controller's).
 */
export async function dumpableBytes(dir: string): Promise<number | undefined> {
  const text = await readFile(join(dir, "memory.stat"), "utf8").catch(() => undefined);
  if (text === undefined) return undefined;
  const stat = new Map<string, number>();
  for (const line of text.split("\n")) {
    const [key, value] = line.split(" ");
    if (key && value !== undefined) stat.set(key, Number(value));
  }
  // v2 names them anon and shmem; v1 rss and shmem, with total_* including child cgroups.
  const anon = stat.get("anon") ?? stat.get("total_rss") ?? stat.get("rss");
  const shmem = stat.get("shmem") ?? stat.get("total_shmem") ?? 0;
  return anon === undefined ? undefined : anon + shmem;
}

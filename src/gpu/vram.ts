import { readFile } from "node:fs/promises";

/**
 * Resident memory of a process in bytes, or undefined when unreadable. The driver API has no per-process VRAM
 * query; a checkpoint moves the process's device memory into its own host memory, so the VmRSS growth across
 * lock+checkpoint (and the drop across restore+unlock) estimates the VRAM moved. It also counts unrelated
 * host allocations in that window, so it is an estimate, reported as such.
 */
export async function residentBytes(pid: number): Promise<number | undefined> {
  const text = await readFile(`/proc/${pid}/status`, "utf8").catch(() => "");
  const m = /^VmRSS:\s+(\d+)\s+kB/m.exec(text);
  return m ? Number(m[1]) * 1024 : undefined;
}

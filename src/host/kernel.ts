import { readFile } from "node:fs/promises";
import { gunzipSync } from "node:zlib";
import { kernelRelease, PROC_ROOT, procKernelConfig } from "./proc.js";

/** Where a kernel's build config is found: the running kernel's own copy, then the distribution's. */
export async function kernelConfigCandidates(procRoot = PROC_ROOT): Promise<string[]> {
  return [procKernelConfig(procRoot), `/boot/config-${await kernelRelease(procRoot)}`];
}

/** The kernel's build config (CONFIG_…=y lines), from `path` or the first candidate that exists. */
export async function kernelConfigText(path?: string): Promise<{ text: string; source: string } | undefined> {
  for (const candidate of path ? [path] : await kernelConfigCandidates()) {
    const bytes = await readFile(candidate).catch(() => undefined);
    if (!bytes) continue;
    const text = candidate.endsWith(".gz") ? gunzipSync(bytes).toString("utf8") : bytes.toString("utf8");
    return { text, source: candidate };
  }
  return undefined;
}

import { mkdir, readdir, readFile, rename, rm, stat, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { containerIdProblem } from "../base/container-id.js";
import type { DeviceMap } from "../gpu/types.js";

/**
 * The device map a restore was planned with, on disk from pre-restore until the restored processes run on their
 * GPUs. A daemon that dies between the two stages loses its in-memory plan; the repair after its restart finds
 * the processes CHECKPOINTED and must put them on the GPUs the container was given, not back on the old ones.
 */
export class PlanStore {
  constructor(private readonly dir: string) {}

  private path(containerId: string): string {
    const problem = containerIdProblem(containerId);
    if (problem) throw new Error(`no restore plan can be kept: ${problem}`);
    return join(this.dir, `${containerId}.json`);
  }

  async save(containerId: string, deviceMap: DeviceMap): Promise<void> {
    await mkdir(this.dir, { recursive: true, mode: 0o700 });
    const path = this.path(containerId);
    await writeFile(`${path}.tmp`, `${JSON.stringify({ deviceMap })}\n`, { mode: 0o600 });
    await rename(`${path}.tmp`, path);
  }

  /** The saved map; undefined when none was saved (or the file is unreadable: then the original GPUs). */
  async load(containerId: string): Promise<DeviceMap | undefined> {
    try {
      const value = JSON.parse(await readFile(this.path(containerId), "utf8")) as { deviceMap?: unknown };
      const map = value.deviceMap;
      if (!Array.isArray(map)) return undefined;
      return map.every((p) => typeof p?.from === "string" && typeof p?.to === "string")
        ? (map as DeviceMap)
        : undefined;
    } catch {
      return undefined;
    }
  }

  async remove(containerId: string): Promise<void> {
    await rm(this.path(containerId), { force: true });
  }

  /**
   * After a resynchronize: plans of containers that no longer exist (removed while kybernate was away). A plan
   * written after `asOf` belongs to a container created since, which the synchronize could not list.
   */
  async prune(alive: ReadonlySet<string>, asOf: Date): Promise<void> {
    const names = await readdir(this.dir).catch(() => [] as string[]);
    for (const name of names) {
      const id = name.replace(/\.json(\.tmp)?$/, "");
      const path = join(this.dir, name);
      const mtime = (await stat(path).catch(() => undefined))?.mtimeMs ?? 0;
      if (!alive.has(id) && mtime < asOf.getTime()) await rm(path, { force: true });
    }
  }
}

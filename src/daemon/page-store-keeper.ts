import { readdir, stat } from "node:fs/promises";
import { join } from "node:path";
import { delay } from "../base/deadline.js";
import type { Logger } from "../base/log.js";
import { archiveCheckpointId, type PageStore } from "../store/page-store.js";

export interface KeeperOptions {
  /** Checkpoints kept per container (`--page-store-keep`). */
  keep: number;
  /** Folders where CRI archives land (the kubelet's), searched for a new checkpoint's archive. */
  archiveDirs: readonly string[];
  log: Logger;
  /** How often the store is collected (archives gone); 0: only after checkpoints and when asked. */
  collectEveryMs?: number;
  /** How long to look for a checkpoint's archive after its resume (containerd still tars it then). */
  archiveSearchMs?: number;
  archivePollMs?: number;
}

/**
 * The page store as the daemon runs it: checkpoints being stored now (never collected), the archive each
 * checkpoint ended in (found in the archive folders, or told by `kybernate checkpoint`), and collection after
 * each checkpoint and periodically.
 */
export class PageStoreKeeper {
  readonly inFlight = new Set<string>();
  private timer: NodeJS.Timeout | undefined;
  private closed = false;
  private readonly searches = new Set<Promise<void>>();

  constructor(
    readonly store: PageStore,
    readonly options: KeeperOptions,
  ) {}

  get keep(): number {
    return this.options.keep;
  }

  start(): void {
    const every = this.options.collectEveryMs ?? 10 * 60 * 1000;
    if (every <= 0) return;
    const tick = () => {
      this.timer = setTimeout(() => void this.collect().finally(() => !this.closed && tick()), every);
      this.timer.unref();
    };
    tick();
  }

  async collect(keep = this.options.keep): Promise<Awaited<ReturnType<PageStore["collect"]>>> {
    const result = await this.store.collect({ keep, inFlight: this.inFlight });
    if (result.remove.length || result.protected.length)
      this.options.log.info(
        { removed: result.remove, protected: result.protected, freedBytes: result.freedBytes },
        "page store collected",
      );
    return result;
  }

  /** After a checkpoint's resume: look for its archive (containerd writes it now), then collect. */
  afterCheckpoint(checkpointId: string, sinceMs: number): void {
    const search = this.findArchive(checkpointId, sinceMs)
      .then(() => this.collect())
      .then(() => undefined)
      .catch((error: Error) =>
        this.options.log.warn({ err: error, checkpointId }, "page store upkeep failed"),
      )
      .finally(() => this.searches.delete(search));
    this.searches.add(search);
  }

  private async findArchive(checkpointId: string, sinceMs: number): Promise<void> {
    const until = performance.now() + (this.options.archiveSearchMs ?? 15 * 60 * 1000);
    const seen = new Map<string, number>();
    while (!this.closed && performance.now() < until) {
      if ((await this.store.record(checkpointId))?.archive) return;
      for (const dir of this.options.archiveDirs) {
        for (const name of await readdir(dir).catch(() => [])) {
          if (!name.endsWith(".tar")) continue;
          const path = join(dir, name);
          const st = await stat(path).catch(() => undefined);
          // containerd writes the archive after the resume; one that has not grown since the last look is whole.
          if (!st?.isFile() || st.mtimeMs < sinceMs - 1000 || seen.get(path) === st.size) continue;
          seen.set(path, st.size);
          if ((await archiveCheckpointId(path)) !== checkpointId) continue;
          await this.store.setArchive(checkpointId, path);
          this.options.log.info(
            { checkpointId, archive: path },
            "page store: the checkpoint's archive found",
          );
          return;
        }
      }
      await delay(this.options.archivePollMs ?? 2000);
    }
  }

  async close(): Promise<void> {
    this.closed = true;
    clearTimeout(this.timer);
    await Promise.all(this.searches);
  }
}

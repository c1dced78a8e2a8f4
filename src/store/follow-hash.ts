import { closeSync, openSync } from "node:fs";
import { readdir } from "node:fs/promises";
import { join } from "node:path";
import { Worker } from "node:worker_threads";
import type { FileDigest } from "./hash.js";
import { PAGE_IMAGE } from "./manifest.js";

const CHUNK_BYTES = 8 * 1024 * 1024;

interface Follower {
  worker: Worker;
  flag: Int32Array;
  digest: Promise<FileDigest>;
}

/**
 * Hashes CRIU's page images while CRIU writes them (from the end of pre-dump on), one worker thread per image,
 * so that post-dump waits only for the last chunk instead of reading the whole image again. An image it did not
 * follow, or one whose worker failed, is simply absent from finish()'s answer: the caller hashes it whole.
 */
export class FollowingHasher {
  private readonly followers = new Map<string, Follower>();
  private timer: NodeJS.Timeout | undefined;
  private stopped = false;

  constructor(
    readonly dir: string,
    private readonly pollMs = 50,
  ) {}

  start(): this {
    const tick = () => {
      void this.look().finally(() => {
        if (this.stopped) return;
        this.timer = setTimeout(tick, this.pollMs);
        this.timer.unref();
      });
    };
    tick();
    return this;
  }

  private async look(): Promise<void> {
    const names = await readdir(this.dir).catch(() => [] as string[]);
    for (const name of names) {
      if (this.stopped || !PAGE_IMAGE.test(name) || this.followers.has(name)) continue;
      this.follow(name);
    }
  }

  private follow(name: string): void {
    const path = join(this.dir, name);
    let fd: number;
    try {
      // Opened here, at once: post-dump may rename the file into the store before the worker has started.
      fd = openSync(path, "r");
    } catch {
      return;
    }
    const shared = new SharedArrayBuffer(4);
    const worker = new Worker(new URL("./follow-hash-worker.js", import.meta.url), {
      workerData: { fd, path, chunkBytes: CHUNK_BYTES, flag: shared },
    });
    worker.unref();
    const digest = new Promise<FileDigest>((resolve, reject) => {
      worker.once("message", resolve);
      worker.once("error", reject);
      worker.once("exit", (code) => reject(new Error(`following ${name}: the worker exited (${code})`)));
    });
    worker.once("exit", () => closeSync(fd));
    digest.catch(() => undefined);
    this.followers.set(name, { worker, flag: new Int32Array(shared), digest });
  }

  /**
   * CRIU is done writing: each followed image's digest (its worker reads what is left), for the names asked;
   * an image not followed or whose worker failed is left out.
   */
  async finish(names: readonly string[]): Promise<Map<string, FileDigest>> {
    this.stopped = true;
    clearTimeout(this.timer);
    for (const f of this.followers.values()) {
      Atomics.store(f.flag, 0, 1);
      Atomics.notify(f.flag, 0);
    }
    const out = new Map<string, FileDigest>();
    await Promise.all(
      names.map(async (name) => {
        const digest = await this.followers.get(name)?.digest.catch(() => undefined);
        if (digest) out.set(name, digest);
      }),
    );
    await this.stop();
    return out;
  }

  /** Stops every worker (a checkpoint that failed before post-dump, a shutdown). */
  async stop(): Promise<void> {
    this.stopped = true;
    clearTimeout(this.timer);
    await Promise.all([...this.followers.values()].map((f) => f.worker.terminate()));
  }
}

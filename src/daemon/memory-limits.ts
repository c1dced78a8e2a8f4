import { createHash } from "node:crypto";
import { mkdir, open, readdir, readFile, rename, rm } from "node:fs/promises";
import { join } from "node:path";
import { delay } from "../base/deadline.js";
import type { Logger } from "../base/log.js";
import type { LimitRaise } from "../checkpoint/admission.js";
import type { MemoryLevel } from "../host/cgroup.js";

/** The cgroup writes the limits need (host/cgroup.ts in production). */
export interface LimitHost {
  readLevel(dir: string): Promise<MemoryLevel | undefined>;
  writeLimit(dir: string, file: string, text: string): Promise<void>;
  /** Whether a process of the cgroup is traced: CRIU is still restoring into it. */
  traced(dir: string): Promise<boolean>;
}

export type LimitStage = "checkpoint" | "restore" | "gpu freeze";

/** What is raised for one container, on disk before the first write: `from` is each file's original text. */
export interface LimitRecord {
  key: string;
  containerId?: string;
  stage: LimitStage;
  /** The container's own memory cgroup (the innermost level). */
  cgroup: string;
  changes: LimitRaise[];
  at: string;
}

export interface MemoryLimitsOptions {
  /** How often a limit that cannot be put back yet is tried again. */
  retryMs?: number;
  /** What must stay free under the original limit before it is written back (a v2 limit below use OOM-kills). */
  marginBytes?: number;
}

/** One record per container, by its memory cgroup: the daemon and `kybernate gpu` find the same one. */
export const limitKey = (cgroupDir: string): string =>
  createHash("sha256").update(cgroupDir).digest("hex").slice(0, 24);

/**
 * Memory limits raised for a GPU stage, and put back. The VRAM the driver stages is charged to the container's
 * memory cgroup and those above it; a limit below it OOM-kills the workload mid-checkpoint. So each limit on
 * the way is raised by the staged bytes for the stage, journalled first (a crash never leaves one raised: the
 * next start puts it back), and written back only once what the kernel cannot reclaim fits under it again:
 * putting a v2 memory.max below that would OOM-kill, v1 refuses. Until then it is tried again every retryMs,
 * so `settle` may be called at the end of every stage, whether the GPU state is back yet or not.
 */
export class MemoryLimits {
  private readonly retryMs: number;
  private readonly marginBytes: number;
  /** Per key: the chain of operations on its record, so a retry never interleaves with a new raise. */
  private readonly chains = new Map<string, Promise<unknown>>();
  private readonly retrying = new Set<string>();
  private readonly closing = new AbortController();

  constructor(
    private readonly dir: string,
    private readonly host: LimitHost,
    private readonly log: Logger,
    options: MemoryLimitsOptions = {},
  ) {
    this.retryMs = options.retryMs ?? 1000;
    this.marginBytes = options.marginBytes ?? 8 * 1024 * 1024;
  }

  async open(): Promise<void> {
    await mkdir(this.dir, { recursive: true, mode: 0o700 });
  }

  /**
   * Raises `raises` (limitRaises' plan) for a stage of the container whose memory cgroup is `cgroup`. A record
   * left by an earlier stage keeps its original values: a limit is never raised on top of a raise. Throws when
   * a write fails, with what was written put back.
   */
  raise(
    cgroup: string,
    who: { containerId?: string; stage: LimitStage },
    raises: readonly LimitRaise[],
  ): Promise<LimitRaise[]> {
    const key = limitKey(cgroup);
    return this.serial(key, async () => {
      if (raises.length === 0) return [];
      const earlier = await this.load(key);
      const changes: LimitRaise[] = raises.map((r) => {
        const before = earlier?.changes.find((c) => c.dir === r.dir && c.file === r.file);
        if (!before) return r;
        return { ...r, from: before.from, to: String(Number(before.from) + Number(r.to) - Number(r.from)) };
      });
      const kept = (earlier?.changes ?? []).filter(
        (c) => !changes.some((n) => n.dir === c.dir && n.file === c.file),
      );
      const record: LimitRecord = {
        key,
        ...(who.containerId ? { containerId: who.containerId } : {}),
        stage: who.stage,
        cgroup,
        changes: [...kept, ...changes],
        at: new Date().toISOString(),
      };
      await this.save(record);
      const written: LimitRaise[] = [];
      try {
        for (const change of changes) {
          await this.host.writeLimit(change.dir, change.file, change.to);
          written.push(change);
        }
      } catch (error) {
        for (const change of written.reverse())
          await this.host.writeLimit(change.dir, change.file, change.from).catch(() => undefined);
        await this.save({ ...record, changes: kept });
        if (kept.length === 0) await this.remove(key);
        throw new Error(
          `could not raise the memory limit ${join(changes[written.length]?.dir ?? "", changes[written.length]?.file ?? "")}: ${(error as Error).message}`,
        );
      }
      this.log.info(
        { containerId: who.containerId, stage: who.stage, raised: changes },
        "memory limits raised for the GPU stage",
      );
      return changes;
    });
  }

  /**
   * Puts the container's limits back where that is safe now, and keeps trying in the background for the rest.
   * Resolves true when nothing is left raised.
   */
  async settle(cgroup: string): Promise<boolean> {
    const key = limitKey(cgroup);
    const done = await this.serial(key, () => this.putBack(key));
    if (!done) this.retry(key);
    return done;
  }

  /** `settle` for every record of the container (the daemon knows containers by id, not by cgroup). */
  async settleContainer(containerId: string): Promise<boolean> {
    let done = true;
    for (const record of await this.records())
      if (record.containerId === containerId) done = (await this.settle(record.cgroup)) && done;
    return done;
  }

  /**
   * At start: every record a crash left is put back (or retried until it can be), except those of containers
   * whose GPU state a journal entry still has in host memory: the watcher repairing them settles them after.
   */
  async recover(busy: ReadonlySet<string> = new Set()): Promise<void> {
    for (const record of await this.records()) {
      if (record.containerId && busy.has(record.containerId)) continue;
      const { key } = record;
      this.log.warn({ record }, "memory limits left raised by an earlier run; putting them back");
      if (!(await this.serial(key, () => this.putBack(key)))) this.retry(key);
    }
  }

  private async records(): Promise<LimitRecord[]> {
    const names = await readdir(this.dir).catch(() => [] as string[]);
    const records: LimitRecord[] = [];
    for (const name of names.filter((n) => n.endsWith(".json"))) {
      const record = await this.load(name.slice(0, -5));
      if (record) records.push(record);
    }
    return records;
  }

  close(): void {
    this.closing.abort(new Error("kybernate is stopping"));
  }

  private retry(key: string): void {
    if (this.retrying.has(key) || this.closing.signal.aborted) return;
    this.retrying.add(key);
    void (async () => {
      try {
        for (let tries = 1; ; tries++) {
          await delay(this.retryMs, this.closing.signal);
          if (await this.serial(key, () => this.putBack(key))) return;
          if (tries % 60 === 0)
            this.log.warn(
              { key, record: await this.load(key) },
              "memory limits still raised: what the container holds does not fit under them yet",
            );
        }
      } catch {
        // Stopping: the record stays on disk and the next start puts the limits back.
      } finally {
        this.retrying.delete(key);
      }
    })();
  }

  /** One pass over the record, innermost and last-raised first; true when nothing is left raised. */
  private async putBack(key: string): Promise<boolean> {
    const record = await this.load(key);
    if (!record) return true;
    // CRIU restores the staged pages into the cgroup before post-resume: not a moment to lower anything.
    if (record.stage === "restore" && (await this.host.traced(record.cgroup).catch(() => false)))
      return false;
    const left: LimitRaise[] = [];
    for (const change of [...record.changes].reverse()) {
      const level = await this.host.readLevel(change.dir);
      if (!level) continue; // the cgroup is gone, and its limit with it
      const now = level.limits.find((l) => l.file === change.file)?.text;
      if (now !== change.to) {
        this.log.info(
          { change, now },
          "memory limit changed by someone else since kybernate raised it; left as it is",
        );
        continue;
      }
      if (level.unreclaimable + this.marginBytes > Number(change.from)) {
        left.unshift(change);
        continue;
      }
      try {
        await this.host.writeLimit(change.dir, change.file, change.from);
      } catch (error) {
        this.log.debug({ err: error, change }, "memory limit not put back yet");
        left.unshift(change);
      }
    }
    if (left.length === 0) {
      await this.remove(key);
      this.log.info({ containerId: record.containerId, restored: record.changes }, "memory limits put back");
      return true;
    }
    if (left.length !== record.changes.length) await this.save({ ...record, changes: left });
    return false;
  }

  private serial<T>(key: string, work: () => Promise<T>): Promise<T> {
    const before = this.chains.get(key) ?? Promise.resolve();
    const next = before.catch(() => undefined).then(work);
    const tail = next.catch(() => undefined);
    this.chains.set(key, tail);
    void tail.then(() => {
      if (this.chains.get(key) === tail) this.chains.delete(key);
    });
    return next;
  }

  private path(key: string): string {
    return join(this.dir, `${key}.json`);
  }

  private async load(key: string): Promise<LimitRecord | undefined> {
    try {
      return JSON.parse(await readFile(this.path(key), "utf8")) as LimitRecord;
    } catch {
      return undefined;
    }
  }

  private async save(record: LimitRecord): Promise<void> {
    const final = this.path(record.key);
    const temporary = `${final}.tmp`;
    const file = await open(temporary, "w", 0o600);
    try {
      await file.writeFile(JSON.stringify(record));
      await file.sync();
    } finally {
      await file.close();
    }
    await rename(temporary, final);
  }

  private async remove(key: string): Promise<void> {
    await rm(this.path(key), { force: true });
  }
}

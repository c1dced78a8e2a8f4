import { delay } from "../base/deadline.js";
import { bringBack } from "./bring-back.js";
import type { Watch } from "./pre-dump.js";
import { describeFailure, stageLog } from "./report.js";
import type { StageContext } from "./stage-context.js";

/** On shutdown, how long watchers may still wait for a container's resume before leaving it to the journal. */
const CLOSE_GRACE_MS = 5000;

/**
 * The watchers that bring the GPU back once containerd resumes a checkpointed container: no CRIU action fires
 * after a leave-running or failed dump, so kybernate looks for itself. Each holds its container's operation
 * slot until it is done.
 */
export class ResumeWatchers {
  private readonly running = new Set<Promise<void>>();
  /** Set by close(): watchers keep going until then, so a resume that is already coming is still handled. */
  private giveUpAt = Number.POSITIVE_INFINITY;

  constructor(private readonly ctx: StageContext) {}

  /** Watches a container whose operation slot the caller holds; the slot is released when the watch ends. */
  start(watch: Watch): void {
    const { containerId } = watch.entry;
    const watcher = this.awaitResumeAndThaw(watch)
      .catch((error) => this.ctx.log.error({ err: error, containerId }, "resume watcher failed"))
      .finally(() => {
        this.ctx.containers.end(containerId);
        this.running.delete(watcher);
      });
    this.running.add(watcher);
  }

  async close(): Promise<void> {
    this.giveUpAt = performance.now() + CLOSE_GRACE_MS;
    await Promise.all(this.running);
  }

  private stopping(): boolean {
    return performance.now() > this.giveUpAt;
  }

  /**
   * Waits for CRIU to finish and containerd to resume the container, then brings the GPU back. Covers
   * leave-running checkpoints and failed dumps alike; a container that exited (checkpoint without
   * leave-running) needs nothing.
   */
  private async awaitResumeAndThaw({ entry, freezer, criu }: Watch): Promise<void> {
    const { ctx } = this;
    const { pollMs, frozenGraceMs } = ctx.timing;
    const log = stageLog(ctx, entry.containerId, "resume");
    const t0 = performance.now();
    while (criu && (await ctx.host.isSameProcess(criu)) && !this.stopping()) await delay(pollMs);
    const criuDone = performance.now();
    let frozenSince: number | undefined;
    for (;;) {
      // What is left unfinished stays in the journal: the next start repairs it.
      if (this.stopping()) return;
      const alive = await ctx.host.livingPids(entry.pids);
      if (alive.length === 0) {
        log.info({ pids: entry.pids }, "container exited after its checkpoint; nothing to thaw");
        await ctx.journal.complete(entry.id);
        ctx.containers.finished(entry.containerId, "checkpoint", { ok: true });
        return;
      }
      const frozen = freezer ? await freezer.isFrozen().catch(() => false) : false;
      const tracers = await Promise.all(alive.map((pid) => ctx.host.tracerOf(pid)));
      const traced = tracers.some((tracer) => (tracer ?? 0) !== 0);
      if (!frozen && !traced) {
        const record = await bringBack(ctx, alive, { log, deviceMap: entry.deviceMap });
        await ctx.journal.complete(entry.id);
        ctx.metrics.record(record);
        // A watcher started by pre-dump knows its CRIU process; one started by recover() does not.
        if (record.ok) ctx.metrics.repaired(criu ? "resume" : "recovery", alive.length);
        ctx.containers.finished(entry.containerId, "checkpoint", {
          ok: record.ok,
          record,
          ...(record.ok ? {} : { error: describeFailure(record) }),
        });
        log.info(
          {
            pids: alive,
            ok: record.ok,
            afterCriuMs: Math.round(performance.now() - criuDone),
            totalMs: Math.round(performance.now() - t0),
          },
          record.ok ? "container resumed; GPU state restored" : "container resumed; GPU state NOT restored",
        );
        return;
      }
      if (frozen && !traced) {
        frozenSince ??= performance.now();
        if (performance.now() - frozenSince > frozenGraceMs && freezer) {
          // containerd's deferred resume is lost when the caller's deadline cancels its context; a frozen
          // workload with its GPU state in host memory helps nobody.
          log.warn({ graceMs: frozenGraceMs }, "container still frozen after CRIU finished; thawing it");
          await freezer.thaw();
        }
      } else frozenSince = undefined;
      await delay(pollMs);
    }
  }
}

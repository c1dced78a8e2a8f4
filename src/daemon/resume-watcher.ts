import { Deadline, delay } from "../base/deadline.js";
import type { Logger } from "../base/log.js";
import { bringBack } from "./bring-back.js";
import { markResumed, reportCheckpoint } from "./checkpoint-run.js";
import type { Watch } from "./pre-dump.js";
import { describeFailure, stageLog } from "./report.js";
import type { StageContext } from "./stage-context.js";

/** On shutdown, how long watchers may still wait for a container's resume before leaving it to the journal. */
const CLOSE_GRACE_MS = 5000;
/** After containerd abandoned a checkpoint (runc killed), how long to give it to resume the task itself anyway. */
const ABANDONED_GRACE_MS = 300;
/** How long containerd's Tasks/Resume may take. */
const RESUME_CALL_MS = 10_000;

/**
 * The watchers that bring the GPU back once containerd resumes a checkpointed container: no CRIU action fires
 * after a leave-running or failed dump, so kybernate looks for itself. When containerd's own resume is lost
 * (its caller's deadline cut the checkpoint), the watcher resumes the task through containerd. Each holds its
 * container's operation slot until it is done.
 */
/** Pause before a failed watcher step is tried again. */
const STEP_RETRY_MS = 1000;

export class ResumeWatchers {
  private readonly running = new Set<Promise<void>>();
  /** The watch of each container whose checkpoint is in flight: its post-dump joins it. */
  private readonly watches = new Map<string, Watch>();
  /** Set by close(): watchers keep going until then, so a resume that is already coming is still handled. */
  private giveUpAt = Number.POSITIVE_INFINITY;

  constructor(private readonly ctx: StageContext) {}

  /** Watches a container whose operation slot the caller holds; the slot is released when the watch ends. */
  start(watch: Watch): void {
    const { containerId } = watch.entry;
    this.watches.set(containerId, watch);
    const watcher = this.awaitResumeAndThaw(watch)
      .catch((error) => this.ctx.log.error({ err: error, containerId }, "resume watcher failed"))
      // The GPU state is back (or the container gone): the limits raised for its stage can go back too.
      .then(async () => {
        await this.ctx.limits.settleContainer(containerId);
      })
      .catch((error) => this.ctx.log.error({ err: error, containerId }, "memory limits not settled"))
      .then(() => reportCheckpoint(this.ctx, containerId, { archiveLost: watch.caller?.abandoned === true }))
      .catch((error) => this.ctx.log.warn({ err: error, containerId }, "checkpoint phases not reported"))
      .finally(() => {
        if (this.watches.get(containerId) === watch) this.watches.delete(containerId);
        this.ctx.containers.end(containerId);
        this.running.delete(watcher);
      });
    this.running.add(watcher);
  }

  /** The watch of the container's checkpoint in flight, if any (its slot is the watcher's). */
  active(containerId: string): Watch | undefined {
    return this.watches.get(containerId);
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
  private async awaitResumeAndThaw(watch: Watch): Promise<void> {
    const { entry, freezer, caller } = watch;
    const { ctx } = this;
    const { pollMs } = ctx.timing;
    const log = stageLog(ctx, entry.containerId, "resume");
    const t0 = performance.now();
    while (caller && !(await caller.poll().catch(() => ({ criuGone: false }))).criuGone && !this.stopping())
      await delay(pollMs);
    const criuDone = performance.now();
    // Only a dump that went on after a successful GPU stage can fail in CRIU itself.
    const dump = entry.pids.length > 0 ? await caller?.criuOutcome() : undefined;
    const dumpFailed = dump && !dump.ok ? `CRIU failed after the GPU stage: ${dump.error}` : undefined;
    if (dump && !dump.ok)
      log.warn({ criuError: dump.error, log: caller?.criuLog }, "CRIU failed after the GPU stage");
    let resumeAsked = false;
    let frozenSince: number | undefined;
    for (;;) {
      // What is left unfinished stays in the journal: the next start repairs it.
      if (this.stopping()) return;
      try {
        const alive = await ctx.host.livingPids(entry.pids);
        const containerGone = !(await ctx.host.identify(entry.initPid));
        if (alive.length === 0 && (entry.pids.length > 0 || containerGone)) {
          if (entry.pids.length > 0)
            log.info({ pids: entry.pids }, "container exited after its checkpoint; nothing to thaw");
          await ctx.journal.complete(entry.id);
          ctx.containers.finished(
            entry.containerId,
            "checkpoint",
            dumpFailed ? { ok: false, error: dumpFailed } : { ok: true },
          );
          return;
        }
        const frozen = freezer ? await freezer.isFrozen().catch(() => false) : false;
        const tracers = await Promise.all(alive.map((pid) => ctx.host.tracerOf(pid)));
        const traced = tracers.some((tracer) => (tracer ?? 0) !== 0);
        if (!frozen && !traced) {
          if (alive.length === 0) {
            // Nothing was moved to host memory: containerd (or kybernate for it) resumed the container; done.
            markResumed(ctx, entry.containerId);
            await ctx.journal.complete(entry.id);
            return;
          }
          markResumed(ctx, entry.containerId);
          const record = await bringBack(ctx, alive, { log, deviceMap: entry.deviceMap });
          markResumed(ctx, entry.containerId, record);
          await ctx.journal.complete(entry.id);
          ctx.metrics.record(record);
          // A watcher started by pre-dump knows its CRIU process; one started by recover() does not.
          if (record.ok) ctx.metrics.repaired(caller ? "resume" : "recovery", alive.length);
          // The GPU is back either way; the checkpoint itself succeeded only if CRIU's dump did.
          const error = record.ok ? dumpFailed : describeFailure(record);
          ctx.containers.finished(entry.containerId, "checkpoint", {
            ok: !error,
            record,
            ...(error ? { error } : {}),
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
          if (!resumeAsked && freezer && (await this.resumeIsLost(watch, performance.now() - frozenSince))) {
            resumeAsked = true;
            await this.resumeTask(watch, log);
          }
        } else frozenSince = undefined;
      } catch (error) {
        // A failed step (a full disk under the journal, a thaw or bring-back that threw) is tried again: giving up
        // here would leave the container paused or its GPU state in host memory until the daemon restarts.
        log.error({ err: error }, "resume watcher step failed; trying again");
        resumeAsked = false;
        await delay(Math.max(pollMs, STEP_RETRY_MS));
        continue;
      }
      await delay(pollMs);
    }
  }

  /**
   * Whether containerd will not resume the container itself: it abandoned the checkpoint (runc killed: its
   * deferred resume runs with the caller's expired context), or the container stayed frozen past the grace
   * after containerd was done with CRIU's images (it removes them before its final resume).
   */
  private async resumeIsLost({ caller }: Watch, frozenMs: number): Promise<boolean> {
    if (caller?.abandoned) return frozenMs > ABANDONED_GRACE_MS;
    if ((await caller?.imagesGone()) === false) return false;
    return frozenMs > this.ctx.timing.frozenGraceMs;
  }

  /**
   * Resumes the task through containerd (journalled first), so that containerd, the shim and the kernel agree
   * it runs; only when containerd cannot be reached does kybernate thaw the cgroup itself.
   */
  private async resumeTask({ entry, freezer, caller }: Watch, log: Logger): Promise<void> {
    const task = caller?.task ?? entry.task;
    await this.ctx.journal.record({ ...entry, resumedTaskAt: new Date().toISOString() });
    const why = caller?.abandoned
      ? "containerd abandoned the checkpoint (its caller's deadline passed) and lost its own resume"
      : `the container stayed frozen ${Math.round(this.ctx.timing.frozenGraceMs / 1000)} s after CRIU finished`;
    if (task) {
      const deadline = Deadline.after(RESUME_CALL_MS, { what: "containerd's Tasks/Resume" });
      try {
        await this.ctx.runtime.resume(task, deadline);
        log.warn({ task, reason: why }, "resumed the task through containerd");
        return;
      } catch (error) {
        log.error({ err: error, task }, "containerd did not resume the task; thawing its cgroup instead");
      } finally {
        deadline.dispose();
      }
    }
    // containerd will still list the task paused (exec refused) until its own Tasks/Resume runs.
    log.warn({ reason: why, cgroup: freezer?.dir }, "thawing the container's cgroup");
    await freezer?.thaw();
  }
}

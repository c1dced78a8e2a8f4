import { ProcessState } from "../gpu/types.js";
import { bringBack } from "./bring-back.js";
import { describeFailure, stageLog } from "./report.js";
import type { ResumeWatchers } from "./resume-watcher.js";
import type { FreezerControl, StageContext } from "./stage-context.js";

/** At start: every operation the journal lists as unfinished gets a watcher that brings its processes back. */
export async function recover(ctx: StageContext, watchers: ResumeWatchers): Promise<void> {
  const pending = await ctx.journal.pending();
  // Limits a crash left raised go back now, but not under GPU state a watcher below has yet to bring back.
  await ctx.limits.recover(new Set(pending.map((e) => e.containerId)));
  for (const entry of pending) {
    ctx.log.warn({ entry }, "unfinished GPU operation found in the journal; repairing");
    // The container cannot be busy this early; the slot is taken so no checkpoint starts under the repair.
    ctx.containers.begin(entry.containerId, "repair");
    let freezer: FreezerControl | undefined;
    try {
      freezer = (await ctx.host.container(entry.initPid)).freezer();
    } catch {
      freezer = undefined;
    }
    watchers.start({ entry, ...(freezer ? { freezer } : {}) });
  }
}

/**
 * After a (re)start: GPU processes sitting LOCKED or CHECKPOINTED in a container that runs (thawed, not
 * traced) missed their thaw while no daemon was there: a post-resume hook that could not reach it (runc
 * ignores that failure), or a resume nobody watched. Containers frozen or traced are mid-checkpoint: the
 * journal and its watcher own those.
 */
export async function repairStranded(
  ctx: StageContext,
  containers: ReadonlyArray<{ containerId: string; initPid: number }>,
): Promise<void> {
  for (const { containerId, initPid } of containers) {
    if (initPid <= 1 || ctx.containers.isBusy(containerId)) continue;
    const log = stageLog(ctx, containerId, "repair");
    try {
      const container = await ctx.host.container(initPid);
      const found = await container.discover("any");
      const stranded = found.cuda
        .filter((p) => p.state === ProcessState.LOCKED || p.state === ProcessState.CHECKPOINTED)
        .map((p) => p.pid);
      if (stranded.length === 0) continue;
      if (await container.freezer().isFrozen()) continue;
      const tracers = await Promise.all(stranded.map((pid) => ctx.host.tracerOf(pid)));
      if (tracers.some((t) => (t ?? 0) !== 0)) continue;
      if (!ctx.containers.begin(containerId, "repair").ok) continue;
      try {
        log.warn(
          { pids: stranded },
          "GPU processes left locked or checkpointed while the container runs; repairing",
        );
        // A restore interrupted between pre-restore and post-resume goes onto the GPUs it was planned for.
        const deviceMap = await ctx.plans.load(containerId);
        const record = await bringBack(ctx, stranded, { log, deviceMap });
        if (record.ok) {
          ctx.metrics.repaired("recovery", stranded.length);
          await ctx.plans.remove(containerId).catch(() => undefined);
          await ctx.limits.settleContainer(containerId);
        }
        ctx.containers.finished(containerId, "repair", {
          ok: record.ok,
          record,
          ...(record.ok ? {} : { error: describeFailure(record) }),
        });
        log.info(
          { pids: stranded, ok: record.ok },
          record.ok ? "GPU state repaired" : "GPU state NOT repaired",
        );
      } finally {
        ctx.containers.end(containerId);
      }
    } catch (error) {
      log.warn({ err: error }, "could not check the container for stranded GPU state");
    }
  }
}

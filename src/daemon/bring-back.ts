import { Deadline, delay } from "../base/deadline.js";
import type { Logger } from "../base/log.js";
import type { OperationRecord } from "../gpu/engine.js";
import type { DeviceMap } from "../gpu/types.js";
import type { JournalEntry } from "./journal.js";
import type { StageContext } from "./stage-context.js";

const RETRIES = 3;

/**
 * Restore + unlock, retried: runc ignores a post-resume failure and no CRIU action follows a resume, so nobody
 * else will try again. The first try runs inside the caller's deadline; each retry gets the GPU budget afresh
 * (bringing the GPU back matters more than answering a caller who has gone).
 */
export async function bringBack(
  ctx: StageContext,
  pids: number[],
  options: { log: Logger; deviceMap?: DeviceMap | undefined; deadline?: Deadline },
): Promise<OperationRecord> {
  const { log, deviceMap } = options;
  let record = await ctx.engine.restore(pids, deviceMap, options.deadline ?? budget(ctx));
  for (let attempt = 1; !record.ok && attempt <= RETRIES; attempt++) {
    log.warn({ attempt, failure: record.failure }, "GPU restore failed; retrying");
    await delay(ctx.timing.retryBackoffMs * attempt);
    const alive = await ctx.host.livingPids(pids);
    if (alive.length === 0) return record;
    record = await ctx.engine.ensureRunning(alive, deviceMap, budget(ctx));
    if (record.ok) ctx.metrics.repaired("retry", alive.length);
  }
  return record;
}

/**
 * Undoes a checkpoint's GPU stage after the driver was touched (over budget, the refreeze failed, anything
 * unexpected): every process back to RUNNING, the journal entry done, the failure counted. When even that
 * fails, the entry stays in the journal and the record says so: the caller hands it to a resume watcher.
 */
export async function undoCheckpoint(ctx: StageContext, entry: JournalEntry): Promise<OperationRecord> {
  const record = await ctx.engine.ensureRunning(entry.pids, undefined, budget(ctx));
  if (record.ok) await ctx.journal.complete(entry.id);
  ctx.metrics.result("checkpoint", "failure");
  return record;
}

const budget = (ctx: StageContext): Deadline =>
  Deadline.after(ctx.timing.gpuBudgetMs, { what: "bringing the GPU back" });

import { randomUUID } from "node:crypto";
import type { Deadline } from "../base/deadline.js";
import type { Logger } from "../base/log.js";
import type { RestorePlan } from "../checkpoint/restore-plan.js";
import { ProcessState } from "../gpu/types.js";
import { bringBack } from "./bring-back.js";
import type { JournalEntry } from "./journal.js";
import type { DaemonReply, HookRequest } from "./protocol.js";
import { describeFailure, fail, stageLog } from "./report.js";
import { linkPages, releasePages } from "./restore-pages.js";
import type { ContainerOnHost, StageContext } from "./stage-context.js";

/**
 * Before CRIU creates any process: a checkpoint this node cannot restore (another GPU model, too few GPUs,
 * a driver too old to remap) is refused here, where a failure still fails StartContainer cleanly. At
 * post-resume runc would ignore it and leave the processes CHECKPOINTED.
 */
export async function preRestore(ctx: StageContext, request: HookRequest): Promise<DaemonReply> {
  const t0 = performance.now();
  const log = stageLog(ctx, request.containerId, "pre-restore");
  const plan = await planRestore(ctx, request, log);
  if (plan && !plan.ok) {
    ctx.metrics.result("restore", "refused");
    return fail(ctx, request, `${plan.error}; nothing was restored (the checkpoint archive is unchanged)`);
  }
  const pages = await linkPages(ctx, request, log);
  if (!pages.ok) {
    ctx.metrics.result("restore", "refused");
    return fail(ctx, request, `${pages.error}; nothing was restored (the checkpoint archive is unchanged)`);
  }
  const refused = await raiseLimitsForRestore(ctx, request, plan);
  if (refused) {
    await releasePages(ctx, request.containerId);
    ctx.metrics.result("restore", "refused");
    return fail(ctx, request, `${refused}; nothing was restored (the checkpoint archive is unchanged)`);
  }
  ctx.containers.keepPlan(request.containerId, plan);
  if (plan?.deviceMap.length)
    await ctx.plans.save(request.containerId, plan.deviceMap).catch((error: Error) =>
      // Only a repair after a crash needs it; the restore itself goes on from the plan kept in memory.
      log.warn({ err: error }, "could not keep the restore's device map on disk"),
    );
  // StartContainer waits for this stage: its cost is reported by the GPU end-to-end run.
  log.info({ ms: Math.round(performance.now() - t0) }, "restore planned");
  return { ok: true };
}

/** After `runc restore`: the processes run again but their GPU state is still in host memory. */
export async function postResume(
  ctx: StageContext,
  request: HookRequest,
  deadline: Deadline,
): Promise<DaemonReply> {
  const log = stageLog(ctx, request.containerId, "post-resume");
  await releasePages(ctx, request.containerId);
  const kept = ctx.containers.takePlan(request.containerId);
  let pids: number[];
  try {
    const found = await (await ctx.host.container(request.initPid)).discover("any", deadline);
    pids = found.cuda.filter((p) => p.state !== ProcessState.RUNNING).map((p) => p.pid);
  } catch (error) {
    return fail(ctx, request, `cannot list the restored container's processes: ${(error as Error).message}`);
  }
  if (pids.length === 0) {
    // Nothing staged is left to move: what pre-restore raised for it can go back.
    await ctx.limits.settleContainer(request.containerId).catch(() => undefined);
    log.info("no checkpointed CUDA process in the restored container");
    return { ok: true, data: { pids: [] } };
  }
  // Planned at pre-restore; planned here only when that stage did not run (a CRIU config written before it).
  const plan = kept.planned ? kept.plan : await planRestore(ctx, request, log);
  if (plan && !plan.ok) {
    // The processes stay CHECKPOINTED (their GPU state safe in host memory): a restore onto the wrong
    // GPUs would fail in the driver or, worse, run on a GPU it was not meant for.
    ctx.metrics.result("restore", "refused");
    return fail(
      ctx,
      request,
      `${plan.error}; the restored processes stay CHECKPOINTED (pids ${pids.join(", ")})`,
    );
  }
  const deviceMap = plan?.deviceMap.length ? plan.deviceMap : undefined;
  const entry: JournalEntry = {
    id: randomUUID(),
    containerId: request.containerId,
    action: "post-resume",
    pids,
    initPid: request.initPid,
    ...(deviceMap ? { deviceMap } : {}),
    startedAt: new Date().toISOString(),
  };
  await ctx.journal.record(entry);
  const record = await bringBack(ctx, pids, { log, deviceMap, deadline });
  await ctx.journal.complete(entry.id);
  if (record.ok) await ctx.plans.remove(request.containerId).catch(() => undefined);
  // The VRAM is back on the GPU: what pre-restore raised can go back (a failed restore keeps it staged).
  if (record.ok) await ctx.limits.settleContainer(request.containerId);
  ctx.metrics.record(record);
  ctx.metrics.result("restore", record.ok ? "success" : "failure");
  if (!record.ok) return fail(ctx, request, describeFailure(record), record);
  ctx.containers.finished(request.containerId, "restore", { ok: true, record });
  log.info({ pids, ms: record.totalMs, phasesMs: record.phasesMs }, "GPU state restored");
  return { ok: true, data: { pids } };
}

/**
 * CRIU restores the staged VRAM into host memory, charged to the restored container's cgroups (runc has put
 * CRIU itself there): the node must have the room, and limits below it are raised until post-resume has moved
 * it back. The refusal, or undefined.
 */
async function raiseLimitsForRestore(
  ctx: StageContext,
  request: HookRequest,
  plan: RestorePlan | undefined,
): Promise<string | undefined> {
  const stagedBytes = plan?.ok ? plan.stagedBytes : undefined;
  if (stagedBytes === undefined || !request.criuPid) return undefined;
  let levels: Awaited<ReturnType<ContainerOnHost["memoryLevels"]>>;
  try {
    levels = await (await ctx.host.container(request.criuPid)).memoryLevels();
  } catch {
    return undefined;
  }
  const { verdict, raises } = await ctx.policy.admitRestore(
    request.containerId,
    stagedBytes,
    async () => levels,
    plan?.ok ? plan.usageBytes : undefined,
  );
  if (!verdict.ok) return verdict.error;
  const cgroup = levels[0]?.dir;
  if (!cgroup || raises.length === 0) return undefined;
  try {
    await ctx.limits.raise(cgroup, { containerId: request.containerId, stage: "restore" }, raises);
    return undefined;
  } catch (error) {
    return (error as Error).message;
  }
}

/** The compatibility plan; no plan (metadata unreadable) means "restore onto the same GPUs". */
async function planRestore(
  ctx: StageContext,
  request: HookRequest,
  log: Logger,
): Promise<RestorePlan | undefined> {
  const gpuRequest = ctx.containers.managed(request.containerId)?.gpuRequest;
  return ctx.policy
    .planRestore({
      containerId: request.containerId,
      criuPid: request.criuPid,
      ...(request.imageDir ? { imageDir: request.imageDir } : {}),
      ...(gpuRequest ? { gpuRequest } : {}),
    })
    .catch((error: Error) => {
      // The policy refuses a hostile or invalid kybernate.json itself; an error here is the GPU inventory or
      // worse, no reason to leave the processes CHECKPOINTED.
      log.warn(
        { err: error },
        "no restore plan (checkpoint metadata unreadable); restoring onto the same GPUs",
      );
      return undefined;
    });
}

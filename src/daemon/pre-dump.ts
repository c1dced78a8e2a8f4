import { randomUUID } from "node:crypto";
import { Deadline } from "../base/deadline.js";
import type { Logger } from "../base/log.js";
import type { LimitRaise } from "../checkpoint/admission.js";
import type { FreezeContext } from "../checkpoint/policy.js";
import type { OperationRecord } from "../gpu/engine.js";
import { ProcessState } from "../gpu/types.js";
import { undoCheckpoint } from "./bring-back.js";
import { CheckpointCaller } from "./checkpoint-caller.js";
import { beforeGpuStage, gpuStageDone } from "./checkpoint-run.js";
import type { JournalEntry } from "./journal.js";
import type { DaemonReply, HookRequest } from "./protocol.js";
import { describeFailure, fail, stageLog } from "./report.js";
import type { ContainerOnHost, FreezerControl, StageContext } from "./stage-context.js";

/** What a resume watcher needs to bring the GPU back once containerd resumes the container. */
export interface Watch {
  entry: JournalEntry;
  freezer?: FreezerControl;
  /** Who runs the checkpoint (CRIU, runc); absent for a repair after a restart. */
  caller?: CheckpointCaller;
}

export interface PreDumpResult {
  reply: DaemonReply;
  /** Set when the GPU state sits in host memory: a watcher must bring it back. */
  watch?: Watch;
}

type Moved =
  /** Nothing to move, or refused before the driver was touched. */
  | { kind: "untouched"; reply: DaemonReply }
  /** The driver was touched and the stage failed; `stranded` when not every process is back on the GPU. */
  | { kind: "failed"; reply: DaemonReply; stranded?: JournalEntry }
  | { kind: "moved"; entry: JournalEntry; record: OperationRecord };

/** How often the GPU stage checks that containerd still wants the checkpoint (runc alive). */
const CALLER_POLL_MS = 50;

/**
 * containerd has frozen the container. The driver cannot lock frozen threads, so: thaw, move VRAM to host
 * memory, freeze again (containerd's `runc resume` fails on a container that is not paused), and leave a
 * watch for the resume that no CRIU action reports. Every failure after the driver was touched ends with the
 * processes back on the GPU, or with a watch that will bring them back. When containerd paused the container,
 * a watch is left whatever happened: if the caller's deadline cut the checkpoint, containerd's own resume is
 * lost and the watcher resumes the task through containerd.
 */
export async function preDump(
  ctx: StageContext,
  request: HookRequest,
  deadline: Deadline,
): Promise<PreDumpResult> {
  const result = await preDumpStage(ctx, request, deadline);
  // Staged VRAM left in host memory keeps its raised limits: the watcher settles them once it is back. A failure
  // here must not cost the caller its watch (the limits' records stay on disk and go back at the next settle).
  if (!result.watch?.entry.pids.length)
    await ctx.limits
      .settleContainer(request.containerId)
      .catch((error) =>
        ctx.log.error({ err: error, containerId: request.containerId }, "memory limits not settled"),
      );
  return result;
}

async function preDumpStage(
  ctx: StageContext,
  request: HookRequest,
  deadline: Deadline,
): Promise<PreDumpResult> {
  const started = { at: Date.now(), perf: performance.now() };
  const log = stageLog(ctx, request.containerId, "pre-dump");
  let container: ContainerOnHost;
  let freezer: FreezerControl;
  let caller: CheckpointCaller;
  try {
    container = await ctx.host.container(request.initPid);
    freezer = container.freezer();
    caller = await CheckpointCaller.find(ctx.host, request);
  } catch (error) {
    return { reply: fail(ctx, request, `cannot find the container's cgroup: ${(error as Error).message}`) };
  }
  const wasFrozen = await freezer.isFrozen();
  const thawStarted = performance.now();
  if (wasFrozen) await freezer.thaw();
  ctx.metrics.phase("thaw_cgroup", performance.now() - thawStarted);

  // The stage ends at its budget, or as soon as containerd abandons the checkpoint.
  const stage = Deadline.at(deadline.at, {
    parent: AbortSignal.any([deadline.signal, caller.signal]),
    what: `the GPU stage of the pre-dump of ${request.containerId}`,
  });
  caller.watch(CALLER_POLL_MS);
  let moved: Moved;
  try {
    moved = await moveToHost(ctx, request, container, stage, {
      log,
      started,
      caller,
      budgetMs: deadline.budgetMs,
    });
  } finally {
    caller.stop();
    stage.dispose();
  }
  const watch = (entry: JournalEntry): Watch => ({ entry, freezer, caller });
  // containerd paused the container and will resume it, unless its caller's deadline cuts the checkpoint.
  const containerdResumes = async (): Promise<Watch | undefined> =>
    wasFrozen ? watch(await watching(ctx, entryFor(request, [], caller))) : undefined;
  if (wasFrozen) {
    const refreezeStarted = performance.now();
    try {
      await freezer.freeze();
      ctx.metrics.phase("refreeze", performance.now() - refreezeStarted);
    } catch (error) {
      // Without the freeze containerd's resume fails, and CRIU would dump a running container: undo.
      log.error({ err: error }, "could not freeze the container again; bringing the GPU back");
      const reply = fail(ctx, request, `could not freeze the container again: ${(error as Error).message}`);
      if (moved.kind === "untouched") return { reply };
      const stranded = moved.kind === "moved" ? await undo(ctx, moved.entry) : moved.stranded;
      return stranded ? { reply, watch: watch(await watching(ctx, stranded)) } : { reply };
    }
  }
  if (moved.kind !== "moved") {
    const stranded = moved.kind === "failed" ? moved.stranded : undefined;
    const next = stranded ? watch(await watching(ctx, stranded)) : await containerdResumes();
    return next ? { reply: moved.reply, watch: next } : { reply: moved.reply };
  }
  const entry = await watching(ctx, moved.entry);
  gpuStageDone(ctx, request.containerId, moved.record);
  ctx.metrics.result("checkpoint", "success");
  log.info(
    { pids: entry.pids, ms: Math.round(performance.now() - started.perf), phasesMs: moved.record.phasesMs },
    "GPU state moved to host memory",
  );
  return { reply: { ok: true, data: { pids: entry.pids } }, watch: watch(entry) };
}

/** A journal entry for this checkpoint: the processes it moves (maybe none) and where containerd has the task. */
function entryFor(request: HookRequest, pids: number[], caller: CheckpointCaller): JournalEntry {
  return {
    id: randomUUID(),
    containerId: request.containerId,
    action: "pre-dump",
    pids,
    initPid: request.initPid,
    task: caller.task,
    startedAt: new Date().toISOString(),
  };
}

/** The journal entry a resume watcher works from: the GPU state is in host memory until the container runs. */
async function watching(ctx: StageContext, entry: JournalEntry): Promise<JournalEntry> {
  const thaw: JournalEntry = { ...entry, action: "thaw-after-resume" };
  // The watch runs from memory whatever the disk says: without it the GPU state would stay in host memory and the
  // container paused. A moved entry is on disk already under the same id, for a repair after a crash.
  await ctx.journal
    .record(thaw)
    .catch((error) =>
      ctx.log.error(
        { err: error, containerId: entry.containerId },
        "could not journal the resume watch; watching from memory",
      ),
    );
  return thaw;
}

/** Every process back to RUNNING; the entry when that failed too (a watcher must finish it). */
async function undo(ctx: StageContext, entry: JournalEntry): Promise<JournalEntry | undefined> {
  return (await undoCheckpoint(ctx, entry)).ok ? undefined : entry;
}

/** Discovery, admission, the journal entry and the driver's lock + checkpoint; never throws. */
async function moveToHost(
  ctx: StageContext,
  request: HookRequest,
  container: ContainerOnHost,
  deadline: Deadline,
  {
    log,
    started,
    caller,
    budgetMs,
  }: { log: Logger; started: { at: number; perf: number }; caller: CheckpointCaller; budgetMs: number },
): Promise<Moved> {
  let entry: JournalEntry | undefined;
  try {
    const discoverStarted = performance.now();
    const found = await container.discover("held", deadline);
    if (found.stopped?.length) {
      // The driver blocks on a stopped or traced process, even to tell its state: refuse before any call.
      const who = found.stopped.map((p) => `process ${p.pid} ${p.reason}`).join("; ");
      ctx.metrics.result("checkpoint", "refused");
      const pids = found.stopped.map((p) => p.pid).join(" ");
      return {
        kind: "untouched",
        reply: fail(
          ctx,
          request,
          `refusing to checkpoint: ${who}; the driver blocks on a stopped or traced process: continue it (kill -CONT ${pids}) or detach its debugger, then checkpoint again`,
        ),
      };
    }
    const pids = found.cuda.filter((p) => p.state === ProcessState.RUNNING).map((p) => p.pid);
    const discoveryMs = performance.now() - discoverStarted;
    ctx.metrics.phase("discover", discoveryMs);
    if (pids.length === 0) {
      log.info({ skipped: found.skipped }, "no running CUDA process in the container; nothing to move");
      return { kind: "untouched", reply: { ok: true, data: { pids: [] } } };
    }
    const names = ctx.containers.names(request.containerId);
    const levels = await container.memoryLevels();
    const context: FreezeContext = {
      containerId: request.containerId,
      pids,
      memoryLevels: async () => levels,
      ...(request.imageDir ? { imageDir: request.imageDir } : {}),
      names,
      podIps: ctx.containers.managed(request.containerId)?.podIps ?? [],
      tcp: ctx.containers.managed(request.containerId)?.tcp ?? "established",
      containerPids: found.candidates,
    };
    const admission = await ctx.policy.admit(context);
    if (!admission.verdict.ok) {
      ctx.metrics.result("checkpoint", "refused");
      return { kind: "untouched", reply: fail(ctx, request, admission.verdict.error) };
    }
    const estimate = admission.estimate;
    const ahead = await beforeGpuStage(ctx, { request, caller, levels, startedAt: started.at, estimate });
    if (!ahead.ok) {
      ctx.metrics.result("checkpoint", "refused");
      return { kind: "untouched", reply: fail(ctx, request, ahead.error) };
    }
    const raised = await raiseLimits(ctx, request, levels[0]?.dir, admission.raises);
    if (raised) return { kind: "untouched", reply: raised };
    const planned = entryFor(request, pids, caller);
    await ctx.journal.record(planned);
    // Only now is there something to undo: a failed record left the driver untouched.
    entry = planned;
    const record = await ctx.engine.checkpoint(pids, deadline);
    ctx.metrics.record(record);
    if (!record.ok) {
      ctx.metrics.result("checkpoint", "failure");
      const why = describeFailure(record);
      const hint =
        record.failure?.code === "DEADLINE_EXCEEDED" ? `; ${overBudget(started, budgetMs, discoveryMs)}` : "";
      const reply = fail(ctx, request, `${why}${hint}`, record);
      // The engine rolled the set back; an incomplete rollback leaves the entry to a resume watcher.
      if (record.rollback?.ok === false) return { kind: "failed", reply, stranded: entry };
      await ctx.journal.complete(entry.id);
      return { kind: "failed", reply };
    }
    if (deadline.expired) {
      const why = caller.abandoned ? abandonedReason(caller) : overBudget(started, budgetMs, discoveryMs);
      const reply = fail(ctx, request, why, record);
      const stranded = await undo(ctx, entry);
      return stranded ? { kind: "failed", reply, stranded } : { kind: "failed", reply };
    }
    const undumpable = await ctx.policy.checkFrozen(context);
    if (undumpable) {
      const reply = fail(ctx, request, undumpable, record);
      const stranded = await undo(ctx, entry);
      return stranded ? { kind: "failed", reply, stranded } : { kind: "failed", reply };
    }
    await ctx.policy.recordCheckpoint(context, record, admission.snapshot);
    return { kind: "moved", entry, record };
  } catch (error) {
    // Anything unexpected after the driver was touched must not leave the GPU state in host memory with no
    // watcher to bring it back: undo, and fail this checkpoint cleanly.
    log.error({ err: error }, "GPU stage failed unexpectedly; bringing the GPU back");
    const reply = fail(ctx, request, `the GPU stage failed: ${(error as Error).message}`);
    if (!entry) {
      ctx.metrics.result("checkpoint", "failure");
      return { kind: "untouched", reply };
    }
    const stranded = await undo(ctx, entry);
    return stranded ? { kind: "failed", reply, stranded } : { kind: "failed", reply };
  }
}

/** The memory limits the staged VRAM needs, raised before the driver is touched; a reply when that failed. */
async function raiseLimits(
  ctx: StageContext,
  request: HookRequest,
  cgroup: string | undefined,
  raises: LimitRaise[],
): Promise<DaemonReply | undefined> {
  if (!cgroup || raises.length === 0) return undefined;
  try {
    await ctx.limits.raise(cgroup, { containerId: request.containerId, stage: "checkpoint" }, raises);
    return undefined;
  } catch (error) {
    ctx.metrics.result("checkpoint", "refused");
    return fail(ctx, request, `${(error as Error).message}; the container keeps running untouched`);
  }
}

const abandonedReason = (caller: CheckpointCaller): string =>
  caller.signal.reason instanceof Error
    ? caller.signal.reason.message
    : "containerd abandoned the checkpoint";

function overBudget(started: { perf: number }, budgetMs: number, discoveryMs: number): string {
  const tookMs = Math.round(performance.now() - started.perf);
  return `the GPU stage took ${tookMs} ms, over its budget of ${budgetMs} ms (discovery ${Math.round(discoveryMs)} ms): raise kybernate's --gpu-budget and the caller's checkpoint timeout (kubelet ?timeout=, crictl checkpoint --timeout)`;
}

import { stat } from "node:fs/promises";
import type { VramEstimate } from "../checkpoint/admission.js";
import type { OperationRecord } from "../gpu/engine.js";
import type { MemoryLevel } from "../host/cgroup.js";
import { filesystemOf } from "../host/filesystems.js";
import { FollowingHasher } from "../store/follow-hash.js";
import type { CheckpointCaller } from "./checkpoint-caller.js";
import { planDisk, size } from "./disk-admission.js";
import type { HookRequest } from "./protocol.js";
import { AFTER_RESUME_FACTOR, estimateCheckpoint } from "./rates.js";
import { stageLog } from "./report.js";
import type { StageContext } from "./stage-context.js";
import { type CheckpointRun, CheckpointTimeline, describePhases } from "./timeline.js";

/** CRIU's own images and its margin for error, on top of the memory it dumps. */
const IMAGE_MARGIN = 1.05;
const IMAGE_EXTRA_BYTES = 64 * 1024 * 1024;

/**
 * Before the driver is touched: the disk admission (refuses, naming the filesystem, its need and its room) and the
 * deadline estimate (warns, naming the kubelet `?timeout=` to use). Starts the checkpoint's timeline. Never throws:
 * a check that cannot run is logged and admits.
 */
export async function beforeGpuStage(
  ctx: StageContext,
  o: {
    request: HookRequest;
    caller: CheckpointCaller;
    /** The container's memory cgroups, as pre-dump read them (innermost first). */
    levels: readonly MemoryLevel[];
    startedAt: number;
    estimate?: VramEstimate;
  },
): Promise<{ ok: true } | { ok: false; error: string }> {
  const extras = ctx.checkpoint;
  const { containerId } = o.request;
  const log = stageLog(ctx, containerId, "pre-dump");
  const optedOut = ctx.containers.managed(containerId)?.pageStore === false;
  const storeDir = extras?.pages && !optedOut ? extras.pages.store.dir : undefined;
  const run: CheckpointRun = {
    timeline: new CheckpointTimeline(o.startedAt),
    withStore: storeDir !== undefined,
    ...(o.caller.imageDir ? { imageDir: o.caller.imageDir } : {}),
  };
  ctx.containers.setRun(containerId, run);
  if (!extras) return { ok: true };
  if (optedOut && extras.pages) run.timeline.selfContainedBecause = `kybernate.io/page-store is "false"`;
  try {
    const vram = o.estimate?.bytes;
    if (vram === undefined) {
      log.info(
        { source: o.estimate?.source },
        "VRAM to stage unknown: no disk admission and no deadline estimate (give --vram-estimate-mib to have them)",
      );
      return { ok: true };
    }
    const dumped = o.levels[0]?.dumpable ?? 0;
    const image = Math.round((vram + dumped) * IMAGE_MARGIN + IMAGE_EXTRA_BYTES);
    run.expectedImageBytes = image;
    if (extras.disk.enabled && o.caller.imageDir) {
      const plan = await planDisk({
        containerId,
        imageBytes: image,
        imageDir: o.caller.imageDir,
        ...(o.caller.criuLog ? { criuLog: o.caller.criuLog } : {}),
        containerdRoot: extras.disk.containerdRoot,
        ...(extras.disk.archiveDir ? { archiveDir: extras.disk.archiveDir } : {}),
        ...(storeDir ? { storeDir } : {}),
        filesystemOf: extras.filesystemOf ?? filesystemOf,
      });
      run.withStore = plan.withStore;
      const shares = plan.shares.map((s) => ({ fs: s.fs.mountPoint, bytes: s.bytes, what: s.what }));
      if (!plan.ok) return { ok: false, error: plan.error };
      if (plan.selfContainedBecause) {
        run.timeline.selfContainedBecause = plan.selfContainedBecause;
        log.warn({ reason: plan.selfContainedBecause }, "this checkpoint stays self-contained");
      }
      log.debug({ imageBytes: image, shares }, "disk admission");
    }
    warnPastDeadline(ctx, { containerId, vram, image, withStore: run.withStore });
  } catch (error) {
    log.warn({ err: error }, "disk admission and deadline estimate could not run; admitted");
  }
  return { ok: true };
}

function warnPastDeadline(
  ctx: StageContext,
  o: { containerId: string; vram: number; image: number; withStore: boolean },
): void {
  const extras = ctx.checkpoint;
  if (!extras) return;
  const estimate = estimateCheckpoint(extras.rates.current, {
    vramBytes: o.vram,
    imageBytes: o.image,
    withStore: o.withStore,
  });
  if (estimate.ms <= extras.deadlineHintMs) return;
  const s = (ms: number) => `${Math.round(ms / 1000)} s`;
  const timeout = Math.ceil((estimate.ms * 1.5) / 10_000) * 10;
  const where = estimate.measuredHere
    ? "at the rates measured on this node"
    : "at the default rates (no checkpoint measured on this node yet)";
  stageLog(ctx, o.containerId, "pre-dump").warn(
    { estimateMs: Math.round(estimate.ms), parts: estimate.parts, deadlineHintMs: extras.deadlineHintMs },
    `the checkpoint of container ${o.containerId} is estimated at ${s(estimate.ms)} (${size(o.vram)} of VRAM: GPU freeze ${s(estimate.parts.gpuFreeze)}, CRIU's dump ${s(estimate.parts.criuDump)}, containerd ${s(estimate.parts.rest)}, ${where}), past --deadline-hint ${s(extras.deadlineHintMs)}: the kubelet cuts a checkpoint at its deadline (120 s by default); call its checkpoint API with ?timeout=${timeout} (crictl checkpoint --timeout ${timeout}s)${o.withStore ? "" : ", or run kybernate with --page-store"}`,
  );
}

/** The GPU stage moved the VRAM: pre-dump ends now. */
export function gpuStageDone(ctx: StageContext, containerId: string, record?: OperationRecord): void {
  const run = ctx.containers.run(containerId);
  if (!run) return;
  run.timeline.preDumpEndAt = Date.now();
  // CRIU writes the page images next: hashing them as they grow leaves post-dump only the last chunk to read.
  if (run.withStore && run.imageDir && ctx.checkpoint?.pages)
    run.hasher = new FollowingHasher(run.imageDir).start();
  if (record) {
    run.timeline.gpuFreezeMs = record.totalMs;
    if (record.vramBytes !== undefined) run.timeline.vramBytes = record.vramBytes;
  }
}

/** The resume watcher saw the container run again (and, when there was something to thaw, the GPU back). */
export function markResumed(ctx: StageContext, containerId: string, thaw?: OperationRecord): void {
  const run = ctx.containers.run(containerId);
  if (!run) return;
  run.timeline.resumedAt ??= Date.now();
  if (thaw?.ok) run.timeline.gpuThawMs = thaw.totalMs;
}

/**
 * The checkpoint's phases, once its watcher is done: logged, counted (Prometheus), kept for `kybernate ps`, and
 * folded into this node's rates; with the page store, its archive is looked for and the store collected.
 */
export async function reportCheckpoint(
  ctx: StageContext,
  containerId: string,
  outcome: { archiveLost?: boolean } = {},
): Promise<void> {
  const run = ctx.containers.takeRun(containerId);
  if (!run) return;
  await run.hasher?.stop();
  const t = run.timeline;
  const stamp = ctx.checkpoint?.postDumpStamp?.(containerId);
  if (t.postDumpAt === undefined && stamp && t.preDumpEndAt !== undefined) {
    const at = (await stat(stamp).catch(() => undefined))?.mtimeMs;
    if (at !== undefined && at >= t.preDumpEndAt - 1000 && at <= Date.now()) t.postDumpAt = at;
  }
  const phases = t.phases();
  const log = stageLog(ctx, containerId, "resume");
  log.info(
    {
      phasesMs: phases,
      pageStore: t.stored ?? (t.selfContainedBecause ? { selfContained: t.selfContainedBecause } : undefined),
      vramBytes: t.vramBytes,
    },
    `checkpoint phases: ${describePhases(phases) || "none measured"}`,
  );
  ctx.metrics.checkpointPhases?.(phases);
  ctx.containers.annotateLast(containerId, {
    phasesMs: phases,
    ...(t.stored ? { checkpointId: t.stored.checkpointId } : {}),
    // The GPU came back at the resume, yet the checkpoint itself failed where kybernate failed it.
    ...(run.failure ? { ok: false, error: run.failure } : {}),
  });
  const extras = ctx.checkpoint;
  if (!extras) return;
  const image = t.stored?.bytes ?? run.expectedImageBytes;
  extras.rates.observe("gpuFreeze", t.vramBytes, phases.gpuFreeze);
  extras.rates.observe("criuDump", image, phases.criuDump);
  if (t.stored)
    extras.rates.observe("restWithStore", image, (phases.pageStore ?? 0) + (phases.untilResume ?? 0));
  else if (phases.untilResume !== undefined)
    extras.rates.observe("restSelfContained", image, phases.untilResume * (1 + AFTER_RESUME_FACTOR));
  await extras.rates.save().catch((error: Error) => log.debug({ err: error }, "rates not saved"));
  if (!t.stored || !extras.pages) return;
  if (outcome.archiveLost) {
    // No archive will ever name these pages (containerd abandoned the checkpoint): left in the store they would
    // count among the container's newest and push out the pages of a checkpoint whose archive does exist.
    await extras.pages.store.discard(t.stored.checkpointId);
    log.info(
      { checkpointId: t.stored.checkpointId },
      "page store: the abandoned checkpoint's pages discarded",
    );
    return;
  }
  extras.pages.afterCheckpoint(t.stored.checkpointId, t.startedAt);
}

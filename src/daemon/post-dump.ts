import { stat } from "node:fs/promises";
import type { Deadline } from "../base/deadline.js";
import { readMetadata } from "../checkpoint/metadata.js";
import type { FollowingHasher } from "../store/follow-hash.js";
import type { PagesManifest } from "../store/manifest.js";
import { newCheckpointId } from "../store/page-store.js";
import type { Watch } from "./pre-dump.js";
import type { DaemonReply, HookRequest } from "./protocol.js";
import { fail, stageLog } from "./report.js";
import type { StageContext } from "./stage-context.js";
import type { CheckpointRun } from "./timeline.js";

/**
 * CRIU has written every image and still holds the tasks (ptrace); containerd will tar the image directory once
 * CRIU is done. With the page store, the page images move into it now (renames on one filesystem, then hashing and
 * fsync of the store's copy) and a manifest takes their place, so that containerd's archive carries only metadata.
 *
 * A failure here fails the checkpoint (CRIU fails the dump when post-dump does; containerd resumes the container
 * and the resume watcher brings its GPU back): the store puts back every page image it had moved and keeps
 * nothing of it. A checkpoint that silently went self-contained instead would need the 3× disk that admission
 * did not reserve.
 */
export async function postDump(
  ctx: StageContext,
  request: HookRequest,
  deadline: Deadline,
  watch?: Watch,
): Promise<DaemonReply> {
  const run = ctx.containers.run(request.containerId);
  if (run) run.timeline.postDumpAt = Date.now();
  try {
    return await storePages(ctx, request, deadline, watch, run);
  } finally {
    if (run) run.timeline.postDumpEndAt = Date.now();
  }
}

async function storePages(
  ctx: StageContext,
  request: HookRequest,
  deadline: Deadline,
  watch: Watch | undefined,
  run: CheckpointRun | undefined,
): Promise<DaemonReply> {
  const log = stageLog(ctx, request.containerId, "post-dump");
  const pages = ctx.checkpoint?.pages;
  const node = ctx.checkpoint?.node ?? "";
  if (!pages) return { ok: true };
  if (ctx.containers.managed(request.containerId)?.pageStore === false) {
    log.info(`kybernate.io/page-store is "false": the checkpoint stays self-contained`);
    return { ok: true };
  }
  if (run && !run.withStore) return { ok: true };
  const imageDir = request.imageDir ? await ctx.host.realPath(request.imageDir) : undefined;
  if (!imageDir) {
    log.warn("CRIU gave no image directory (CRTOOLS_IMAGE_DIR): the checkpoint stays self-contained");
    return { ok: true };
  }
  // Admission decided this with the filesystems in view (the disk it reserved is the store's: a failed rename then
  // fails the checkpoint, never a silent self-contained one); a checkpoint it did not see (no CUDA process) is
  // checked here: a page image can only move by a rename.
  const [storeDev, imageDev] = run
    ? [0, 0]
    : await Promise.all([pages.store.device(), stat(imageDir).then((s) => s.dev)]).catch(() => [0, 1]);
  if (storeDev !== imageDev) {
    log.warn(
      { store: pages.store.dir, imageDir },
      "the page store is on another filesystem than CRIU's image directory: the checkpoint stays self-contained",
    );
    return { ok: true };
  }
  const checkpointId = newCheckpointId(request.containerId);
  pages.inFlight.add(checkpointId);
  const signal = AbortSignal.any([deadline.signal, ...(watch?.caller ? [watch.caller.signal] : [])]);
  try {
    const names = ctx.containers.names(request.containerId);
    const stored = await pages.store.stash({
      imageDir,
      checkpointId,
      containerId: request.containerId,
      ...names,
      node,
      ...((await gpuSummary(imageDir)) ?? {}),
      signal,
      ...(run?.hasher
        ? { digests: (names: readonly string[]) => (run.hasher as FollowingHasher).finish(names) }
        : {}),
    });
    if (!stored) {
      log.info({ imageDir }, "CRIU wrote no page image: nothing for the page store");
      return { ok: true };
    }
    const bytes = stored.manifest.files.reduce((sum, f) => sum + f.size, 0);
    if (run) run.timeline.stored = { checkpointId, bytes, files: stored.manifest.files.length };
    ctx.metrics.pageStore?.("stored", bytes);
    log.info(
      {
        checkpointId,
        files: stored.manifest.files.length,
        bytes,
        followed: stored.followed,
        ms: Object.fromEntries(Object.entries(stored.ms).map(([k, v]) => [k, Math.round(v)])),
      },
      "page images moved to the page store",
    );
    return { ok: true, data: { checkpointId, followed: stored.followed } };
  } catch (error) {
    ctx.metrics.pageStore?.("failure");
    const why = `the page store ${pages.store.dir} could not take the checkpoint's page images: ${(error as Error).message}; the checkpoint fails and the container keeps running`;
    if (run) run.failure = why;
    return fail(ctx, request, why);
  } finally {
    pages.inFlight.delete(checkpointId);
  }
}

/** What kybernate.json (written at pre-dump) says of the GPUs, for the manifest. */
async function gpuSummary(imageDir: string): Promise<{ gpu: PagesManifest["gpu"] } | undefined> {
  const meta = await readMetadata(imageDir).catch(() => undefined);
  if (!meta) return undefined;
  return {
    gpu: {
      ...(meta.driverVersion ? { driverVersion: meta.driverVersion } : {}),
      gpus: meta.gpus.map((g) => ({ uuid: g.uuid, name: g.name })),
      ...(meta.vramBytesMoved !== undefined ? { vramBytesMoved: meta.vramBytesMoved } : {}),
    },
  };
}

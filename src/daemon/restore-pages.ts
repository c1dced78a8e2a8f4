import { readFile } from "node:fs/promises";
import type { Logger } from "../base/log.js";
import { readManifest } from "../store/manifest.js";
import { StoreRefusal } from "../store/page-store.js";
import type { HookRequest } from "./protocol.js";
import type { StageContext } from "./stage-context.js";

export type PagesVerdict = { ok: true; checkpointId?: string } | { ok: false; error: string };

/**
 * Before CRIU opens any page image: a thin archive's manifest names the checkpoint whose pages this node's store
 * holds; they are verified against the store's record and linked into the restore's image directory (a hard link,
 * or a symbolic link CRIU follows; never a copy), and the restore is journalled as using them. A checkpoint whose
 * pages are not here is refused, naming it and both nodes; nothing is restored then.
 */
export async function linkPages(ctx: StageContext, request: HookRequest, log: Logger): Promise<PagesVerdict> {
  const imageDir = request.imageDir ? await ctx.host.realPath(request.imageDir) : undefined;
  if (!imageDir) return { ok: true };
  let manifest: Awaited<ReturnType<typeof readManifest>>;
  try {
    manifest = await readManifest(imageDir);
  } catch (error) {
    return { ok: false, error: `refusing to restore: ${(error as Error).message}` };
  }
  if (!manifest) return { ok: true };
  const extras = ctx.checkpoint;
  const here = extras?.node ?? "this node";
  const elsewhere = `restore it on node ${manifest.node}, or make it self-contained there with \`kybernate archive inline\``;
  const pages = extras?.pages;
  if (!pages) {
    ctx.metrics.pageStore?.("refused");
    return {
      ok: false,
      error: `checkpoint ${manifest.checkpointId} keeps its page images in the page store of node ${manifest.node}, and kybernate on this node (${here}) runs without --page-store: ${elsewhere}`,
    };
  }
  const dedup = await autoDedupProblem(extras?.criuConfigOf?.(request.containerId));
  if (dedup)
    return { ok: false, error: `refusing to link checkpoint ${manifest.checkpointId}'s pages: ${dedup}` };
  try {
    const linked = await pages.store.link(manifest, imageDir, request.containerId, here);
    ctx.metrics.pageStore?.("linked", linked.bytes);
    log.info(
      {
        checkpointId: manifest.checkpointId,
        files: linked.files,
        bytes: linked.bytes,
        method: linked.method,
      },
      "page images linked from the page store",
    );
    return { ok: true, checkpointId: manifest.checkpointId };
  } catch (error) {
    ctx.metrics.pageStore?.("refused");
    const why = (error as Error).message;
    return { ok: false, error: error instanceof StoreRefusal ? `${why}: ${elsewhere}` : why };
  }
}

/** CRIU has read the pages once the tasks run: the restore no longer uses them. */
export async function releasePages(ctx: StageContext, containerId: string): Promise<void> {
  await ctx.checkpoint?.pages?.store
    .releaseContainer(containerId)
    .catch((error: Error) =>
      ctx.log.warn({ err: error, containerId }, "the page store could not release a restore's pages"),
    );
}

/**
 * CRIU's auto-dedup punches holes into the page images it has restored: with hard links, into the store's copy.
 * The config kybernate writes ends with no-auto-dedup; one that turns it on last is refused.
 */
export async function autoDedupProblem(configPath: string | undefined): Promise<string | undefined> {
  if (!configPath) return undefined;
  const text = await readFile(configPath, "utf8").catch(() => undefined);
  if (text === undefined) return `the container's CRIU config ${configPath} cannot be read`;
  const last = text
    .split("\n")
    .map((l) => l.trim().replace(/^--/, ""))
    .filter((l) => l === "auto-dedup" || l === "no-auto-dedup")
    .pop();
  return last === "no-auto-dedup"
    ? undefined
    : `the container's CRIU config ${configPath} does not turn auto-dedup off (no-auto-dedup), and CRIU's auto-dedup would punch holes into the page store's copy`;
}

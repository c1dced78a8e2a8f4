import { randomBytes } from "node:crypto";
import type { Stats } from "node:fs";
import {
  chmod,
  link,
  lstat,
  mkdir,
  open,
  readdir,
  rename,
  rm,
  stat,
  symlink,
  unlink,
} from "node:fs/promises";
import { join } from "node:path";
import { FileRefused, readSmallRegularFile } from "../host/files.js";
import { readTarMember } from "../host/tar.js";
import { type CollectCandidate, type CollectDecision, decideCollection } from "./collect.js";
import { type FileDigest, sha256File } from "./hash.js";
import {
  CHECKPOINT_ID,
  PAGE_IMAGE,
  PAGES_MANIFEST,
  type PageFile,
  type PagesManifest,
  parseManifest,
  totalBytes,
  writeManifest,
} from "./manifest.js";

/** What the store keeps of a checkpoint beside its pages: its manifest, and where its archive went. */
export interface StoreRecord extends PagesManifest {
  storedAt: string;
  /** The archive that references these pages, once kybernate learnt where it was written. */
  archive?: string;
}

export interface StoreEntry {
  id: string;
  /** record.json is there: the pages were stored whole (it is written last). */
  complete: boolean;
  record?: StoreRecord;
  bytes: number;
  startedMs: number;
}

/** A restore using a checkpoint's pages: journalled before they are linked, removed once CRIU has read them. */
export interface InUse {
  checkpointId: string;
  containerId: string;
  since: string;
}

/** A restore this store cannot serve; `reason` says why in a sentence naming the checkpoint and this node. */
export class StoreRefusal extends Error {
  override readonly name = "StoreRefusal";
}

export interface StashInput {
  /** CRIU's image directory (a host path). */
  imageDir: string;
  checkpointId: string;
  containerId: string;
  pod?: string;
  container?: string;
  node: string;
  gpu?: PagesManifest["gpu"];
  /** The caller gave up (containerd abandoned the checkpoint): stop and put everything back. */
  signal?: AbortSignal;
  /** Digests already computed while CRIU wrote (follow-hash.ts); an image it lacks is hashed here. */
  digests?: (names: readonly string[]) => Promise<Map<string, FileDigest>>;
}

export interface StashResult {
  manifest: PagesManifest;
  /** How long the moves (renames), the hashing + fsync and the record took. */
  ms: { move: number; hashAndSync: number; record: number };
  /** Page images whose digest was followed during the dump (the rest were read again whole). */
  followed: number;
}

export interface LinkResult {
  method: "hard link" | "symbolic link";
  files: number;
  bytes: number;
}

const RECORD = "record.json";
const MAX_RECORD_BYTES = 1024 * 1024;

/** `20261201T120301Z-<container id, 12>-<6 hex>`: sortable by time, unique, and safe as a directory name. */
export function newCheckpointId(containerId: string, now = new Date()): string {
  const stamp = now
    .toISOString()
    .replace(/[-:]/g, "")
    .replace(/\.\d+Z$/, "Z");
  const ctr = containerId.replace(/[^0-9A-Za-z]/g, "").slice(0, 12) || "container";
  return `${stamp}-${ctr}-${randomBytes(3).toString("hex")}`;
}

/**
 * The node's page store: CRIU's page images of recent checkpoints, moved (renamed: same filesystem as containerd's
 * temp dir) out of CRIU's image directory so that containerd's archive carries only metadata, and linked back into
 * a restore's image directory. Layout: `checkpoints/<id>/pages-N.img` + `record.json` (written last),
 * `in-use/<id>@<container>.json` for each restore reading them. Root only (0700).
 */
export class PageStore {
  private constructor(readonly dir: string) {}

  static async open(dir: string): Promise<PageStore> {
    const store = new PageStore(dir);
    for (const d of [dir, store.checkpointsDir, store.inUseDir]) {
      await mkdir(d, { recursive: true, mode: 0o700 });
    }
    await chmod(dir, 0o700);
    return store;
  }

  private get checkpointsDir(): string {
    return join(this.dir, "checkpoints");
  }

  private get inUseDir(): string {
    return join(this.dir, "in-use");
  }

  checkpointDir(id: string): string {
    if (!CHECKPOINT_ID.test(id)) throw new Error(`not a checkpoint id: ${JSON.stringify(id.slice(0, 140))}`);
    return join(this.checkpointsDir, id);
  }

  /** The device of the store's checkpoints: an image directory on another one cannot be renamed into it. */
  async device(): Promise<number> {
    return (await stat(this.checkpointsDir)).dev;
  }

  /**
   * Moves the page images out of `imageDir` into the store, hashes and fsyncs them, leaves the manifest in their
   * place and commits the record. Undefined when the directory has no page image. On any failure (or abort)
   * everything is put back as it was — pages renamed back, manifest and store entry removed — and the error says
   * so; if even that fails, the error names what is left, and the incomplete entry is collected later.
   */
  async stash(input: StashInput): Promise<StashResult | undefined> {
    const names = await pageImages(input.imageDir);
    if (names.length === 0) return undefined;
    const target = this.checkpointDir(input.checkpointId);
    const moved: string[] = [];
    let manifestWritten = false;
    const t0 = performance.now();
    try {
      await mkdir(target, { mode: 0o700 });
      for (const name of names) {
        input.signal?.throwIfAborted();
        await rename(join(input.imageDir, name), join(target, name)).catch((error: NodeJS.ErrnoException) => {
          if (error.code === "EXDEV")
            throw new Error(
              `the page store ${this.dir} is on another filesystem than CRIU's image directory ${input.imageDir} (containerd's temp dir): put --page-store on that filesystem, so that a page image moves by a rename`,
            );
          throw error;
        });
        moved.push(name);
      }
      const t1 = performance.now();
      // The fsyncs start at once; the digests followed during the dump only need their last chunk read.
      const synced = Promise.all([...names.map((name) => syncFile(join(target, name))), syncFile(target)]);
      synced.catch(() => undefined);
      const followed = (await input.digests?.(names).catch(() => undefined)) ?? new Map<string, FileDigest>();
      const files: PageFile[] = await Promise.all(
        names.map(async (name) => {
          const path = join(target, name);
          const size = (await stat(path)).size;
          const known = followed.get(name);
          const digest = known?.size === size ? known : await sha256File(path, input.signal);
          return { name, size: digest.size, sha256: digest.sha256 };
        }),
      );
      await synced;
      input.signal?.throwIfAborted();
      const t2 = performance.now();
      const manifest: PagesManifest = {
        schema: 1,
        checkpointId: input.checkpointId,
        node: input.node,
        createdAt: new Date().toISOString(),
        containerId: input.containerId,
        ...(input.pod ? { pod: input.pod } : {}),
        ...(input.container ? { container: input.container } : {}),
        files,
        ...(input.gpu ? { gpu: input.gpu } : {}),
      };
      await writeManifest(input.imageDir, manifest);
      manifestWritten = true;
      await this.writeRecord({ ...manifest, storedAt: manifest.createdAt });
      return {
        manifest,
        ms: { move: t1 - t0, hashAndSync: t2 - t1, record: performance.now() - t2 },
        followed: files.filter((f) => followed.get(f.name)?.sha256 === f.sha256).length,
      };
    } catch (error) {
      const left = await this.putBack(input.imageDir, target, moved, manifestWritten);
      const why = (error as Error).message;
      throw new Error(
        left
          ? `${why}; and putting the page images back failed (${left}): the checkpoint fails, the store entry ${input.checkpointId} is left for collection`
          : `${why}; the page images were put back into CRIU's image directory`,
        { cause: error },
      );
    }
  }

  /** Undoes a stash; a sentence naming what could not be undone, or undefined. */
  private async putBack(
    imageDir: string,
    target: string,
    moved: readonly string[],
    manifestWritten: boolean,
  ): Promise<string | undefined> {
    const problems: string[] = [];
    if (manifestWritten) await rm(join(imageDir, PAGES_MANIFEST), { force: true }).catch(() => undefined);
    await rm(join(target, RECORD), { force: true }).catch(() => undefined);
    for (const name of moved) {
      await rename(join(target, name), join(imageDir, name)).catch((error: Error) =>
        problems.push(`${name}: ${error.message}`),
      );
    }
    if (problems.length === 0) await rm(target, { recursive: true, force: true }).catch(() => undefined);
    return problems.length ? problems.join("; ") : undefined;
  }

  private async writeRecord(record: StoreRecord): Promise<void> {
    const path = join(this.checkpointDir(record.checkpointId), RECORD);
    const temporary = `${path}.tmp`;
    const file = await open(temporary, "w", 0o600);
    try {
      await file.writeFile(`${JSON.stringify(record, null, 2)}\n`);
      await file.sync();
    } finally {
      await file.close();
    }
    await rename(temporary, path);
    await syncFile(this.checkpointDir(record.checkpointId));
  }

  async record(id: string): Promise<StoreRecord | undefined> {
    if (!CHECKPOINT_ID.test(id)) return undefined;
    let bytes: Buffer;
    try {
      bytes = await readSmallRegularFile(join(this.checkpointDir(id), RECORD), MAX_RECORD_BYTES);
    } catch (error) {
      if (error instanceof FileRefused && error.problem === "missing") return undefined;
      throw error;
    }
    return parseManifest(bytes, join(this.checkpointDir(id), RECORD)) as StoreRecord;
  }

  /** Every checkpoint directory in the store, whole or not. */
  async entries(): Promise<StoreEntry[]> {
    const names = (await readdir(this.checkpointsDir).catch(() => [])).filter((n) => CHECKPOINT_ID.test(n));
    const entries: StoreEntry[] = [];
    for (const id of names) {
      const dir = this.checkpointDir(id);
      const st = await stat(dir).catch(() => undefined);
      if (!st?.isDirectory()) continue;
      const record = await this.record(id).catch(() => undefined);
      let bytes = 0;
      for (const name of await readdir(dir).catch(() => [])) {
        if (PAGE_IMAGE.test(name)) bytes += (await stat(join(dir, name)).catch(() => undefined))?.size ?? 0;
      }
      entries.push({
        id,
        complete: record !== undefined,
        ...(record ? { record } : {}),
        bytes,
        startedMs: st.birthtimeMs || st.ctimeMs,
      });
    }
    return entries.sort((a, b) => a.id.localeCompare(b.id));
  }

  /**
   * Links the pages a manifest names into a restore's image directory: a hard link, or a symbolic link (CRIU
   * follows it) when the directory is on another filesystem; never a copy. Refuses, before anything is linked and
   * with the checkpoint id and this node named, when the store lacks the checkpoint or holds other files than the
   * manifest says. The restore is journalled as using the pages before the first link.
   */
  async link(
    manifest: PagesManifest,
    imageDir: string,
    containerId: string,
    node: string,
  ): Promise<LinkResult> {
    const record = await this.holding(manifest, node);
    await this.markInUse(record.checkpointId, containerId);
    const linked: string[] = [];
    let method: LinkResult["method"] = "hard link";
    try {
      for (const f of record.files) {
        const from = join(this.checkpointDir(record.checkpointId), f.name);
        const to = join(imageDir, f.name);
        const there = await lstat(to).catch(() => undefined);
        if (there)
          throw new StoreRefusal(
            `checkpoint ${manifest.checkpointId}: the restore's image directory already holds ${f.name} beside the page manifest; the archive is not one kybernate wrote`,
          );
        try {
          await link(from, to);
        } catch (error) {
          if ((error as NodeJS.ErrnoException).code !== "EXDEV") throw error;
          await symlink(from, to);
          method = "symbolic link";
        }
        linked.push(to);
      }
    } catch (error) {
      for (const path of linked) await unlink(path).catch(() => undefined);
      await this.release(record.checkpointId, containerId);
      if (error instanceof StoreRefusal) throw error;
      throw new StoreRefusal(
        `checkpoint ${manifest.checkpointId}: linking its page images into ${imageDir} failed: ${(error as Error).message}`,
      );
    }
    return { method, files: linked.length, bytes: totalBytes(record) };
  }

  /**
   * The store's record of the checkpoint a manifest names, checked against it (the same files, sizes and sha256)
   * and against the files on disk (there, regular, of their size); a StoreRefusal naming the checkpoint and this
   * node otherwise.
   */
  async holding(manifest: PagesManifest, node: string): Promise<StoreRecord> {
    const record = await this.record(manifest.checkpointId).catch((error: Error) => {
      throw new StoreRefusal(
        `the page store ${this.dir} of node ${node} cannot read checkpoint ${manifest.checkpointId}'s record: ${error.message}`,
      );
    });
    if (!record)
      throw new StoreRefusal(
        `checkpoint ${manifest.checkpointId} keeps its page images in the page store of node ${manifest.node}, and the page store ${this.dir} of this node (${node}) does not have them`,
      );
    await this.verify(record, manifest, node);
    return record;
  }

  private async verify(record: StoreRecord, manifest: PagesManifest, node: string): Promise<void> {
    const mismatch = differences(record.files, manifest.files);
    if (mismatch)
      throw new StoreRefusal(
        `checkpoint ${manifest.checkpointId}: the archive's page manifest does not match what the page store ${this.dir} of node ${node} holds (${mismatch})`,
      );
    for (const f of record.files) {
      const st = await lstat(join(this.checkpointDir(record.checkpointId), f.name)).catch(() => undefined);
      if (!st?.isFile() || st.size !== f.size)
        throw new StoreRefusal(
          `checkpoint ${manifest.checkpointId}: ${f.name} in the page store ${this.dir} of node ${node} is ${st ? `${st.size} bytes, not ${f.size}` : "missing"}`,
        );
    }
  }

  /** Starts an entry that something else fills (`kybernate archive thin`); commit() makes it whole. */
  async begin(checkpointId: string): Promise<string> {
    const dir = this.checkpointDir(checkpointId);
    await mkdir(dir, { mode: 0o700 });
    return dir;
  }

  /** Makes an entry begun with begin() whole: its files fsynced, then its record written. */
  async commit(record: StoreRecord): Promise<void> {
    const dir = this.checkpointDir(record.checkpointId);
    await Promise.all(record.files.map((f) => syncFile(join(dir, f.name))));
    await syncFile(dir);
    await this.writeRecord(record);
  }

  async discard(checkpointId: string): Promise<void> {
    await rm(this.checkpointDir(checkpointId), { recursive: true, force: true });
  }

  private inUsePath(checkpointId: string, containerId: string): string {
    const ctr = containerId.replace(/[^0-9A-Za-z_-]/g, "_").slice(0, 128);
    this.checkpointDir(checkpointId);
    return join(this.inUseDir, `${checkpointId}@${ctr}.json`);
  }

  async markInUse(checkpointId: string, containerId: string): Promise<void> {
    const entry: InUse = { checkpointId, containerId, since: new Date().toISOString() };
    const path = this.inUsePath(checkpointId, containerId);
    const file = await open(`${path}.tmp`, "w", 0o600);
    try {
      await file.writeFile(JSON.stringify(entry));
      await file.sync();
    } finally {
      await file.close();
    }
    await rename(`${path}.tmp`, path);
  }

  async release(checkpointId: string, containerId: string): Promise<void> {
    await rm(this.inUsePath(checkpointId, containerId), { force: true });
  }

  /** Releases whatever `containerId` was restoring from (it was removed, or its restore ended). */
  async releaseContainer(containerId: string): Promise<string[]> {
    const released: string[] = [];
    for (const u of await this.inUse()) {
      if (u.containerId !== containerId) continue;
      await this.release(u.checkpointId, u.containerId);
      released.push(u.checkpointId);
    }
    return released;
  }

  async inUse(): Promise<InUse[]> {
    const out: InUse[] = [];
    for (const name of await readdir(this.inUseDir).catch(() => [])) {
      if (!name.endsWith(".json")) continue;
      try {
        const bytes = await readSmallRegularFile(join(this.inUseDir, name), 64 * 1024);
        const u = JSON.parse(bytes.toString("utf8")) as InUse;
        if (typeof u.checkpointId === "string" && typeof u.containerId === "string") out.push(u);
      } catch {
        // A torn write never reached its rename; only whole entries count.
      }
    }
    return out;
  }

  /** Records where the archive that references a checkpoint went, so that its pages go once it is gone. */
  async setArchive(checkpointId: string, archive: string): Promise<boolean> {
    const record = await this.record(checkpointId);
    if (!record) return false;
    if (record.archive === archive) return true;
    await this.writeRecord({ ...record, archive });
    return true;
  }

  /** Deletes one checkpoint's pages, unless a restore uses them. */
  async remove(checkpointId: string): Promise<"removed" | "in use" | "absent"> {
    const dir = this.checkpointDir(checkpointId);
    if ((await this.inUse()).some((u) => u.checkpointId === checkpointId)) return "in use";
    const there = await stat(dir).catch(() => undefined);
    if (!there) return "absent";
    await rm(dir, { recursive: true, force: true });
    return "removed";
  }

  /**
   * Collects: keeps the newest `keep` complete checkpoints of each container, deletes those whose recorded archive
   * is gone (or now references another checkpoint), and incomplete ones older than `incompleteAfterMs`; never one
   * a restore uses, nor one in `inFlight`.
   */
  async collect(options: {
    keep: number;
    inFlight?: ReadonlySet<string>;
    incompleteAfterMs?: number;
    now?: number;
  }): Promise<CollectDecision & { freedBytes: number }> {
    const entries = await this.entries();
    const inUse = new Set((await this.inUse()).map((u) => u.checkpointId));
    const candidates: CollectCandidate[] = [];
    for (const e of entries) {
      const archive = e.record?.archive;
      candidates.push({
        id: e.id,
        containerId: e.record?.containerId ?? "",
        createdAt: e.record?.createdAt ?? "",
        complete: e.complete,
        startedMs: e.startedMs,
        ...(archive ? { archiveGone: !(await archiveReferences(archive, e.id)) } : {}),
      });
    }
    const decision = decideCollection(candidates, {
      keep: options.keep,
      inUse,
      ...(options.inFlight ? { inFlight: options.inFlight } : {}),
      now: options.now ?? Date.now(),
      incompleteAfterMs: options.incompleteAfterMs ?? 60 * 60 * 1000,
    });
    let freedBytes = 0;
    for (const { id } of decision.remove) {
      freedBytes += entries.find((e) => e.id === id)?.bytes ?? 0;
      await rm(this.checkpointDir(id), { recursive: true, force: true });
    }
    return { ...decision, freedBytes };
  }
}

/** Whether the archive at `path` still exists and still names this checkpoint in its page manifest. */
export async function archiveReferences(path: string, checkpointId: string): Promise<boolean> {
  const st: Stats | undefined = await stat(path).catch(() => undefined);
  return !!st?.isFile() && (await archiveCheckpointId(path)) === checkpointId;
}

/** The checkpoint id an archive's page manifest names (undefined: a self-contained archive, or not a tar). */
export async function archiveCheckpointId(path: string): Promise<string | undefined> {
  const bytes = await readTarMember(path, `checkpoint/${PAGES_MANIFEST}`);
  if (!bytes) return undefined;
  try {
    return parseManifest(bytes, path).checkpointId;
  } catch {
    return undefined;
  }
}

async function pageImages(dir: string): Promise<string[]> {
  const names: string[] = [];
  for (const name of (await readdir(dir)).sort()) {
    if (!PAGE_IMAGE.test(name)) continue;
    const st = await lstat(join(dir, name));
    if (st.isFile()) names.push(name);
  }
  return names;
}

async function syncFile(path: string): Promise<void> {
  const handle = await open(path, "r");
  try {
    await handle.datasync();
  } finally {
    await handle.close();
  }
}

function differences(stored: readonly PageFile[], claimed: readonly PageFile[]): string | undefined {
  const byName = new Map(stored.map((f) => [f.name, f]));
  for (const f of claimed) {
    const s = byName.get(f.name);
    if (!s) return `${f.name} is not in the store`;
    if (s.size !== f.size) return `${f.name}: ${f.size} bytes in the manifest, ${s.size} in the store`;
    if (s.sha256 !== f.sha256) return `${f.name}: the sha256 differs`;
  }
  if (stored.length !== claimed.length)
    return `the store holds ${stored.length} page images, the manifest names ${claimed.length}`;
  return undefined;
}

import { createHash } from "node:crypto";
import { open, rm, stat } from "node:fs/promises";
import { basename, dirname, join, resolve } from "node:path";
import { normaliseName, readTarMembers, type TarHeader, TarReader, TarWriter } from "../host/tar.js";
import {
  manifestProblem,
  PAGE_IMAGE,
  PAGES_MANIFEST,
  type PageFile,
  type PagesManifest,
  parseManifest,
  totalBytes,
} from "./manifest.js";
import { newCheckpointId, type PageStore } from "./page-store.js";

/** Called as the input is read: bytes of it done, of how many. */
export type RewriteProgress = (done: number, total: number) => void;

export interface RewriteResult {
  checkpointId: string;
  /** Bytes of page images put into (inline) or taken out of (thin) the archive. */
  pageBytes: number;
  pageFiles: number;
  outputBytes: number;
}

/** Thrown for an archive that is not what the command needs (already self-contained, already thin, not CRI). */
export class ArchiveRefused extends Error {
  override readonly name = "ArchiveRefused";
}

const CHECKPOINT_DIR = "checkpoint";

/** `checkpoint/<name>` of a CRI archive (a leading ./ allowed): the name, else undefined. */
function inCheckpointDir(name: string): string | undefined {
  const n = normaliseName(name);
  return dirname(n) === CHECKPOINT_DIR ? basename(n) : undefined;
}

/**
 * A thin archive (page images in this node's store, a manifest in their place) made self-contained: one pass over
 * the input; where the manifest was, each page image is written from the store, its sha256 checked as it streams
 * (a mismatch fails the command and removes the output); the manifest is left out. What `kybernate image build`
 * needs before it packs an archive, and what another node restores without a store.
 */
export async function inlineArchive(o: {
  input: string;
  output: string;
  store: PageStore;
  node: string;
  onProgress?: RewriteProgress;
}): Promise<RewriteResult> {
  const total = (await stat(o.input)).size;
  const reader = await TarReader.open(o.input);
  let writer: TarWriter | undefined;
  let manifest: PagesManifest | undefined;
  try {
    writer = await TarWriter.create(o.output);
    for (let h = await reader.next(); h; h = await reader.next()) {
      const name = inCheckpointDir(h.name);
      if (name === PAGES_MANIFEST) {
        if (manifest) throw new ArchiveRefused(`${o.input} has two page manifests`);
        manifest = parseManifest(await reader.readSmall(), `${o.input}: ${h.name}`);
        const record = await o.store.holding(manifest, o.node);
        const dir = dirname(normaliseName(h.name));
        for (const f of record.files) await putPages(writer, o.store, record.checkpointId, f, dir, h);
      } else {
        if (name && PAGE_IMAGE.test(name) && manifest)
          throw new ArchiveRefused(
            `${o.input} holds ${name} beside its page manifest: not an archive kybernate wrote`,
          );
        await copyMember(reader, writer, h);
      }
      o.onProgress?.(reader.position, total);
    }
    if (!manifest)
      throw new ArchiveRefused(
        `${o.input} has no page manifest (checkpoint/${PAGES_MANIFEST}): it is self-contained already`,
      );
    await writer.finish();
    o.onProgress?.(total, total);
    return {
      checkpointId: manifest.checkpointId,
      pageBytes: totalBytes(manifest),
      pageFiles: manifest.files.length,
      outputBytes: writer.position,
    };
  } catch (error) {
    await writer?.close().catch(() => undefined);
    writer = undefined;
    // A partial archive must not be mistaken for a whole one: nothing of it is left.
    await rm(o.output, { force: true }).catch(() => undefined);
    throw error;
  } finally {
    await writer?.close();
    await reader.close();
  }
}

async function putPages(
  writer: TarWriter,
  store: PageStore,
  checkpointId: string,
  f: PageFile,
  dir: string,
  like: TarHeader,
): Promise<void> {
  const path = join(store.checkpointDir(checkpointId), f.name);
  const handle = await open(path, "r");
  try {
    await writer.header({
      ...like,
      name: `${dir}/${f.name}`,
      type: "0",
      size: f.size,
      mode: 0o600,
      linkname: "",
    });
    const hash = createHash("sha256");
    const buffer = Buffer.allocUnsafe(8 * 1024 * 1024);
    let done = 0;
    while (done < f.size) {
      const { bytesRead } = await handle.read(buffer, 0, Math.min(buffer.length, f.size - done), done);
      if (bytesRead === 0) throw new Error(`${path} ended at ${done} of ${f.size} bytes`);
      const chunk = buffer.subarray(0, bytesRead);
      hash.update(chunk);
      await writer.write(chunk);
      done += bytesRead;
    }
    await writer.endData(f.size);
    const sha256 = hash.digest("hex");
    if (sha256 !== f.sha256)
      throw new Error(
        `${path} does not hold what checkpoint ${checkpointId} stored: its sha256 is ${sha256}, the record says ${f.sha256}; the store's copy is damaged`,
      );
  } finally {
    await handle.close();
  }
}

async function copyMember(reader: TarReader, writer: TarWriter, h: TarHeader): Promise<void> {
  await writer.header(h);
  const hasData = !"123456".includes(h.type);
  if (!hasData) return;
  await reader.pipe((chunk) => writer.write(chunk));
  await writer.endData(h.size);
}

/**
 * A self-contained archive arriving at a node with a page store, made thin: one pass; each page image goes into the
 * store (hashed as it is written), a manifest takes its place, the rest is copied. The store records the output as
 * the checkpoint's archive, so its pages go once the archive does.
 */
export async function thinArchive(o: {
  input: string;
  output: string;
  store: PageStore;
  node: string;
  onProgress?: RewriteProgress;
}): Promise<RewriteResult> {
  const total = (await stat(o.input)).size;
  // One walk over the headers for the three small members this needs.
  const small = await readTarMembers(
    o.input,
    [`${CHECKPOINT_DIR}/${PAGES_MANIFEST}`, "config.dump", `${CHECKPOINT_DIR}/kybernate.json`],
    { maxBytes: 8 * 1024 * 1024 },
  ).catch(() => ({ found: new Map<string, Buffer>() }));
  if (small.found.has(`${CHECKPOINT_DIR}/${PAGES_MANIFEST}`))
    throw new ArchiveRefused(
      `${o.input} is thin already: it has a page manifest (checkpoint/${PAGES_MANIFEST})`,
    );
  const config = jsonObject(small.found.get("config.dump"));
  if (!config) throw new ArchiveRefused(`${o.input} is not a CRI checkpoint archive: it has no config.dump`);
  const gpuMeta = jsonObject(small.found.get(`${CHECKPOINT_DIR}/kybernate.json`));
  const containerId = typeof config.id === "string" ? config.id : "archive";
  const checkpointId = newCheckpointId(containerId);
  const storeDir = await o.store.begin(checkpointId);
  const reader = await TarReader.open(o.input);
  let writer: TarWriter | undefined;
  const files: PageFile[] = [];
  try {
    writer = await TarWriter.create(o.output);
    let checkpointDir: TarHeader | undefined;
    for (let h = await reader.next(); h; h = await reader.next()) {
      const name = inCheckpointDir(h.name);
      if (normaliseName(h.name) === CHECKPOINT_DIR && h.type === "5") checkpointDir = h;
      if (name && PAGE_IMAGE.test(name) && h.type === "0") {
        files.push(await takePages(reader, join(storeDir, name), name, h.size));
      } else {
        await copyMember(reader, writer, h);
      }
      o.onProgress?.(reader.position, total);
    }
    if (files.length === 0)
      throw new ArchiveRefused(
        `${o.input} holds no page image (checkpoint/pages-N.img): nothing to make thin`,
      );
    const metaGpus = Array.isArray(gpuMeta?.gpus)
      ? (gpuMeta.gpus as Array<{ uuid: string; name: string }>)
      : [];
    const manifest: PagesManifest = {
      schema: 1,
      checkpointId,
      node: o.node,
      createdAt: new Date().toISOString(),
      containerId,
      ...(typeof gpuMeta?.pod === "string" ? { pod: gpuMeta.pod } : {}),
      ...(typeof gpuMeta?.container === "string" ? { container: gpuMeta.container } : {}),
      files: files.sort((a, b) => a.name.localeCompare(b.name)),
      ...(gpuMeta
        ? {
            gpu: {
              ...(typeof gpuMeta.driverVersion === "string" ? { driverVersion: gpuMeta.driverVersion } : {}),
              gpus: metaGpus.map((g) => ({ uuid: String(g.uuid), name: String(g.name) })),
              ...(typeof gpuMeta.vramBytesMoved === "number"
                ? { vramBytesMoved: gpuMeta.vramBytesMoved }
                : {}),
            },
          }
        : {}),
    };
    // Built from the archive's own (untrusted) kybernate.json: checked as a restore will check it, so this never
    // writes an archive its own restore refuses.
    const problem = manifestProblem(manifest);
    if (problem)
      throw new ArchiveRefused(
        `${o.input}: its checkpoint/kybernate.json cannot describe the pages: ${problem}`,
      );
    const like: TarHeader = checkpointDir ?? {
      name: CHECKPOINT_DIR,
      type: "5",
      size: 0,
      mode: 0o755,
      uid: 0,
      gid: 0,
      mtime: Math.floor(Date.now() / 1000),
      uname: "",
      gname: "",
      linkname: "",
    };
    await writer.file(
      { ...like, name: `${CHECKPOINT_DIR}/${PAGES_MANIFEST}`, mode: 0o644 },
      Buffer.from(`${JSON.stringify(manifest, null, 2)}\n`),
    );
    await writer.finish();
    await o.store.commit({ ...manifest, storedAt: manifest.createdAt, archive: resolve(o.output) });
    o.onProgress?.(total, total);
    return {
      checkpointId,
      pageBytes: totalBytes(manifest),
      pageFiles: files.length,
      outputBytes: writer.position,
    };
  } catch (error) {
    await writer?.close().catch(() => undefined);
    writer = undefined;
    await rm(o.output, { force: true }).catch(() => undefined);
    await o.store.discard(checkpointId).catch(() => undefined);
    throw error;
  } finally {
    await writer?.close();
    await reader.close();
  }
}

async function takePages(reader: TarReader, path: string, name: string, size: number): Promise<PageFile> {
  const handle = await open(path, "wx", 0o600);
  const hash = createHash("sha256");
  try {
    await reader.pipe(async (chunk) => {
      hash.update(chunk);
      let done = 0;
      while (done < chunk.length) done += (await handle.write(chunk, done, chunk.length - done)).bytesWritten;
    });
  } finally {
    await handle.close();
  }
  return { name, size, sha256: hash.digest("hex") };
}

function jsonObject(bytes: Buffer | undefined): Record<string, unknown> | undefined {
  if (!bytes) return undefined;
  try {
    const v = JSON.parse(bytes.toString("utf8")) as unknown;
    return typeof v === "object" && v !== null && !Array.isArray(v)
      ? (v as Record<string, unknown>)
      : undefined;
  } catch {
    return undefined;
  }
}

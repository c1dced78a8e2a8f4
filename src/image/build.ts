/**
 * An OCI checkpoint image from a CRI checkpoint archive, in one pass over the archive: its bytes are hashed
 * (the layer's diff_id), scanned (metadata, refusals) and, compressed or not, written to an OCI layout or
 * streamed to a registry as they are read. Nothing of the archive but its metadata files is held in memory.
 */
import { createHash, randomBytes } from "node:crypto";
import { createReadStream, createWriteStream } from "node:fs";
import { copyFile, link, mkdir, rename, rm, stat, symlink, writeFile } from "node:fs/promises";
import { basename, dirname, join } from "node:path";
import { type Readable, Transform, Writable } from "node:stream";
import { pipeline } from "node:stream/promises";
import { create as createTar } from "tar";
import { type ArchiveScan, archiveScanner } from "./archive-scan.js";
import { compressor } from "./compress.js";
import {
  CONTAINERD_IMAGE_NAME_ANNOTATION,
  type Compression,
  type Descriptor,
  type ImageConfig,
  type ImageIndex,
  type ImageManifest,
  LAYER_MEDIA_TYPE,
  MEDIA_TYPE,
  OCI_LAYOUT,
  ociArchitecture,
  REF_NAME_ANNOTATION,
} from "./oci.js";
import { formatReference, type ImageReference } from "./reference.js";
import type { RegistryClient } from "./registry.js";

export interface ImageDescription {
  /** Manifest annotations. */
  annotations: Record<string, string>;
  /** Image config labels. */
  labels: Record<string, string>;
}

export interface BuildOptions {
  archive: string;
  reference: ImageReference;
  compression?: Compression;
  level?: number;
  /** An OCI layout: a folder, or a tar when the path ends in .tar. */
  output?: string;
  /** Push to the reference's registry with this client. */
  registry?: RegistryClient;
  /** What the image says about the checkpoint, from the archive's scan; throwing refuses the build. */
  describe: (scan: ArchiveScan) => ImageDescription;
  onProgress?: (bytesRead: number, totalBytes: number) => void;
  now?: Date;
}

export interface BuiltImage {
  reference: string;
  manifestDigest: string;
  manifest: ImageManifest;
  config: ImageConfig;
  layer: Descriptor & { diffId: string };
  archiveBytes: number;
  output?: string;
}

/** Where the layer goes while it is being made; committed under its digest once it is known, or dropped. */
interface BlobSink {
  stream?: Writable;
  commit(digest: string): Promise<void>;
  abort(): Promise<void>;
}

const sha256 = (b: Buffer): string => `sha256:${createHash("sha256").update(b).digest("hex")}`;

export async function buildCheckpointImage(o: BuildOptions): Promise<BuiltImage> {
  const compression = o.compression ?? "none";
  if (!o.output && !o.registry)
    throw new Error("nowhere to put the image: give an output path or a registry");
  if (!o.reference.tag)
    throw new Error("the image reference needs a tag (REF:TAG): a checkpoint image is pushed by tag");
  const archiveBytes = (await stat(o.archive)).size;
  const created = (o.now ?? new Date()).toISOString();

  // Only what this build made is removed after a failure: an output that is already there is refused.
  if (o.output && (await exists(o.output)))
    throw new Error(`${o.output} already exists: remove it or give another output path`);
  const layoutDir = o.output
    ? o.output.endsWith(".tar")
      ? join(dirname(o.output), `.${basename(o.output)}.${randomBytes(4).toString("hex")}.tmp`)
      : o.output
    : undefined;
  if (layoutDir) await mkdir(join(layoutDir, "blobs", "sha256"), { recursive: true });

  const sinks: BlobSink[] = [];
  try {
    // An uncompressed layer IS the archive: a layout gets it by link (or copy), not through the pipe.
    if (layoutDir)
      sinks.push(
        compression === "none"
          ? archiveLinkSink(o.archive, layoutDir, !!o.output?.endsWith(".tar"))
          : fileSink(layoutDir),
      );
    if (o.registry) sinks.push(await registrySink(o.registry, o.reference.repository));

    const raw = hashing();
    const { parser, done: scanned } = archiveScanner();
    let read = 0;
    const counter = new Transform({
      transform(chunk: Buffer, _enc, cb) {
        read += chunk.length;
        o.onProgress?.(read, archiveBytes);
        cb(null, chunk);
      },
    });
    const squeeze = compressor(compression, o.level);
    const packed = hashing();
    const layerTargets = sinks.flatMap((s) => (s.stream ? [s.stream] : []));
    const source = createReadStream(o.archive, { highWaterMark: 4 * 2 ** 20 });
    // A refused archive stops the read at once: nothing more is uploaded or written.
    scanned.catch((err: Error) => source.destroy(err));
    const readSide = pipeline(
      source,
      counter,
      raw.tap,
      fanOut([parserSink(parser), ...(squeeze ? [squeeze] : layerTargets)]),
    );
    const writeSide = squeeze
      ? pipeline(squeeze as Readable, packed.tap, fanOut(layerTargets))
      : Promise.resolve();
    await Promise.all([readSide, writeSide, scanned]);
    const scan = await scanned;
    if (read !== archiveBytes)
      throw new Error(
        `${o.archive} changed while it was read (${read} of ${archiveBytes} bytes): checkpoint again`,
      );
    const diffId = raw.digest();
    const layer: Descriptor & { diffId: string } = squeeze
      ? { mediaType: LAYER_MEDIA_TYPE[compression], digest: packed.digest(), size: packed.size(), diffId }
      : { mediaType: LAYER_MEDIA_TYPE.none, digest: diffId, size: archiveBytes, diffId };

    const description = o.describe(scan);
    const config: ImageConfig = {
      created,
      architecture: ociArchitecture(),
      os: "linux",
      config: { Labels: description.labels },
      rootfs: { type: "layers", diff_ids: [diffId] },
      history: [{ created, created_by: "kybernate image build", comment: basename(o.archive) }],
    };
    const configBytes = Buffer.from(JSON.stringify(config));
    const { diffId: _, ...layerDescriptor } = layer;
    const manifest: ImageManifest = {
      schemaVersion: 2,
      mediaType: MEDIA_TYPE.manifest,
      config: { mediaType: MEDIA_TYPE.config, digest: sha256(configBytes), size: configBytes.length },
      layers: [layerDescriptor],
      annotations: description.annotations,
    };
    const manifestBytes = Buffer.from(JSON.stringify(manifest));
    const manifestDigest = sha256(manifestBytes);

    for (const sink of sinks) await sink.commit(layer.digest);
    sinks.length = 0;
    const reference = formatReference({ ...o.reference, digest: undefined } as ImageReference);
    if (layoutDir) {
      await writeLayout(layoutDir, {
        configBytes,
        manifestBytes,
        manifestDigest,
        reference,
        tag: o.reference.tag,
      });
      if (o.output?.endsWith(".tar")) {
        await createTar({ file: o.output, cwd: layoutDir, portable: true, follow: true }, [
          "oci-layout",
          "index.json",
          "blobs",
        ]);
        await rm(layoutDir, { recursive: true, force: true });
      }
    }
    if (o.registry) {
      await o.registry.putBlob(o.reference.repository, manifest.config.digest, configBytes);
      await o.registry.putManifest(
        o.reference.repository,
        o.reference.tag,
        manifestBytes,
        MEDIA_TYPE.manifest,
      );
    }
    return {
      reference,
      manifestDigest,
      manifest,
      config,
      layer,
      archiveBytes,
      ...(o.output ? { output: o.output } : {}),
    };
  } catch (err) {
    for (const sink of sinks) await sink.abort().catch(() => undefined);
    if (layoutDir) await rm(layoutDir, { recursive: true, force: true }).catch(() => undefined);
    if (o.output?.endsWith(".tar")) await rm(o.output, { force: true }).catch(() => undefined);
    throw err;
  }
}

async function exists(path: string): Promise<boolean> {
  return stat(path).then(
    () => true,
    () => false,
  );
}

async function writeLayout(
  dir: string,
  b: { configBytes: Buffer; manifestBytes: Buffer; manifestDigest: string; reference: string; tag: string },
): Promise<void> {
  const blob = (digest: string) => join(dir, "blobs", "sha256", digest.slice("sha256:".length));
  await writeFile(blob(sha256(b.configBytes)), b.configBytes);
  await writeFile(blob(b.manifestDigest), b.manifestBytes);
  await writeFile(join(dir, "oci-layout"), JSON.stringify(OCI_LAYOUT));
  const index: ImageIndex = {
    schemaVersion: 2,
    mediaType: MEDIA_TYPE.index,
    manifests: [
      {
        mediaType: MEDIA_TYPE.manifest,
        digest: b.manifestDigest,
        size: b.manifestBytes.length,
        annotations: { [REF_NAME_ANNOTATION]: b.tag, [CONTAINERD_IMAGE_NAME_ANNOTATION]: b.reference },
      },
    ],
  };
  await writeFile(join(dir, "index.json"), JSON.stringify(index));
}

function hashing(): { tap: Transform; digest(): string; size(): number } {
  const h = createHash("sha256");
  let n = 0;
  let hex: string | undefined;
  const tap = new Transform({
    transform(chunk: Buffer, _enc, cb) {
      h.update(chunk);
      n += chunk.length;
      cb(null, chunk);
    },
  });
  return {
    tap,
    digest: () => {
      hex ??= h.digest("hex");
      return `sha256:${hex}`;
    },
    size: () => n,
  };
}

/** Writes each chunk to every target and waits for the slowest; ends them all at the end. */
function fanOut(targets: Writable[]): Writable {
  return new Writable({
    highWaterMark: 4 * 2 ** 20,
    write(chunk: Buffer, _enc, cb) {
      const waits = targets.filter((t) => !t.write(chunk)).map(drained);
      if (waits.length === 0) cb();
      else Promise.all(waits).then(() => cb(), cb);
    },
    final(cb) {
      Promise.all(
        targets.map(
          (t) =>
            new Promise<void>((resolve, reject) => {
              if (t.writableFinished) return resolve();
              t.once("finish", resolve);
              t.once("error", reject);
              t.end();
            }),
        ),
      ).then(() => cb(), cb);
    },
  });
}

/** The scanner as a stream target; its own errors come through its `done`, not through the pipe. */
function parserSink(parser: ReturnType<typeof archiveScanner>["parser"]): Writable {
  return new Writable({
    highWaterMark: 4 * 2 ** 20,
    write(chunk: Buffer, _enc, cb) {
      if (parser.write(chunk)) cb();
      else parser.once("drain", () => cb());
    },
    final(cb) {
      parser.once("end", () => cb());
      parser.end();
    },
  });
}

/** A target's drain; a target that fails or closes first (a dropped upload) fails the write instead of hanging it. */
function drained(t: Writable): Promise<void> {
  return new Promise((resolve, reject) => {
    const done = (err?: Error) => {
      t.off("drain", onDrain);
      t.off("error", done);
      t.off("close", onClose);
      if (err) reject(err);
      else resolve();
    };
    const onDrain = () => done();
    const onClose = () => done(new Error("the blob's destination closed before the layer was written"));
    t.once("drain", onDrain);
    t.once("error", done);
    t.once("close", onClose);
  });
}

function fileSink(layoutDir: string): BlobSink {
  const tmp = join(layoutDir, "blobs", "sha256", `.layer-${randomBytes(4).toString("hex")}.tmp`);
  const stream = createWriteStream(tmp);
  return {
    stream,
    commit: async (digest) => {
      await rename(tmp, join(layoutDir, "blobs", "sha256", digest.slice("sha256:".length)));
    },
    abort: async () => {
      stream.destroy();
      await rm(tmp, { force: true });
    },
  };
}

/** The archive under its digest: a hard link where the file system allows, else a copy (or, for a layout
 * that is only a step to a tar, a symbolic link the tar follows). */
function archiveLinkSink(archive: string, layoutDir: string, temporary: boolean): BlobSink {
  let target: string | undefined;
  return {
    commit: async (digest) => {
      target = join(layoutDir, "blobs", "sha256", digest.slice("sha256:".length));
      await rm(target, { force: true });
      if (temporary) return symlink(archive, target);
      await link(archive, target).catch(() => copyFile(archive, target as string));
    },
    abort: async () => {
      if (target) await rm(target, { force: true });
    },
  };
}

async function registrySink(client: RegistryClient, repository: string): Promise<BlobSink> {
  const upload = await client.startUpload(repository);
  return { stream: upload.stream, commit: (digest) => upload.finish(digest), abort: () => upload.abort() };
}

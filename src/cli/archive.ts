import { access, constants, stat } from "node:fs/promises";
import { resolve } from "node:path";
import { list, type ReadEntry } from "tar";
import type { StringMap } from "../cri/types.js";
import { CliError } from "./cli-error.js";

/** What a restore needs to know about the checkpointed container, read from the archive's metadata files. */
export interface CheckpointInfo {
  /** Absolute: containerd opens the archive itself. */
  path: string;
  sizeBytes: number;
  /** The container's id when it was checkpointed. */
  originalId: string;
  /** The CRI container name (metadata.name), e.g. "worker". */
  containerName: string;
  podName?: string;
  podNamespace?: string;
  podUid?: string;
  /** The container's CRI labels and annotations (status.dump), when the archive has them. */
  labels: StringMap;
  annotations: StringMap;
  image?: string;
  checkpointedAt?: string;
}

// containerd writes these next to the CRIU images (FACTS §1); the rest of the archive is left unread.
const METADATA = ["config.dump", "spec.dump", "status.dump"] as const;
type MetadataFile = (typeof METADATA)[number];
/** They are a few KiB; a bigger one means this is not what we think it is. */
const MAX_METADATA_BYTES = 8 * 2 ** 20;

const entryName = (p: string): string => p.replace(/^(\.\/)+/, "");

/** Reads config.dump, spec.dump and status.dump out of a CRI checkpoint tar without extracting anything else. */
export async function readCheckpointArchive(file: string): Promise<CheckpointInfo> {
  const path = resolve(file);
  let sizeBytes: number;
  try {
    const st = await stat(path);
    if (!st.isFile()) throw new CliError(`${path} is not a file: give the checkpoint archive (a .tar)`, 2);
    sizeBytes = st.size;
    await access(path, constants.R_OK);
  } catch (err) {
    if (err instanceof CliError) throw err;
    const code = (err as NodeJS.ErrnoException).code;
    if (code === "ENOENT") throw new CliError(`no checkpoint archive at ${path}: check the path`, 2);
    throw new CliError(`cannot read ${path}: ${(err as Error).message} (run as root?)`, 2);
  }

  const found = new Map<MetadataFile, Buffer>();
  let tooBig: string | undefined;
  try {
    await list({
      file: path,
      strict: true,
      filter: (p) => (METADATA as readonly string[]).includes(entryName(p)),
      onReadEntry: (entry: ReadEntry) => {
        const name = entryName(entry.path) as MetadataFile;
        if (entry.size > MAX_METADATA_BYTES) {
          tooBig = `${name} (${entry.size} bytes)`;
          entry.resume();
          return;
        }
        const chunks: Buffer[] = [];
        entry.on("data", (c: Buffer) => chunks.push(c));
        entry.on("end", () => found.set(name, Buffer.concat(chunks)));
      },
    });
  } catch (err) {
    throw new CliError(
      `${path} is not a readable tar archive (${(err as Error).message}); give the .tar that ` +
        "kybernate checkpoint, crictl checkpoint or the kubelet checkpoint API wrote",
      2,
    );
  }
  if (tooBig) throw new CliError(`${path}: ${tooBig} is far too large for checkpoint metadata`, 2);
  const config = found.get("config.dump");
  if (!config) {
    throw new CliError(
      `${path} is not a CRI checkpoint archive: it has no config.dump (archives from kybernate checkpoint, ` +
        "crictl checkpoint or the kubelet API have one; ctr checkpoints are images, not archives)",
      2,
    );
  }
  if (!found.has("spec.dump")) {
    throw new CliError(
      `${path} has config.dump but no spec.dump: the archive is incomplete, checkpoint again`,
      2,
    );
  }
  const cfg = parseJson(path, "config.dump", config);
  const spec = parseJson(path, "spec.dump", found.get("spec.dump") as Buffer);
  const status = found.has("status.dump")
    ? parseJson(path, "status.dump", found.get("status.dump") as Buffer)
    : {};
  const specAnnotations = stringMap(spec.annotations);
  const statusMeta = isObject(status.metadata) ? status.metadata : {};

  // CRI's name lives in status.dump and as an OCI annotation; config.dump only has containerd's
  // "name_pod_namespace_uid_attempt" form, the last resort.
  const containerName =
    str(statusMeta.name) ??
    specAnnotations["io.kubernetes.cri.container-name"] ??
    str(cfg.name)?.split("_")[0];
  if (!containerName) {
    throw new CliError(`${path}: neither status.dump, spec.dump nor config.dump names the container`, 2);
  }
  const info: CheckpointInfo = {
    path,
    sizeBytes,
    originalId: str(cfg.id) ?? "",
    containerName,
    labels: stringMap(status.labels),
    annotations: stringMap(status.annotations),
  };
  const optional: Array<[keyof CheckpointInfo, string | undefined]> = [
    ["podName", specAnnotations["io.kubernetes.cri.sandbox-name"]],
    ["podNamespace", specAnnotations["io.kubernetes.cri.sandbox-namespace"]],
    ["podUid", specAnnotations["io.kubernetes.cri.sandbox-uid"]],
    ["image", str(cfg.rootfsImageName) ?? str(cfg.rootfsImage)],
    ["checkpointedAt", str(cfg.checkpointedTime)],
  ];
  for (const [k, v] of optional) if (v) (info as unknown as Record<string, string>)[k] = v;
  return info;
}

type Json = Record<string, unknown>;

const isObject = (v: unknown): v is Json => typeof v === "object" && v !== null && !Array.isArray(v);
const str = (v: unknown): string | undefined => (typeof v === "string" && v !== "" ? v : undefined);

function stringMap(v: unknown): StringMap {
  if (!isObject(v)) return {};
  return Object.fromEntries(Object.entries(v).filter((e): e is [string, string] => typeof e[1] === "string"));
}

function parseJson(path: string, name: string, data: Buffer): Json {
  let v: unknown;
  try {
    v = JSON.parse(data.toString("utf8"));
  } catch (err) {
    throw new CliError(`${path}: ${name} is not JSON (${(err as Error).message}); the archive is damaged`, 2);
  }
  if (!isObject(v))
    throw new CliError(`${path}: ${name} does not hold a JSON object; the archive is damaged`, 2);
  return v;
}

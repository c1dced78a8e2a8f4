/**
 * What kybernate puts into a checkpoint image besides the archive: the annotations (containerd's and CRI-O's
 * checkpoint keys, kybernate's GPU metadata) and, as an image config label, what a restore replays (mounts,
 * devices, environment, labels), so that `kybernate restore REF` needs no second read of a large layer. And
 * the way back: an image in a registry, checked, as the source of a restore.
 */
import { createHash } from "node:crypto";
import { status as grpcStatus } from "@grpc/grpc-js";
import { version } from "../base/version.js";
import { type CheckpointMetadata, metadataProblem, stagedBytesOf } from "../checkpoint/metadata.js";
import type { DeviceSpec, MountSpec } from "../cri/client.js";
import type { StringMap } from "../cri/types.js";
import type { ArchiveScan } from "../image/archive-scan.js";
import type { ImageDescription } from "../image/build.js";
import {
  AnnotationError,
  type CheckpointImageInfo,
  checkpointAnnotations,
  RESTORE_SPEC_LABEL,
  readCheckpointAnnotations,
} from "../image/checkpoint-annotations.js";
import { credentialsFor } from "../image/docker-config.js";
import { checkConfig, checkManifest, type ImageManifest } from "../image/oci.js";
import { formatReference, type ImageReference, parseReference } from "../image/reference.js";
import { RegistryClient } from "../image/registry.js";
import { type CheckpointInfo, checkpointInfoFromFiles } from "./archive.js";
import { CliError } from "./cli-error.js";

/** What a restore replays, as the archive's metadata gives it (CheckpointInfo without the file). */
export type RestoreSpec = Pick<
  CheckpointInfo,
  | "containerName"
  | "podName"
  | "podNamespace"
  | "podUid"
  | "labels"
  | "annotations"
  | "mounts"
  | "devices"
  | "env"
  | "image"
  | "checkpointedAt"
  | "logPath"
>;

export const THIN_ARCHIVE =
  "archive has no page images; run kybernate archive inline first (an image must be self-contained)";

/** The annotations and labels of the image built from this archive; refuses what cannot be restored. */
export function describeArchive(
  path: string,
  sizeBytes: number,
  scan: ArchiveScan,
): ImageDescription & { info: CheckpointInfo; gpu: CheckpointImageInfo } {
  if (scan.pagemaps > 0 && scan.pageImages === 0) throw new CliError(`${path}: ${THIN_ARCHIVE}`, 2);
  const info = checkpointInfoFromFiles(path, sizeBytes, scan.files);
  const metadata = gpuMetadata(path, scan.files.get("checkpoint/kybernate.json"));
  const pod = info.podNamespace && info.podName ? `${info.podNamespace}/${info.podName}` : undefined;
  const gpu: CheckpointImageInfo = {
    containerName: info.containerName,
    ...(pod ? { pod } : {}),
    kybernateVersion: metadata?.kybernateVersion ?? version,
    gpus: (metadata?.gpus ?? []).map((g) => ({ uuid: g.uuid, name: g.name, memoryMiB: g.memoryMiB })),
    ...(metadata?.driverVersion ? { driverVersion: metadata.driverVersion } : {}),
    ...(metadata ? { vramBytes: stagedBytesOf(metadata) ?? 0 } : {}),
  };
  let annotations: Record<string, string>;
  try {
    annotations = checkpointAnnotations({
      ...gpu,
      created: new Date().toISOString(),
      ...(info.image ? { rootfsImage: info.image } : {}),
    });
  } catch (err) {
    throw new CliError(`${path}: ${(err as Error).message}`, 2);
  }
  const spec: RestoreSpec = {
    containerName: info.containerName,
    labels: info.labels,
    annotations: info.annotations,
    mounts: info.mounts,
    devices: info.devices,
    env: info.env,
  };
  for (const k of ["podName", "podNamespace", "podUid", "image", "checkpointedAt", "logPath"] as const)
    if (info[k]) spec[k] = info[k];
  return { annotations, labels: { [RESTORE_SPEC_LABEL]: JSON.stringify(spec) }, info, gpu };
}

/** kybernate.json of the archive, enough of it for the annotations; absent: a checkpoint without GPU state. */
function gpuMetadata(path: string, bytes: Buffer | undefined): CheckpointMetadata | undefined {
  if (!bytes) return undefined;
  let v: unknown;
  try {
    v = JSON.parse(bytes.toString("utf8"));
  } catch {
    throw new CliError(`${path}: checkpoint/kybernate.json is not JSON; the archive is damaged`, 2);
  }
  // The same schema check as the daemon's restore (checkpoint/metadata.ts), so an image never carries what its
  // restore would refuse.
  const problem = metadataProblem(v);
  if (problem)
    throw new CliError(
      `${path}: checkpoint/kybernate.json is not kybernate checkpoint metadata of schema 1 (${problem}; written by a newer kybernate? Upgrade kybernate here)`,
      2,
    );
  return v as CheckpointMetadata;
}

export interface RegistryArgs {
  registryConfig?: string;
  plainHttp?: boolean;
}

/** The options of every command that talks to a registry (yargs `.options(REGISTRY_OPTIONS)`). */
export const REGISTRY_OPTIONS = {
  "registry-config": {
    type: "string",
    describe: "Docker config.json with the registry's credentials (default ~/.docker/config.json)",
  },
  "plain-http": {
    type: "boolean",
    describe: "speak plain HTTP to the registry (default: only for localhost and 127.x)",
  },
} as const;

/** The registry options as given, without the absent ones. */
export const registryArgs = (a: RegistryArgs): RegistryArgs => ({
  ...(a.registryConfig ? { registryConfig: a.registryConfig } : {}),
  ...(a.plainHttp !== undefined ? { plainHttp: a.plainHttp } : {}),
});

export async function registryClient(ref: ImageReference, o: RegistryArgs): Promise<RegistryClient> {
  let credentials: Awaited<ReturnType<typeof credentialsFor>>;
  try {
    credentials = await credentialsFor(ref.registry, o.registryConfig);
  } catch (err) {
    throw new CliError((err as Error).message, 2);
  }
  return new RegistryClient(ref.registry, {
    ...(o.plainHttp !== undefined ? { plainHttp: o.plainHttp } : {}),
    ...(credentials ? { credentials } : {}),
  });
}

export function parseRef(text: string, option = "the image reference"): ImageReference {
  try {
    return parseReference(text);
  } catch (err) {
    throw new CliError(`${option}: ${(err as Error).message}`, 2);
  }
}

/** A checkpoint image in a registry, checked, with what a restore needs. */
export interface ImageCheckpoint {
  reference: string;
  /** REF@sha256:… of the manifest that was checked: what is pulled is what was checked. */
  pinned: string;
  manifest: ImageManifest;
  info: CheckpointImageInfo;
  spec: RestoreSpec;
  registry: RegistryClient;
}

/**
 * Reads and checks a checkpoint image's manifest and config from its registry, before anything is pulled:
 * the media types, one tar layer, the checkpoint annotations and kybernate's GPU metadata, the restore spec.
 */
export async function readImageCheckpoint(text: string, o: RegistryArgs): Promise<ImageCheckpoint> {
  const ref = parseRef(text);
  const registry = await registryClient(ref, o);
  const where = formatReference(ref);
  const refuse = (why: string): never => {
    throw new CliError(`refusing to restore ${where}: ${why}; nothing was restored`, 2);
  };
  let got: Awaited<ReturnType<RegistryClient["getManifest"]>>;
  try {
    got = await registry.getManifest(ref.repository, ref.digest ?? ref.tag ?? "latest");
  } catch (err) {
    throw new CliError(
      `cannot read ${where}: ${(err as Error).message}`,
      (err as { status?: number }).status === 404 ? 2 : 1,
    );
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(got.body.toString("utf8"));
  } catch {
    refuse("its manifest is not JSON");
  }
  let manifest: ImageManifest;
  let info: CheckpointImageInfo;
  try {
    manifest = checkManifest(parsed, got.mediaType);
    info = readCheckpointAnnotations(manifest.annotations);
  } catch (err) {
    return refuse(
      err instanceof AnnotationError
        ? `not a kybernate checkpoint image: ${err.message}`
        : (err as Error).message,
    );
  }
  let configBytes: Buffer;
  try {
    configBytes = await registry.getBlob(ref.repository, manifest.config.digest, 1024 * 1024);
  } catch (err) {
    throw new CliError(`cannot read the config of ${where}: ${(err as Error).message}`);
  }
  if (`sha256:${createHash("sha256").update(configBytes).digest("hex")}` !== manifest.config.digest)
    refuse("its config blob does not match the digest its manifest names");
  let spec: RestoreSpec | undefined;
  try {
    const config = checkConfig(JSON.parse(configBytes.toString("utf8")));
    const label = config.config?.Labels?.[RESTORE_SPEC_LABEL];
    spec = label ? restoreSpec(JSON.parse(label)) : undefined;
  } catch (err) {
    refuse(err instanceof SyntaxError ? "its config is not JSON" : (err as Error).message);
  }
  if (!spec)
    return refuse(
      `its config has no ${RESTORE_SPEC_LABEL} label (the mounts, devices and environment to replay): build it with kybernate image build`,
    );
  if (spec.containerName !== info.containerName)
    refuse(`its ${RESTORE_SPEC_LABEL} label and its annotations name different containers`);
  const digest = got.digest || `sha256:${createHash("sha256").update(got.body).digest("hex")}`;
  return {
    reference: where,
    pinned: formatReference({ registry: ref.registry, repository: ref.repository, digest }),
    manifest,
    info,
    spec,
    registry,
  };
}

type Json = Record<string, unknown>;
const isObject = (v: unknown): v is Json => typeof v === "object" && v !== null && !Array.isArray(v);
const isStringMap = (v: unknown): v is StringMap =>
  isObject(v) && Object.values(v).every((x) => typeof x === "string");

/** The restore spec label, checked field by field: it came from a registry. */
function restoreSpec(v: unknown): RestoreSpec {
  const bad = (field: string): never => {
    throw new Error(`its ${RESTORE_SPEC_LABEL} label has a malformed ${field}`);
  };
  if (!isObject(v)) return bad("value");
  if (typeof v.containerName !== "string" || !v.containerName) bad("containerName");
  for (const k of ["labels", "annotations", "env"] as const) if (!isStringMap(v[k])) bad(k);
  const absolute = (p: unknown) => typeof p === "string" && p.startsWith("/") && !p.split("/").includes("..");
  if (
    !Array.isArray(v.mounts) ||
    !v.mounts.every((m) => isObject(m) && absolute(m.containerPath) && absolute(m.hostPath))
  )
    bad("mounts");
  if (
    !Array.isArray(v.devices) ||
    !v.devices.every((d) => isObject(d) && absolute(d.containerPath) && absolute(d.hostPath))
  )
    bad("devices");
  for (const k of ["podName", "podNamespace", "podUid", "image", "checkpointedAt", "logPath"] as const)
    if (v[k] !== undefined && typeof v[k] !== "string") bad(k);
  const spec = v as unknown as RestoreSpec;
  return {
    ...spec,
    mounts: (v.mounts as Json[]).map((m) => ({
      containerPath: m.containerPath as string,
      hostPath: m.hostPath as string,
      readonly: m.readonly === true,
      ...(typeof m.propagation === "string"
        ? { propagation: m.propagation as MountSpec["propagation"] }
        : {}),
    })),
    devices: (v.devices as Json[]).map(
      (d): DeviceSpec => ({
        containerPath: d.containerPath as string,
        hostPath: d.hostPath as string,
        permissions: "rwm",
      }),
    ),
  };
}

/** A CRI PullImage failure in words: a bad layer or manifest is the image's fault, not the node's. */
export function explainPullFailure(ref: string, err: Error & { code?: number }): string {
  const m = err.message;
  if (
    /unexpected EOF|failed size validation|digest mismatch|unexpected commit digest|short read|invalid tar|failed to extract layer|archive\/tar/i.test(
      m,
    )
  )
    return `the image ${ref} is damaged (its layer does not match what its manifest says, or is not a complete tar): ${m}; rebuild and push it again`;
  if (err.code === grpcStatus.NOT_FOUND || /not found/i.test(m)) return `the registry has no ${ref}: ${m}`;
  return `pulling ${ref} failed: ${m}`;
}

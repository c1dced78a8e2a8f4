import { access, constants, stat } from "node:fs/promises";
import { resolve } from "node:path";
import type { DeviceSpec, MountSpec } from "../cri/client.js";
import type { MountPropagation, StringMap } from "../cri/types.js";
import { readTarMembers } from "../host/tar.js";
import { MAX_METADATA_BYTES } from "../image/archive-scan.js";
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
  /**
   * What containerd takes from the restore REQUEST, not from the archive (as the kubelet takes it from the
   * pod spec): the original bind mounts (status.dump), device nodes and environment (spec.dump). A GPU
   * container restored without its /dev/nvidia* devices and driver mounts cannot run.
   */
  mounts: MountSpec[];
  devices: DeviceSpec[];
  env: StringMap;
  /** Where the original container's log went (status.dump), absolute; its content travels as container.log. */
  logPath?: string;
}

/** Set by containerd itself for every container: replaying them would only duplicate them. */
const RUNTIME_ENV = new Set(["HOSTNAME"]);
/**
 * The mounts containerd gives every container whose request has none at these paths (its
 * linuxContainerMounts: the pod's hostname, hosts, resolv.conf and shm). Dropped from the replay so that the
 * restored container gets its new pod's; every other bind mount (the kubelet's termination-log, volumes,
 * service-account tokens, hostPaths) is replayed, or CRIU fails with "mnt: No mapping for …".
 */
export const RUNTIME_MOUNTS: readonly string[] = [
  "/etc/hostname",
  "/etc/hosts",
  "/etc/resolv.conf",
  "/dev/shm",
];

// containerd writes these next to the CRIU images (checkpoint/) in every CRI archive; the rest is left unread.
const METADATA = ["config.dump", "spec.dump", "status.dump"] as const;

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

  let read: Awaited<ReturnType<typeof readTarMembers>>;
  try {
    // Headers only, seeking over the page images: the archive may hold a hundred GiB of them.
    read = await readTarMembers(path, METADATA, { maxBytes: MAX_METADATA_BYTES });
  } catch (err) {
    throw new CliError(
      `${path} is not a readable tar archive (${(err as Error).message}); give the .tar that ` +
        "kybernate checkpoint, crictl checkpoint or the kubelet checkpoint API wrote",
      2,
    );
  }
  const [tooBig] = [...read.tooLarge].map(([name, size]) => `${name} (${size} bytes)`);
  if (tooBig) throw new CliError(`${path}: ${tooBig} is far too large for checkpoint metadata`, 2);
  return checkpointInfoFromFiles(path, sizeBytes, read.found);
}

/** The checkpoint's description from its metadata files (config.dump, spec.dump, status.dump), read elsewhere. */
export function checkpointInfoFromFiles(
  path: string,
  sizeBytes: number,
  found: ReadonlyMap<string, Buffer>,
): CheckpointInfo {
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
    mounts: originalMounts(status.mounts),
    devices: originalDevices(spec.linux),
    env: originalEnv(spec.process),
  };
  const logPath = str(status.log_path) ?? str(status.logPath);
  if (logPath) info.logPath = logPath;
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

/** Go's JSON of CRI's MountPropagation enum is its number. */
const PROPAGATION: Record<number, MountPropagation> = {
  1: "PROPAGATION_HOST_TO_CONTAINER",
  2: "PROPAGATION_BIDIRECTIONAL",
};

function originalMounts(mounts: unknown): MountSpec[] {
  if (!Array.isArray(mounts)) return [];
  return mounts.filter(isObject).flatMap((m) => {
    const containerPath = str(m.container_path) ?? str(m.containerPath);
    const hostPath = str(m.host_path) ?? str(m.hostPath);
    if (!containerPath || !hostPath || RUNTIME_MOUNTS.includes(containerPath.replace(/\/+$/, ""))) return [];
    const mount: MountSpec = { containerPath, hostPath, readonly: m.readonly === true };
    const propagation = typeof m.propagation === "number" ? PROPAGATION[m.propagation] : undefined;
    if (propagation) mount.propagation = propagation;
    return [mount];
  });
}

function originalDevices(linux: unknown): DeviceSpec[] {
  if (!isObject(linux) || !Array.isArray(linux.devices)) return [];
  return linux.devices.filter(isObject).flatMap((d) => {
    const path = str(d.path);
    // Device nodes keep their path on the host (/dev/nvidia0 is /dev/nvidia0 on every GPU node).
    return path ? [{ containerPath: path, hostPath: path, permissions: "rwm" }] : [];
  });
}

function originalEnv(processSpec: unknown): StringMap {
  if (!isObject(processSpec) || !Array.isArray(processSpec.env)) return {};
  const env: StringMap = {};
  for (const entry of processSpec.env) {
    if (typeof entry !== "string") continue;
    const eq = entry.indexOf("=");
    if (eq <= 0 || RUNTIME_ENV.has(entry.slice(0, eq))) continue;
    env[entry.slice(0, eq)] = entry.slice(eq + 1);
  }
  return env;
}

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

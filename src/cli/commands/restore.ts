import { randomUUID } from "node:crypto";
import { existsSync, mkdirSync } from "node:fs";
import { join } from "node:path";
import type { ArgumentsCamelCase, Argv, CommandModule } from "yargs";
import { DEVICE_MAP_ANNOTATION, gpuRequestOf, resolveGpuRequest } from "../../checkpoint/gpu-request.js";
import { planRestore } from "../../checkpoint/restore-plan.js";
import type { ContainerSpec, CriClient, MountSpec } from "../../cri/client.js";
import type { In, PodSandboxConfig } from "../../cri/types.js";
import { NvidiaSmiProbe } from "../../host/nvidia-smi.js";
import { readCheckpointArchive } from "../archive.js";
import {
  explainPullFailure,
  type ImageCheckpoint,
  REGISTRY_OPTIONS,
  type RegistryArgs,
  type RestoreSpec,
  readImageCheckpoint,
  registryArgs,
} from "../checkpoint-image.js";
import { CliError, exitWithError } from "../cli-error.js";
import { type EndpointArgs, openCri, withEndpoints } from "../endpoints.js";
import { podConfigFromStatus } from "../pod-config.js";
import { type ProgressOptions, seconds, withProgress } from "../progress.js";
import { resolvePod, shortId } from "../resolve.js";

/** containerd unpacks the archive and pulls the base image in CreateContainer; CRIU restores in StartContainer. */
export const DEFAULT_RESTORE_TIMEOUT_S = 300;
/** The kubelet's root for container logs (--pod-logs-dir): <root>/<namespace>_<pod>_<uid>/<container>/<n>.log. */
export const DEFAULT_POD_LOG_ROOT = "/var/log/pods";

export interface RestoreOptions {
  cri: CriClient;
  /** A checkpoint archive (a path) or a checkpoint image (a reference). */
  archive: string;
  /** An existing pod (id, prefix, name or namespace/name); absent: a new host-network pod. */
  pod?: string;
  /** The restored container's name; default: the checkpointed container's. */
  name?: string;
  /** Seconds each of CreateContainer and StartContainer may take (and the pull of an image). */
  timeoutS?: number;
  /** Where a new pod's container logs go; the kubelet's layout below it. */
  logRoot?: string;
  /** The GPUs the restored container is given (NVIDIA_VISIBLE_DEVICES: UUIDs, indices or "all"). */
  gpus?: string;
  /** An explicit UUID device map (`OLD=NEW,…`), put on the new pod as kybernate.io/device-map. */
  deviceMap?: string;
  /** Registry access for an image source. */
  registry?: RegistryArgs;
  /** nvidia-smi, to check an image's GPUs against this node's before pulling; false: leave it to the daemon. */
  nvidiaSmi?: string | false;
  progress?: ProgressOptions;
  now?: () => Date;
}

export interface RestoreResult {
  containerId: string;
  name: string;
  podId: string;
  /** "namespace/name". */
  pod: string;
  createdPod: boolean;
  /** What was restored: the archive's path or the image reference. */
  from: string;
  checkpoint: RestoreSpec;
  /** The restored container's log file, when its pod has a log directory. */
  logPath?: string;
  /** Image sources: how long the pull took. */
  pullMs?: number;
  createMs: number;
  startMs: number;
  ms: number;
}

/** A name for the new pod: the original's plus when, short enough for a DNS label in most cases. */
export function restoredPodName(original: string, at: Date): string {
  const t = at.toISOString();
  return `${original}-restored-${t.slice(5, 7)}${t.slice(8, 10)}-${t.slice(11, 13)}${t.slice(14, 16)}${t.slice(17, 19)}`;
}

/** A path names an archive; anything else that parses as HOST/PATH:TAG is an image. */
export function isArchiveArgument(text: string): boolean {
  return existsSync(text) || /^(\/|\.\.?\/)/.test(text) || text.endsWith(".tar") || !text.includes("/");
}

/**
 * Restore through CRI (containerd 2.1–2.3): CreateContainer whose image is the archive or the pulled checkpoint
 * image, then StartContainer, which runs `runc restore`. The CLI only creates host-network pods: a pod on the
 * CNI network needs the kubelet's (or crictl's) network setup; restore into such a pod with --pod.
 */
export async function restoreArchive(o: RestoreOptions): Promise<RestoreResult> {
  const timeoutS = o.timeoutS ?? DEFAULT_RESTORE_TIMEOUT_S;
  if (!(timeoutS > 0))
    throw new CliError(`--timeout must be a positive number of seconds, got ${timeoutS}`, 2);
  // Only a pod's annotation reaches the daemon (containerd's restore keeps the checkpoint's container
  // annotations), and an existing pod's cannot change.
  if (o.deviceMap !== undefined && o.pod)
    throw new CliError(
      `--device-map is set on the new pod the restore makes (${DEVICE_MAP_ANNOTATION}); it cannot be added to the existing pod ${o.pod}: leave out --pod, or give that pod the annotation when it is made`,
      2,
    );
  const fromImage = !isArchiveArgument(o.archive);
  let image: ImageCheckpoint | undefined;
  let spec: RestoreSpec;
  let from: string;
  if (fromImage) {
    image = await readImageCheckpoint(o.archive, o.registry ?? {});
    spec = image.spec;
    from = image.reference;
    if (o.nvidiaSmi !== false) await checkGpus(image, o);
  } else {
    const info = await readCheckpointArchive(o.archive);
    spec = info;
    from = info.path;
  }
  const name = o.name ?? spec.containerName;
  const env = { ...spec.env, ...(o.gpus ? { NVIDIA_VISIBLE_DEVICES: o.gpus } : {}) };
  refuseMissingMounts(from, spec.mounts);
  // Refused before any pod exists.
  const auth = image?.registry.credentialsForPull();
  if (image && auth && "registryToken" in auth)
    throw new CliError(
      `the credentials for ${image.reference} are a registry token, which containerd's pull does not take (its CRI ParseAuth leaves RegistryToken to do): give a user and password in --registry-config`,
      2,
    );

  let podId: string;
  let podConfig: In<PodSandboxConfig>;
  let createdPod = false;
  if (o.pod) {
    const pod = await resolvePod(o.cri, o.pod);
    if (pod.state !== "SANDBOX_READY") {
      throw new CliError(
        `pod ${describePod(pod.metadata, pod.id)} is not ready (${pod.state}): restore into a running pod`,
        2,
      );
    }
    podId = pod.id;
    podConfig = podConfigFromStatus(await o.cri.podSandboxStatus(pod.id, true));
    const clash = (await o.cri.listContainers({ podSandboxId: pod.id })).find(
      (c) => c.metadata?.name === name && c.metadata.attempt === 0,
    );
    if (clash) {
      throw new CliError(
        `pod ${describePod(pod.metadata, pod.id)} already has a container named ${name} (${shortId(clash.id)}): ` +
          "pass --name for the restored one, or remove that container",
        2,
      );
    }
  } else {
    const podName = restoredPodName(spec.podName ?? spec.containerName, (o.now ?? (() => new Date()))());
    const ns = spec.podNamespace ?? "default";
    const uid = randomUUID();
    const pod = await o.cri.runHostNetworkPod(podName, ns, {
      uid,
      annotations: {
        "kybernate.io/restored-from": from,
        ...(o.deviceMap !== undefined ? { [DEVICE_MAP_ANNOTATION]: o.deviceMap } : {}),
      },
      logDirectory: join(o.logRoot ?? DEFAULT_POD_LOG_ROOT, `${ns}_${podName}_${uid}`),
    });
    podId = pod.podId;
    podConfig = pod.config;
    createdPod = true;
  }
  const podText = `${podConfig.metadata?.namespace}/${podConfig.metadata?.name}`;
  // The kubelet's log layout; the folder must exist before CreateContainer, which copies the checkpoint's
  // container.log there (and silently skips it when the folder is missing).
  const logDirectory = podConfig.logDirectory ? String(podConfig.logDirectory) : "";
  const logPath = logDirectory ? join(name, "0.log") : undefined;

  const started = Date.now();
  let containerId: string | undefined;
  let pullMs: number | undefined;
  let createMs = 0;
  let startMs = 0;
  try {
    // Inside the try: a folder that cannot be made undoes the pod made for it.
    if (logPath) mkdirSync(join(logDirectory, name), { recursive: true, mode: 0o755 });
    let imageForCreate = from;
    let userSpecifiedImage: string | undefined;
    if (image) {
      const img = image;
      const t = Date.now();
      try {
        // What was checked is what is pulled: by digest. The kubelet then names the image id it got back.
        imageForCreate = await withProgress(
          `pulling ${img.reference}`,
          () =>
            o.cri.pullImage(img.pinned, {
              podConfig,
              timeoutMs: timeoutS * 1000,
              ...(auth ? { auth } : {}),
            }),
          o.progress,
        );
      } catch (err) {
        throw new Error(explainPullFailure(img.reference, err as Error & { code?: number }));
      }
      pullMs = Date.now() - t;
      userSpecifiedImage = img.reference;
    }
    const containerSpec: Omit<ContainerSpec, "name" | "image"> = {
      labels: spec.labels,
      annotations: spec.annotations,
      mounts: spec.mounts,
      devices: spec.devices,
      env,
      ...(logPath ? { logPath } : {}),
      ...(userSpecifiedImage ? { userSpecifiedImage } : {}),
    };
    const t1 = Date.now();
    containerId = await withProgress(
      `creating ${name} in pod ${podText} from ${from}`,
      () =>
        image
          ? o.cri.createContainer(
              podId,
              podConfig,
              { ...containerSpec, name, image: imageForCreate },
              { timeoutMs: timeoutS * 1000 },
            )
          : o.cri.restoreFromArchive(podId, podConfig, from, name, containerSpec, {
              timeoutMs: timeoutS * 1000,
            }),
      o.progress,
    );
    createMs = Date.now() - t1;
    const id = containerId;
    const t2 = Date.now();
    await withProgress(
      `restoring ${name} (${shortId(id)})`,
      () => o.cri.startContainer(id, { timeoutMs: timeoutS * 1000 }),
      o.progress,
    );
    startMs = Date.now() - t2;
  } catch (err) {
    const undone = await undo(o.cri, containerId, createdPod ? podId : undefined);
    throw new CliError(
      `the restore of ${from} into pod ${podText} failed: ${(err as Error).message}` +
        (undone ? `\n  ${undone}` : "") +
        (/deadline|DEADLINE_EXCEEDED/i.test((err as Error).message)
          ? "\n  a large checkpoint needs more time: raise --timeout"
          : ""),
    );
  }
  return {
    containerId,
    name,
    podId,
    pod: podText,
    createdPod,
    from,
    checkpoint: spec,
    ...(logPath ? { logPath: join(logDirectory, logPath) } : {}),
    ...(pullMs !== undefined ? { pullMs } : {}),
    createMs,
    startMs,
    ms: Date.now() - started,
  };
}

/**
 * runc cannot bind a path that is not there, and CRIU cannot restore without the mount: say which one before
 * anything is created (a kubelet's pod folder, for one, is gone once its pod is).
 */
function refuseMissingMounts(from: string, mounts: MountSpec[]): void {
  const missing = mounts.filter((m) => !existsSync(m.hostPath));
  if (missing.length === 0) return;
  throw new CliError(
    `cannot restore ${from}: the checkpointed container had ${missing.length === 1 ? "a bind mount" : "bind mounts"} ` +
      `whose host path is missing here: ${missing.map((m) => `${m.containerPath} from ${m.hostPath}`).join(", ")}; ` +
      "CRIU restores a container only with every mount it had: create them (or restore on the node that has them)",
    2,
  );
}

/** The image's GPUs against this node's, before pulling: the daemon refuses the same at pre-restore, later. */
async function checkGpus(image: ImageCheckpoint, o: RestoreOptions): Promise<void> {
  if (image.info.gpus.length === 0) return;
  const inventory = await new NvidiaSmiProbe(o.nvidiaSmi || "nvidia-smi").inventory();
  if (inventory.gpus.length === 0) return;
  const env = Object.entries({
    ...image.spec.env,
    ...(o.gpus ? { NVIDIA_VISIBLE_DEVICES: o.gpus } : {}),
  }).map(([k, v]) => `${k}=${v}`);
  const given = resolveGpuRequest(gpuRequestOf([], env), inventory.gpus);
  const requested = o.deviceMap;
  const plan = planRestore(
    {
      schema: 1,
      kybernateVersion: image.info.kybernateVersion ?? "",
      createdAt: "",
      containerId: "",
      gpus: image.info.gpus.map((g) => ({ uuid: g.uuid, name: g.name, memoryMiB: g.memoryMiB ?? 0 })),
      processes: [],
      ...(image.info.driverVersion ? { driverVersion: image.info.driverVersion } : {}),
    },
    inventory,
    given,
    requested,
  );
  if (!plan.ok) throw new CliError(`${image.reference}: ${plan.error}`, 2);
}

/** Leaves nothing half-made behind a failed restore; says what it removed or could not. */
async function undo(
  cri: CriClient,
  containerId: string | undefined,
  podId: string | undefined,
): Promise<string> {
  const done: string[] = [];
  if (containerId) {
    await cri
      .removeContainer(containerId)
      .then(() => done.push(`removed the container it created (${shortId(containerId)})`))
      .catch((e: Error) =>
        done.push(`could not remove the container it created (${shortId(containerId)}): ${e.message}`),
      );
  }
  if (podId) {
    await cri
      .stopAndRemovePod(podId)
      .then(() => done.push(`removed the pod it created (${shortId(podId)})`))
      .catch((e: Error) =>
        done.push(`could not remove the pod it created (${shortId(podId)}): ${e.message}`),
      );
  }
  return done.join("; ");
}

function describePod(meta: { name: string; namespace: string } | null, id: string): string {
  return meta ? `${meta.namespace}/${meta.name}` : shortId(id);
}

interface RestoreArgs extends EndpointArgs {
  archive: string;
  pod?: string;
  newPod?: boolean;
  name?: string;
  timeout: number;
  logRoot: string;
  gpus?: string;
  deviceMap?: string;
  registryConfig?: string;
  plainHttp?: boolean;
  nvidiaSmi: string;
}

export const restoreCommand: CommandModule<object, RestoreArgs> = {
  command: "restore <archive>",
  describe:
    "Restore a checkpoint archive or checkpoint image through CRI into a new host-network pod (default) or an existing pod",
  builder: (yargs: Argv) =>
    withEndpoints(
      yargs
        .positional("archive", {
          type: "string",
          demandOption: true,
          describe: "the checkpoint .tar, or a checkpoint image HOST/PATH:TAG (kybernate image build)",
        })
        .option("pod", {
          type: "string",
          describe: "restore into this running pod (id, id prefix, name, namespace/name)",
        })
        .option("new-pod", {
          type: "boolean",
          describe:
            "restore into a new host-network pod <pod>-restored-<time> in the original namespace (default)",
        })
        .conflicts("pod", "new-pod")
        .option("name", {
          type: "string",
          describe: "the restored container's name (default: the original's)",
        })
        .option("gpus", {
          type: "string",
          describe: "the GPUs the restored container is given (NVIDIA_VISIBLE_DEVICES: UUIDs, indices, all)",
        })
        .option("device-map", {
          type: "string",
          describe: `an explicit UUID device map OLD=NEW,… (every GPU of the checkpoint, e.g. a swap A=B,B=A), set on the new pod as ${DEVICE_MAP_ANNOTATION}`,
        })
        .option("log-root", {
          type: "string",
          default: DEFAULT_POD_LOG_ROOT,
          describe:
            "a new pod's log folder goes below this (the kubelet's <ns>_<pod>_<uid>/<container>/0.log)",
        })
        .options(REGISTRY_OPTIONS)
        .option("nvidia-smi", {
          type: "string",
          default: "nvidia-smi",
          describe: "nvidia-smi: an image's GPUs are checked against this node's before the pull",
        })
        .option("timeout", {
          type: "number",
          default: DEFAULT_RESTORE_TIMEOUT_S,
          describe:
            "seconds each of pull, CreateContainer (unpack) and StartContainer (CRIU restore) may take",
        }),
    ) as unknown as Argv<RestoreArgs>,
  handler: async (args: ArgumentsCamelCase<RestoreArgs>) => {
    let cri: CriClient | undefined;
    try {
      cri = openCri(args.runtimeEndpoint);
      const r = await restoreArchive({
        cri,
        archive: args.archive,
        ...(args.pod ? { pod: args.pod } : {}),
        ...(args.name ? { name: args.name } : {}),
        ...(args.gpus ? { gpus: args.gpus } : {}),
        ...(args.deviceMap !== undefined ? { deviceMap: args.deviceMap } : {}),
        timeoutS: args.timeout,
        logRoot: args.logRoot,
        nvidiaSmi: args.nvidiaSmi,
        registry: registryArgs(args),
      });
      process.stderr.write(
        `restored ${r.checkpoint.containerName} as ${r.name} in ${r.createdPod ? "new " : ""}pod ${r.pod} ` +
          `(${shortId(r.podId)}) in ${seconds(r.ms)}${r.logPath ? `; its log: ${r.logPath}` : ""}\n`,
      );
      process.stdout.write(`${r.containerId}\n`);
    } catch (err) {
      exitWithError("restore", err);
    } finally {
      cri?.close();
    }
  },
};

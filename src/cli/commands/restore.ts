import type { ArgumentsCamelCase, Argv, CommandModule } from "yargs";
import type { CriClient } from "../../cri/client.js";
import type { In, PodSandboxConfig } from "../../cri/types.js";
import { type CheckpointInfo, readCheckpointArchive } from "../archive.js";
import { CliError, exitWithError } from "../cli-error.js";
import { type EndpointArgs, openCri, withEndpoints } from "../endpoints.js";
import { podConfigFromStatus } from "../pod-config.js";
import { type ProgressOptions, seconds, withProgress } from "../progress.js";
import { resolvePod, shortId } from "../resolve.js";

/** containerd unpacks the archive and pulls the base image in CreateContainer; CRIU restores in StartContainer. */
export const DEFAULT_RESTORE_TIMEOUT_S = 300;

export interface RestoreOptions {
  cri: CriClient;
  archive: string;
  /** An existing pod (id, prefix, name or namespace/name); absent: a new host-network pod. */
  pod?: string;
  /** The restored container's name; default: the checkpointed container's. */
  name?: string;
  /** Seconds each of CreateContainer and StartContainer may take. */
  timeoutS?: number;
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
  checkpoint: CheckpointInfo;
  ms: number;
}

/** A name for the new pod: the original's plus when, short enough for a DNS label in most cases. */
export function restoredPodName(original: string, at: Date): string {
  const t = at.toISOString();
  return `${original}-restored-${t.slice(5, 7)}${t.slice(8, 10)}-${t.slice(11, 13)}${t.slice(14, 16)}${t.slice(17, 19)}`;
}

/**
 * Restore through CRI (containerd 2.1–2.3): CreateContainer whose image is the archive, then
 * StartContainer, which runs `runc restore`. The CLI only creates host-network pods: a pod on the CNI
 * network needs the kubelet's (or crictl's) network setup; restore into such a pod with --pod.
 */
export async function restoreArchive(o: RestoreOptions): Promise<RestoreResult> {
  const timeoutS = o.timeoutS ?? DEFAULT_RESTORE_TIMEOUT_S;
  if (!(timeoutS > 0))
    throw new CliError(`--timeout must be a positive number of seconds, got ${timeoutS}`, 2);
  const info = await readCheckpointArchive(o.archive);
  const name = o.name ?? info.containerName;

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
    const podName = restoredPodName(info.podName ?? info.containerName, (o.now ?? (() => new Date()))());
    const ns = info.podNamespace ?? "default";
    const pod = await o.cri.runHostNetworkPod(podName, ns, {
      annotations: { "kybernate.io/restored-from": info.path },
    });
    podId = pod.podId;
    podConfig = pod.config;
    createdPod = true;
  }
  const podText = `${podConfig.metadata?.namespace}/${podConfig.metadata?.name}`;

  const started = Date.now();
  let containerId: string | undefined;
  try {
    containerId = await withProgress(
      `creating ${name} in pod ${podText} from ${info.path}`,
      () =>
        o.cri.restoreFromArchive(
          podId,
          podConfig,
          info.path,
          name,
          {
            labels: info.labels,
            annotations: info.annotations,
            mounts: info.mounts,
            devices: info.devices,
            env: info.env,
          },
          { timeoutMs: timeoutS * 1000 },
        ),
      o.progress,
    );
    const id = containerId;
    await withProgress(
      `restoring ${name} (${shortId(id)})`,
      () => o.cri.startContainer(id, { timeoutMs: timeoutS * 1000 }),
      o.progress,
    );
  } catch (err) {
    const undone = await undo(o.cri, containerId, createdPod ? podId : undefined);
    throw new CliError(
      `the restore of ${info.path} into pod ${podText} failed: ${(err as Error).message}` +
        (undone ? `\n  ${undone}` : "") +
        (/deadline|DEADLINE_EXCEEDED/i.test((err as Error).message)
          ? "\n  a large checkpoint needs more time: raise --timeout"
          : ""),
    );
  }
  return { containerId, name, podId, pod: podText, createdPod, checkpoint: info, ms: Date.now() - started };
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
}

export const restoreCommand: CommandModule<object, RestoreArgs> = {
  command: "restore <archive>",
  describe:
    "Restore a checkpoint archive through CRI into a new host-network pod (default) or an existing pod",
  builder: (yargs: Argv) =>
    withEndpoints(
      yargs
        .positional("archive", { type: "string", demandOption: true, describe: "the checkpoint .tar" })
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
        .option("timeout", {
          type: "number",
          default: DEFAULT_RESTORE_TIMEOUT_S,
          describe: "seconds each of CreateContainer (unpack) and StartContainer (CRIU restore) may take",
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
        timeoutS: args.timeout,
      });
      process.stderr.write(
        `restored ${r.checkpoint.containerName} as ${r.name} in ${r.createdPod ? "new " : ""}pod ${r.pod} ` +
          `(${shortId(r.podId)}) in ${seconds(r.ms)}\n`,
      );
      process.stdout.write(`${r.containerId}\n`);
    } catch (err) {
      exitWithError("restore", err);
    } finally {
      cri?.close();
    }
  },
};

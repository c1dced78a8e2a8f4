import { existsSync, statSync } from "node:fs";
import { rm } from "node:fs/promises";
import { dirname, resolve } from "node:path";
import { status } from "@grpc/grpc-js";
import type { ArgumentsCamelCase, Argv, CommandModule } from "yargs";
import type { CriClient } from "../../cri/client.js";
import { CriError } from "../../cri/errors.js";
import { askDaemon } from "../../daemon/client.js";
import type { Compression } from "../../image/oci.js";
import { archiveCheckpointId } from "../../store/page-store.js";
import {
  parseRef,
  REGISTRY_OPTIONS,
  type RegistryArgs,
  registryArgs,
  registryClient,
} from "../checkpoint-image.js";
import { CliError, exitWithError } from "../cli-error.js";
import { fetchDaemonStatus } from "../daemon-status.js";
import { type EndpointArgs, openCri, withEndpoints } from "../endpoints.js";
import { humanBytes, type ProgressOptions, seconds, withProgress } from "../progress.js";
import { resolveContainer, shortId } from "../resolve.js";
import { buildImage, type ImageBuildResult } from "./image.js";

/** The kubelet's deadline for a checkpoint (its API's `?timeout=` default). */
export const DEFAULT_CHECKPOINT_TIMEOUT_S = 120;

export interface CheckpointOptions {
  cri: CriClient;
  /** Id, unique id prefix or name. */
  container: string;
  /** Where the tar goes; default: the kubelet's file name in the working directory. */
  output?: string;
  timeoutS?: number;
  /** The kybernate daemon, asked only to explain a failure. */
  daemonSocket?: string;
  progress?: ProgressOptions;
  now?: () => Date;
}

export interface CheckpointResult {
  containerId: string;
  name: string;
  /** "namespace/name" of its pod. */
  pod?: string;
  path: string;
  sizeBytes: number;
  ms: number;
  /** The page store's checkpoint, when the archive is thin (its pages stayed on this node). */
  checkpointId?: string;
}

/** RFC 3339 in UTC to the second, as the kubelet stamps its archives. */
export const rfc3339 = (d: Date): string => d.toISOString().replace(/\.\d{3}Z$/, "Z");

/** The kubelet's archive name: checkpoint-<pod>_<namespace>-<container>-<time>.tar. */
export function defaultArchiveName(pod: string, namespace: string, container: string, at: Date): string {
  return `checkpoint-${pod}_${namespace}-${container}-${rfc3339(at)}.tar`;
}

/** CRI CheckpointContainer of one container to a tar, as the kubelet's checkpoint API does it. */
export async function checkpointContainer(o: CheckpointOptions): Promise<CheckpointResult> {
  const timeoutS = o.timeoutS ?? DEFAULT_CHECKPOINT_TIMEOUT_S;
  if (!(timeoutS > 0))
    throw new CliError(`--timeout must be a positive number of seconds, got ${timeoutS}`, 2);
  const { container, pod } = await resolveContainer(o.cri, o.container);
  const name = container.metadata?.name ?? shortId(container.id);
  if (container.state !== "CONTAINER_RUNNING") {
    throw new CliError(
      `container ${name} (${shortId(container.id)}) is ${container.state.replace("CONTAINER_", "").toLowerCase()}: ` +
        "only a running container can be checkpointed",
      2,
    );
  }
  const podName = pod?.metadata?.name ?? shortId(container.podSandboxId);
  const podNs = pod?.metadata?.namespace ?? "unknown";
  const path = resolve(o.output ?? defaultArchiveName(podName, podNs, name, (o.now ?? (() => new Date()))()));
  if (existsSync(path)) throw new CliError(`${path} already exists: remove it or give another --output`, 2);
  if (!existsSync(dirname(path))) {
    throw new CliError(`the folder ${dirname(path)} does not exist: create it or give another --output`, 2);
  }

  const started = Date.now();
  try {
    await withProgress(
      `checkpointing ${name} (${shortId(container.id)}) to ${path}`,
      () => o.cri.checkpoint(container.id, path, timeoutS),
      o.progress,
    );
  } catch (err) {
    throw new CliError(
      await explainFailure(err, { name, id: container.id, timeoutS, daemonSocket: o.daemonSocket }),
    );
  }
  const ms = Date.now() - started;
  if (!existsSync(path)) {
    throw new CliError(
      `containerd reported success but ${path} is not there: containerd runs in another mount namespace ` +
        "than this command; give an --output path both see",
    );
  }
  // A thin archive's pages stay in this node's store until the archive goes: the store learns where it is.
  const checkpointId = await archiveCheckpointId(path);
  if (checkpointId && o.daemonSocket)
    await askDaemon(o.daemonSocket, { kind: "store", op: "archive", checkpointId, path }, 5000).catch(
      () => undefined,
    );
  return {
    containerId: container.id,
    name,
    pod: `${podNs}/${podName}`,
    path,
    sizeBytes: statSync(path).size,
    ms,
    ...(checkpointId ? { checkpointId } : {}),
  };
}

async function explainFailure(
  err: unknown,
  c: { name: string; id: string; timeoutS: number; daemonSocket?: string | undefined },
): Promise<string> {
  if (!(err instanceof CriError)) return (err as Error).message;
  if (err.code === status.DEADLINE_EXCEEDED) {
    // containerd's deferred resume runs with the caller's expired context, so the task may stay paused.
    return (
      `the checkpoint of ${c.name} did not finish within --timeout ${c.timeoutS} s: raise --timeout. ` +
      `containerd may have left the container paused: check with \`ctr -n k8s.io tasks ls\` and resume it ` +
      `with \`ctr -n k8s.io tasks resume ${c.id}\` (${err.details})`
    );
  }
  const lines = [`the checkpoint of ${c.name} (${shortId(c.id)}) failed: ${err.message}`];
  if (err.code !== status.UNAVAILABLE && err.code !== status.UNIMPLEMENTED) {
    lines.push(
      "  containerd keeps CRIU's log (dump.log) in the container's work directory; the error above names it",
    );
    if (c.daemonSocket) {
      const d = await fetchDaemonStatus(c.daemonSocket, 1000);
      if (!d.reachable) {
        lines.push(
          `  note: ${d.error}; a GPU container can only be checkpointed while \`kybernate run\` is running`,
        );
      } else {
        const last = d.last.find((l) => l.containerId === c.id);
        if (last && !last.ok)
          lines.push(`  kybernate's last ${last.action} of it failed: ${last.error ?? "no reason given"}`);
      }
    }
  }
  return lines.join("\n");
}

export interface CheckpointPushOptions extends CheckpointOptions {
  /** The checkpoint image to build from the archive and push. */
  push: string;
  compression?: Compression;
  registry?: RegistryArgs;
}

export interface CheckpointPushResult extends CheckpointResult {
  image: ImageBuildResult;
  /** Whether the archive is still there (it is when --output named it). */
  archiveKept: boolean;
}

/**
 * Checkpoint, then the checkpoint image pushed: the archive is only a step, removed after the push unless
 * --output asked for it. The image holds every page of the process (it must restore anywhere on its own).
 */
export async function checkpointAndPush(o: CheckpointPushOptions): Promise<CheckpointPushResult> {
  // The reference and the registry's credentials are checked before the container is touched.
  const registry = o.registry ?? {};
  const client = await registryClient(parseRef(o.push, "--push"), registry);
  const ckpt = await checkpointContainer(o);
  let image: ImageBuildResult;
  try {
    image = await buildImage({
      archive: ckpt.path,
      tag: o.push,
      push: true,
      ...(o.compression ? { compression: o.compression } : {}),
      registry,
      registryClient: client,
      ...(o.daemonSocket ? { pageStore: { socket: o.daemonSocket } } : {}),
      ...(o.progress ? { progress: o.progress } : {}),
    });
  } catch (err) {
    throw new CliError(
      `${(err as Error).message}
  the checkpoint itself succeeded: ${ckpt.path} (push it with kybernate image build ${ckpt.path} --tag ${o.push} --push)`,
      err instanceof CliError ? err.exitCode : 1,
    );
  }
  const archiveKept = !!o.output;
  if (!archiveKept) await rm(ckpt.path, { force: true });
  return { ...ckpt, image, archiveKept };
}

interface CheckpointArgs extends EndpointArgs {
  container: string;
  output?: string;
  timeout: number;
  push?: string;
  compression: string;
  registryConfig?: string;
  plainHttp?: boolean;
}

export const checkpointCommand: CommandModule<object, CheckpointArgs> = {
  command: "checkpoint <container>",
  describe: "Checkpoint a running container through CRI into a tar (as the kubelet's checkpoint API does)",
  builder: (yargs: Argv) =>
    withEndpoints(
      yargs
        .positional("container", {
          type: "string",
          demandOption: true,
          describe: "id, unique id prefix, or name",
        })
        .option("output", {
          alias: "o",
          type: "string",
          describe: "archive path (default ./checkpoint-<pod>_<namespace>-<container>-<time>.tar)",
        })
        .option("timeout", {
          type: "number",
          default: DEFAULT_CHECKPOINT_TIMEOUT_S,
          describe: "seconds containerd may take (the kubelet's default is 120)",
        })
        .option("push", {
          type: "string",
          describe:
            "also build the checkpoint image HOST/PATH:TAG and push it (the archive is removed unless --output)",
        })
        .option("compression", {
          choices: ["none", "gzip", "zstd"],
          default: "none",
          describe: "with --push: the image layer's compression",
        })
        .options(REGISTRY_OPTIONS),
    ) as unknown as Argv<CheckpointArgs>,
  handler: async (args: ArgumentsCamelCase<CheckpointArgs>) => {
    let cri: CriClient | undefined;
    try {
      cri = openCri(args.runtimeEndpoint);
      const base = {
        cri,
        container: args.container,
        ...(args.output ? { output: args.output } : {}),
        timeoutS: args.timeout,
        daemonSocket: args.socket,
      };
      if (args.push) {
        const r = await checkpointAndPush({
          ...base,
          push: args.push,
          compression: args.compression as Compression,
          registry: registryArgs(args),
        });
        process.stdout.write(
          `${r.image.reference}@${r.image.manifestDigest}\t${humanBytes(r.image.layer.size)}\t${seconds(r.ms)}\t${seconds(r.image.ms)}${r.archiveKept ? `\t${r.path}` : ""}\n`,
        );
        return;
      }
      const r = await checkpointContainer(base);
      const thin = r.checkpointId
        ? `\tthin: pages in this node's page store as checkpoint ${r.checkpointId}`
        : "";
      process.stdout.write(`${r.path}\t${humanBytes(r.sizeBytes)}\t${seconds(r.ms)}${thin}\n`);
    } catch (err) {
      exitWithError("checkpoint", err);
    } finally {
      cri?.close();
    }
  },
};

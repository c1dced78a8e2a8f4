import type { ArgumentsCamelCase, Argv, CommandModule } from "yargs";
import type { CriClient } from "../../cri/client.js";
import { K, RESTORE_SPEC_LABEL, readCheckpointAnnotations } from "../../image/checkpoint-annotations.js";
import type { Compression } from "../../image/oci.js";
import { RUNTIME_MOUNTS } from "../archive.js";
import { REGISTRY_OPTIONS, type RestoreSpec, registryArgs } from "../checkpoint-image.js";
import { exitWithError } from "../cli-error.js";
import { type EndpointArgs, openCri, withEndpoints } from "../endpoints.js";
import { humanBytes, seconds } from "../progress.js";
import { type CheckpointPushResult, checkpointAndPush, DEFAULT_CHECKPOINT_TIMEOUT_S } from "./checkpoint.js";

/** The device plugin's resource for whole NVIDIA GPUs. */
export const GPU_RESOURCE = "nvidia.com/gpu";

const q = (s: string): string => JSON.stringify(s);

/**
 * The pod spec fragment that restores the pushed checkpoint on another node: the image by digest (what was
 * pushed is what restores), the GPU request and the checkpoint's kybernate annotations; as comments, the mounts
 * the restored container must be given again (CRIU restores a container only with every mount it had).
 */
export function podSpecFragment(r: CheckpointPushResult): string {
  const annotations = r.image.manifest.annotations ?? {};
  const info = readCheckpointAnnotations(annotations);
  const spec = JSON.parse(
    r.image.config.config?.Labels?.[RESTORE_SPEC_LABEL] ?? "{}",
  ) as Partial<RestoreSpec>;
  const image = `${r.image.reference}@${r.image.manifestDigest}`;
  const [ns, podName] = (r.pod ?? "default/restored").split("/");
  const models = [...new Set(info.gpus.map((g) => g.name))];
  const mountPaths = (spec.mounts ?? [])
    .map((m) => m.containerPath)
    .filter((p) => !RUNTIME_MOUNTS.includes(p))
    .sort();
  const lines = [
    `# kybernate migrate: ${r.pod}'s container ${r.name}, checkpointed and pushed as ${image}.`,
    `# Restores on a node with ${info.gpus.length ? `${info.gpus.length}× ${models.join(" + ")}` : "no GPU"} running kybernate and containerd 2.1–2.3`,
    "# (2.2.7+ and 2.3.4+: enable_experimental_restore_via_create = true); the kubelet pulls the image and containerd restores it.",
  ];
  if (mountPaths.length)
    lines.push(
      `# The container must have a mount at each path the checkpointed one had: ${mountPaths.join(", ")}`,
      "# (/dev/termination-log and the service-account token come with every kubelet pod; add the volumes).",
    );
  lines.push(
    "apiVersion: v1",
    "kind: Pod",
    "metadata:",
    `  name: ${q(`${podName ?? r.name}-restored`)}`,
    `  namespace: ${q(ns ?? "default")}`,
    "  annotations:",
    `    kybernate.io/checkpoint-image: ${q(image)}`,
  );
  for (const key of [K.container, K.gpuCount, K.gpuModels, K.gpuUuids, K.driver, K.vramBytes])
    if (annotations[key] !== undefined) lines.push(`    ${key}: ${q(annotations[key] as string)}`);
  lines.push("spec:", "  containers:", `  - name: ${q(r.name)}`, `    image: ${q(image)}`);
  if (info.gpus.length)
    lines.push("    resources:", "      limits:", `        ${GPU_RESOURCE}: ${info.gpus.length}`);
  if (models.length === 1)
    // GPU feature discovery's label: the model with its spaces as dashes.
    lines.push(
      "  nodeSelector:",
      `    nvidia.com/gpu.product: ${q((models[0] as string).replace(/ /g, "-"))}`,
    );
  return `${lines.join("\n")}\n`;
}

interface MigrateArgs extends EndpointArgs {
  container: string;
  push: string;
  output?: string;
  timeout: number;
  compression: string;
  registryConfig?: string;
  plainHttp?: boolean;
}

export const migrateCommand: CommandModule<object, MigrateArgs> = {
  command: "migrate <container>",
  describe:
    "Checkpoint a container, push its checkpoint image, and print the pod spec fragment that restores it on another node",
  builder: (yargs: Argv) =>
    withEndpoints(
      yargs
        .positional("container", {
          type: "string",
          demandOption: true,
          describe: "id, unique id prefix, or name",
        })
        .option("push", {
          type: "string",
          demandOption: true,
          describe: "the checkpoint image HOST/PATH:TAG",
        })
        .option("output", { alias: "o", type: "string", describe: "keep the archive at this path" })
        .option("timeout", {
          type: "number",
          default: DEFAULT_CHECKPOINT_TIMEOUT_S,
          describe: "seconds the checkpoint may take",
        })
        .option("compression", { choices: ["none", "gzip", "zstd"], default: "none" })
        .options(REGISTRY_OPTIONS),
    ) as unknown as Argv<MigrateArgs>,
  handler: async (args: ArgumentsCamelCase<MigrateArgs>) => {
    let cri: CriClient | undefined;
    try {
      cri = openCri(args.runtimeEndpoint);
      const r = await checkpointAndPush({
        cri,
        container: args.container,
        push: args.push,
        ...(args.output ? { output: args.output } : {}),
        timeoutS: args.timeout,
        daemonSocket: args.socket,
        compression: args.compression as Compression,
        registry: registryArgs(args),
      });
      process.stderr.write(
        `checkpoint ${seconds(r.ms)}, image ${humanBytes(r.image.layer.size)} built and pushed in ${seconds(r.image.ms)}\n`,
      );
      process.stdout.write(podSpecFragment(r));
    } catch (err) {
      exitWithError("migrate", err);
    } finally {
      cri?.close();
    }
  },
};

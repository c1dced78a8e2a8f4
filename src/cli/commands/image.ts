import { stat } from "node:fs/promises";
import type { ArgumentsCamelCase, Argv, CommandModule } from "yargs";
import { ArchiveRefused } from "../../image/archive-scan.js";
import { type BuiltImage, buildCheckpointImage } from "../../image/build.js";
import type { Compression } from "../../image/oci.js";
import { describeArchive, parseRef, type RegistryArgs, registryClient } from "../checkpoint-image.js";
import { CliError, exitWithError } from "../cli-error.js";
import { humanBytes, type ProgressOptions, seconds, withByteProgress } from "../progress.js";

export interface ImageBuildOptions {
  archive: string;
  tag: string;
  /** An OCI layout folder, or an OCI layout tar when it ends in .tar. */
  output?: string;
  push?: boolean;
  compression?: Compression;
  registry?: RegistryArgs;
  progress?: ProgressOptions;
}

export interface ImageBuildResult extends BuiltImage {
  ms: number;
}

/** A checkpoint image from a CRI checkpoint archive: into an OCI layout, a registry, or both. */
export async function buildImage(o: ImageBuildOptions): Promise<ImageBuildResult> {
  if (!o.output && !o.push)
    throw new CliError("give --output PATH (an OCI layout folder or .tar), --push, or both", 2);
  const reference = parseRef(o.tag, "--tag");
  if (reference.digest) throw new CliError("--tag takes HOST/PATH:TAG; the digest is the build's to find", 2);
  let size: number;
  try {
    const st = await stat(o.archive);
    if (!st.isFile())
      throw new CliError(`${o.archive} is not a file: give the checkpoint archive (a .tar)`, 2);
    size = st.size;
  } catch (err) {
    if (err instanceof CliError) throw err;
    throw new CliError(`no checkpoint archive at ${o.archive}: check the path`, 2);
  }
  const registry = o.push ? await registryClient(reference, o.registry ?? {}) : undefined;
  const started = Date.now();
  try {
    const built = await withByteProgress(
      `building ${o.tag} from ${o.archive}${o.push ? " and pushing it" : ""}`,
      (update) =>
        buildCheckpointImage({
          archive: o.archive,
          reference,
          compression: o.compression ?? "none",
          ...(o.output ? { output: o.output } : {}),
          ...(registry ? { registry } : {}),
          describe: (scan) => describeArchive(o.archive, size, scan),
          onProgress: update,
        }),
      o.progress,
    );
    return { ...built, ms: Date.now() - started };
  } catch (err) {
    if (err instanceof CliError) throw err;
    if (err instanceof ArchiveRefused)
      throw new CliError(`${o.archive} cannot become a checkpoint image: ${err.message}`, 2);
    throw new CliError(`building ${o.tag} failed: ${(err as Error).message}`);
  }
}

interface ImageBuildArgs {
  archive: string;
  tag: string;
  output?: string;
  push?: boolean;
  compression: string;
  registryConfig?: string;
  plainHttp?: boolean;
}

const build: CommandModule<object, ImageBuildArgs> = {
  command: "build <archive>",
  describe:
    "An OCI checkpoint image from a CRI checkpoint archive (what the kubelet restores from a registry)",
  builder: (yargs: Argv) =>
    yargs
      .positional("archive", { type: "string", demandOption: true, describe: "the checkpoint .tar" })
      .option("tag", { type: "string", demandOption: true, describe: "the image reference HOST/PATH:TAG" })
      .option("output", {
        alias: "o",
        type: "string",
        describe: "write an OCI image layout: a folder, or a tar when the path ends in .tar",
      })
      .option("push", { type: "boolean", describe: "push the image to the registry --tag names" })
      .option("compression", {
        choices: ["none", "gzip", "zstd"],
        default: "none",
        describe: "the layer's compression (CRIU's pages compress little; none is fastest)",
      })
      .option("registry-config", {
        type: "string",
        describe: "Docker config.json with the registry's credentials (default ~/.docker/config.json)",
      })
      .option("plain-http", {
        type: "boolean",
        describe: "speak plain HTTP to the registry (default: only for localhost and 127.x)",
      }) as unknown as Argv<ImageBuildArgs>,
  handler: async (args: ArgumentsCamelCase<ImageBuildArgs>) => {
    try {
      const r = await buildImage({
        archive: args.archive,
        tag: args.tag,
        ...(args.output ? { output: args.output } : {}),
        ...(args.push ? { push: true } : {}),
        compression: args.compression as Compression,
        registry: {
          ...(args.registryConfig ? { registryConfig: args.registryConfig } : {}),
          ...(args.plainHttp !== undefined ? { plainHttp: args.plainHttp } : {}),
        },
      });
      process.stdout.write(
        `${r.reference}@${r.manifestDigest}\t${humanBytes(r.layer.size)}\t${seconds(r.ms)}${r.output ? `\t${r.output}` : ""}\n`,
      );
    } catch (err) {
      exitWithError("image build", err);
    }
  },
};

export const imageCommand: CommandModule = {
  command: "image <command>",
  describe: "Checkpoint images: build one from an archive (kybernate image build --help)",
  builder: (yargs: Argv) => yargs.command(build).demandCommand(1),
  handler: () => undefined,
};

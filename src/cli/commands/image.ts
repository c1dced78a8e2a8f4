import { rm, stat } from "node:fs/promises";
import type { ArgumentsCamelCase, Argv, CommandModule } from "yargs";
import { DEFAULT_DAEMON_SOCKET } from "../../daemon/protocol.js";
import { ArchiveRefused } from "../../image/archive-scan.js";
import { type BuiltImage, buildCheckpointImage } from "../../image/build.js";
import type { Compression } from "../../image/oci.js";
import type { RegistryClient } from "../../image/registry.js";
import { archiveCheckpointId } from "../../store/page-store.js";
import {
  describeArchive,
  parseRef,
  REGISTRY_OPTIONS,
  type RegistryArgs,
  registryArgs,
  registryClient,
} from "../checkpoint-image.js";
import { CliError, exitWithError } from "../cli-error.js";
import { type PageStoreArgs, withPageStore } from "../page-store-access.js";
import { humanBytes, type ProgressOptions, seconds, withByteProgress } from "../progress.js";
import { rewriteArchive } from "./archive.js";

export interface ImageBuildOptions {
  archive: string;
  tag: string;
  /** An OCI layout folder, or an OCI layout tar when it ends in .tar. */
  output?: string;
  push?: boolean;
  compression?: Compression;
  registry?: RegistryArgs;
  /** A client made (and its credentials checked) before: kybernate checkpoint --push checks them first. */
  registryClient?: RegistryClient;
  /** Where a thin archive's pages are (the daemon's page store, or --page-store). */
  pageStore?: PageStoreArgs;
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
  const registry = o.push
    ? (o.registryClient ?? (await registryClient(reference, o.registry ?? {})))
    : undefined;
  const started = Date.now();
  // A thin archive's pages are in a node's page store: the image gets them back (it must restore anywhere).
  const thin = await archiveCheckpointId(o.archive);
  const source = thin ? `${o.archive}.inline.tar` : o.archive;
  try {
    if (thin)
      await rewriteArchive(
        "inline",
        { archive: o.archive, output: source, socket: DEFAULT_DAEMON_SOCKET, ...o.pageStore },
        o.progress,
      );
    const sourceBytes = thin ? (await stat(source)).size : size;
    const built = await withByteProgress(
      `building ${o.tag} from ${o.archive}${o.push ? " and pushing it" : ""}`,
      (update) =>
        buildCheckpointImage({
          archive: source,
          reference,
          compression: o.compression ?? "none",
          ...(o.output ? { output: o.output } : {}),
          ...(registry ? { registry } : {}),
          describe: (scan) => describeArchive(o.archive, sourceBytes, scan),
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
  } finally {
    if (thin) await rm(source, { force: true });
  }
}

interface ImageBuildArgs extends PageStoreArgs {
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
    // The page store's options: a thin archive's pages are put back from it.
    withPageStore(yargs)
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
      .options(REGISTRY_OPTIONS) as unknown as Argv<ImageBuildArgs>,
  handler: async (args: ArgumentsCamelCase<ImageBuildArgs>) => {
    try {
      const r = await buildImage({
        archive: args.archive,
        tag: args.tag,
        ...(args.output ? { output: args.output } : {}),
        ...(args.push ? { push: true } : {}),
        compression: args.compression as Compression,
        registry: registryArgs(args),
        pageStore: {
          socket: args.socket,
          ...(args.pageStore ? { pageStore: args.pageStore } : {}),
          ...(args.nodeName ? { nodeName: args.nodeName } : {}),
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

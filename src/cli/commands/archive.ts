import { existsSync } from "node:fs";
import { dirname, resolve } from "node:path";
import type { ArgumentsCamelCase, Argv, CommandModule } from "yargs";
import {
  ArchiveRefused,
  inlineArchive,
  type RewriteResult,
  thinArchive,
} from "../../store/archive-rewrite.js";
import { StoreRefusal } from "../../store/page-store.js";
import { CliError, exitWithError } from "../cli-error.js";
import { openPageStore, type PageStoreArgs, withPageStore } from "../page-store-access.js";
import { humanBytes, type ProgressOptions, seconds, withProgress } from "../progress.js";

interface ArchiveArgs extends PageStoreArgs {
  archive: string;
  output: string;
}

type Direction = "inline" | "thin";

/** `kybernate archive inline|thin`: one pass over the archive, progress on a terminal. */
export async function rewriteArchive(
  direction: Direction,
  args: Pick<ArchiveArgs, "archive" | "output"> & PageStoreArgs,
  progress?: ProgressOptions,
): Promise<RewriteResult & { ms: number; output: string }> {
  const input = resolve(args.archive);
  const output = resolve(args.output);
  if (!existsSync(input)) throw new CliError(`no archive at ${input}: check the path`, 2);
  if (existsSync(output))
    throw new CliError(`${output} already exists: remove it or give another --output`, 2);
  if (!existsSync(dirname(output)))
    throw new CliError(`the folder ${dirname(output)} does not exist: create it or give another --output`, 2);
  const { store, node } = await openPageStore(args);
  let done = 0;
  let total = 0;
  const started = Date.now();
  const verb = direction === "inline" ? "putting the page images back into" : "moving the page images out of";
  try {
    const result = await withProgress(
      `${verb} ${input}`,
      () =>
        (direction === "inline" ? inlineArchive : thinArchive)({
          input,
          output,
          store,
          node,
          onProgress: (d, t) => {
            done = d;
            total = t;
          },
        }),
      { ...progress, detail: () => (total ? `${humanBytes(done)} of ${humanBytes(total)}` : "") },
    );
    return { ...result, ms: Date.now() - started, output };
  } catch (error) {
    if (error instanceof ArchiveRefused || error instanceof StoreRefusal)
      throw new CliError(error.message, 2);
    throw error;
  }
}

const subcommand = (direction: Direction, describe: string): CommandModule<object, ArchiveArgs> => ({
  command: `${direction} <archive>`,
  describe,
  builder: (yargs: Argv) =>
    withPageStore(
      yargs
        .positional("archive", { type: "string", demandOption: true, describe: "the CRI checkpoint archive" })
        .option("output", {
          alias: "o",
          type: "string",
          demandOption: true,
          describe: "the archive to write",
        }),
    ) as unknown as Argv<ArchiveArgs>,
  handler: async (args: ArgumentsCamelCase<ArchiveArgs>) => {
    try {
      const r = await rewriteArchive(direction, args);
      process.stdout.write(
        `${r.output}\t${humanBytes(r.outputBytes)}\tcheckpoint ${r.checkpointId}\t${r.pageFiles} page images, ${humanBytes(r.pageBytes)} ${direction === "inline" ? "put back" : "into the page store"}\t${seconds(r.ms)}\n`,
      );
    } catch (err) {
      exitWithError(`archive ${direction}`, err);
    }
  },
});

export const archiveCommand: CommandModule<object, object> = {
  command: "archive",
  describe: "Rewrite checkpoint archives around this node's page store",
  builder: (yargs: Argv) =>
    yargs
      .command(
        subcommand(
          "inline",
          "Write a self-contained archive from a thin one (page images from this node's store, manifest removed): any node with kybernate restores it",
        ),
      )
      .command(
        subcommand(
          "thin",
          "Write a thin archive from a self-contained one (page images into this node's store, a manifest in their place)",
        ),
      )
      .demandCommand(1, "name inline or thin"),
  handler: () => undefined,
};

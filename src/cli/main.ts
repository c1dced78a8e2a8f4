#!/usr/bin/env -S node --max-semi-space-size=1
// The node flags of src/base/node-flags.ts (a shebang cannot import them; the installed wrapper uses them).
import type { CommandModule } from "yargs";
import yargs from "yargs";
import { hideBin } from "yargs/helpers";
import { version } from "../base/version.js";

/**
 * Each command's module, loaded only when it is the one asked for: `kybernate run` then carries none of the
 * other commands' dependencies (the CRI client, tar, the image tools) for the node's lifetime.
 */
// biome-ignore lint/suspicious/noExplicitAny: each module exports a CommandModule of its own argument type.
const COMMANDS: Record<string, () => Promise<CommandModule<any, any>>> = {
  run: async () => (await import("./commands/run.js")).runCommand,
  checkpoint: async () => (await import("./commands/checkpoint.js")).checkpointCommand,
  restore: async () => (await import("./commands/restore.js")).restoreCommand,
  ps: async () => (await import("./commands/ps.js")).psCommand,
  gpu: async () => (await import("./commands/gpu.js")).gpuCommand,
  doctor: async () => (await import("./commands/doctor.js")).doctorCommand,
  image: async () => (await import("./commands/image.js")).imageCommand,
  migrate: async () => (await import("./commands/migrate.js")).migrateCommand,
  install: async () => (await import("./commands/install.js")).installCommand,
  uninstall: async () => (await import("./commands/uninstall.js")).uninstallCommand,
  archive: async () => (await import("./commands/archive.js")).archiveCommand,
  store: async () => (await import("./commands/store.js")).storeCommand,
};

const args = hideBin(process.argv);
const asked = args.find((arg) => !arg.startsWith("-"));
// One command named: only its module. Help, a typo or nothing: all of them, so yargs can list and match them.
const names = asked && Object.hasOwn(COMMANDS, asked) ? [asked] : Object.keys(COMMANDS);
const commands = await Promise.all(names.map((name) => (COMMANDS[name] as () => Promise<CommandModule>)()));

let cli = yargs(args).scriptName("kybernate").version(version);
for (const command of commands) cli = cli.command(command);
await cli
  .demandCommand(1, "name a command: kybernate --help lists them")
  .strict()
  .fail((message, error) => {
    process.stderr.write(`kybernate: ${error?.message ?? message}\n`);
    process.exit(2);
  })
  .parseAsync();

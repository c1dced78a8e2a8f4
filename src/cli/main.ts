#!/usr/bin/env node
import "./threadpool.js";
import yargs from "yargs";
import { hideBin } from "yargs/helpers";
import { version } from "../version.js";
import { checkpointCommand } from "./commands/checkpoint.js";
import { gpuCommand } from "./commands/gpu.js";
import { psCommand } from "./commands/ps.js";
import { restoreCommand } from "./commands/restore.js";
import { runCommand } from "./commands/run.js";

await yargs(hideBin(process.argv))
  .scriptName("kybernate")
  .version(version)
  .command(runCommand)
  .command(checkpointCommand)
  .command(restoreCommand)
  .command(psCommand)
  .command(gpuCommand)
  .demandCommand(1, "name a command: kybernate --help lists them")
  .strict()
  .fail((message, error) => {
    process.stderr.write(`kybernate: ${error?.message ?? message}\n`);
    process.exit(2);
  })
  .parseAsync();

#!/usr/bin/env node
import yargs from "yargs";
import { hideBin } from "yargs/helpers";
import { version } from "../base/version.js";
import { checkpointCommand } from "./commands/checkpoint.js";
import { doctorCommand } from "./commands/doctor.js";
import { gpuCommand } from "./commands/gpu.js";
import { imageCommand } from "./commands/image.js";
import { installCommand } from "./commands/install.js";
import { migrateCommand } from "./commands/migrate.js";
import { psCommand } from "./commands/ps.js";
import { restoreCommand } from "./commands/restore.js";
import { runCommand } from "./commands/run.js";
import { uninstallCommand } from "./commands/uninstall.js";

await yargs(hideBin(process.argv))
  .scriptName("kybernate")
  .version(version)
  .command(runCommand)
  .command(checkpointCommand)
  .command(restoreCommand)
  .command(imageCommand)
  .command(migrateCommand)
  .command(psCommand)
  .command(gpuCommand)
  .command(doctorCommand)
  .command(installCommand)
  .command(uninstallCommand)
  .demandCommand(1, "name a command: kybernate --help lists them")
  .strict()
  .fail((message, error) => {
    process.stderr.write(`kybernate: ${error?.message ?? message}\n`);
    process.exit(2);
  })
  .parseAsync();

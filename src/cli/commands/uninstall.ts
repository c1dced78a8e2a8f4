import type { ArgumentsCamelCase, Argv, CommandModule } from "yargs";
import { uninstall } from "../../admin/install.js";
import { exitWithError } from "../cli-error.js";

interface UninstallArgs {
  prefix: string;
}

export const uninstallCommand: CommandModule<object, UninstallArgs> = {
  command: "uninstall",
  describe: "Remove what `kybernate install` put on this host (its manifest lists every file)",
  builder: (yargs: Argv) =>
    yargs.option("prefix", {
      type: "string",
      default: "/opt/kybernate",
      describe: "the --prefix given to install",
    }) as unknown as Argv<UninstallArgs>,
  handler: async (args: ArgumentsCamelCase<UninstallArgs>) => {
    try {
      const { removed, kept } = await uninstall({ prefix: args.prefix });
      process.stdout.write(`removed ${removed} files installed in ${args.prefix}\n`);
      for (const dir of kept) process.stdout.write(`kept ${dir}: it holds files kybernate did not install\n`);
    } catch (error) {
      exitWithError("uninstall", error);
    }
  },
};

import type { ArgumentsCamelCase, Argv, CommandModule } from "yargs";
import { createLogger } from "../../log.js";
import { NriStub } from "../../nri/stub.js";
import { kybernateHandlers } from "../../plugin/kybernate-plugin.js";
import { parseSelector } from "../../plugin/selector.js";

interface RunArgs {
  nriSocket: string;
  index: string;
  logLevel: string;
  select: string;
}

export const runCommand: CommandModule<object, RunArgs> = {
  command: "run",
  describe: "Run the NRI plugin (stays connected to containerd, reconnects when it restarts)",
  builder: (yargs: Argv) =>
    yargs
      .option("nri-socket", {
        type: "string",
        default: "/var/run/nri/nri.sock",
        describe: "containerd's NRI socket",
      })
      .option("index", { type: "string", default: "10", describe: 'plugin index "00"–"99" (call order)' })
      .option("log-level", {
        type: "string",
        default: "info",
        choices: ["fatal", "error", "warn", "info", "debug", "trace", "silent"],
      })
      .option("select", {
        type: "string",
        default: "kybernate.io/checkpoint=true",
        describe: "containers to adjust: KEY=VALUE[,…] over container/pod annotations and labels",
      }) as unknown as Argv<RunArgs>,
  handler: async (args: ArgumentsCamelCase<RunArgs>) => {
    const log = createLogger(args.logLevel as "info");
    const stub = new NriStub(kybernateHandlers(parseSelector(args.select), log), {
      socketPath: args.nriSocket,
      pluginName: "kybernate",
      pluginIndex: args.index.padStart(2, "0"),
      log,
    });
    const shutdown = async (signal: string) => {
      log.info({ signal }, "shutting down");
      await stub.stop();
      process.exit(0);
    };
    process.once("SIGTERM", () => void shutdown("SIGTERM"));
    process.once("SIGINT", () => void shutdown("SIGINT"));
    await stub.start();
    // The loop keeps the process alive; signals end it.
    await new Promise(() => undefined);
  },
};

import type { ArgumentsCamelCase, Argv, CommandModule } from "yargs";
import { createLogger } from "../../base/log.js";
import type { CriClient } from "../../cri/client.js";
import { CliError, exitWithError } from "../cli-error.js";
import { type EndpointArgs, openCri, withEndpoints } from "../endpoints.js";
import { type GpuCommandOptions, runGpuCommand } from "../gpu-command.js";
import { type GpuBackendArgs, withGpuBackend } from "../gpu-options.js";
import { initPidOf, resolveContainer } from "../resolve.js";

export type GpuTarget = Pick<GpuCommandOptions, "pids" | "cgroup" | "initPid">;

/** Exactly one of --pid, --container, --cgroup; a container is reached through its init pid. */
export async function gpuTarget(
  args: { pid?: number[]; container?: string; cgroup?: string },
  cri: () => CriClient,
): Promise<GpuTarget> {
  const given = [
    args.pid?.length ? "--pid" : "",
    args.container ? "--container" : "",
    args.cgroup ? "--cgroup" : "",
  ].filter(Boolean);
  if (given.length !== 1) {
    throw new CliError(
      given.length
        ? `give only one of ${given.join(", ")}`
        : "name the processes: --pid N… , --container ID (id, prefix or name) or --cgroup PATH",
      2,
    );
  }
  if (args.pid?.length) {
    const bad = args.pid.filter((p) => !Number.isInteger(p) || p <= 0);
    if (bad.length) throw new CliError(`--pid takes positive process ids, got ${bad.join(", ")}`, 2);
    return { pids: args.pid };
  }
  if (args.cgroup) return { cgroup: args.cgroup };
  const client = cri();
  const { container } = await resolveContainer(client, args.container ?? "");
  return { initPid: await initPidOf(client, container.id) };
}

interface GpuArgs extends EndpointArgs, GpuBackendArgs {
  action: "state" | "freeze" | "thaw";
  pid?: number[];
  container?: string;
  cgroup?: string;
  lockTimeout?: number;
  deviceMap?: string;
  json: boolean;
  logLevel: string;
}

export const gpuCommand: CommandModule<object, GpuArgs> = {
  command: "gpu <action>",
  describe: "Show, freeze (lock + checkpoint) or thaw (restore + unlock) the CUDA state of processes",
  builder: (yargs: Argv) =>
    withGpuBackend(
      withEndpoints(
        yargs
          .positional("action", { choices: ["state", "freeze", "thaw"] as const, demandOption: true })
          .option("pid", { type: "number", array: true, describe: "process ids (each one is acted on)" })
          .option("container", {
            type: "string",
            describe: "a container (id, id prefix or name): its CUDA processes, found through CRI",
          })
          .option("cgroup", {
            type: "string",
            describe: "a cgroup (full /sys/fs/cgroup path or hierarchy-relative)",
          })
          .option("lock-timeout", { type: "number", describe: "the driver's lock timeout, ms (freeze)" })
          .option("device-map", { type: "string", describe: "old=new,… GPU UUIDs to remap on thaw" })
          .option("json", {
            type: "boolean",
            default: false,
            describe: "print the states or the record as JSON",
          })
          .option("log-level", {
            type: "string",
            default: "warn",
            choices: ["fatal", "error", "warn", "info", "debug", "trace", "silent"],
          }),
      ),
    ) as unknown as Argv<GpuArgs>,
  handler: async (args: ArgumentsCamelCase<GpuArgs>) => {
    let cri: CriClient | undefined;
    let target: GpuTarget;
    try {
      target = await gpuTarget(args, () => {
        cri = openCri(args.runtimeEndpoint);
        return cri;
      });
    } catch (err) {
      exitWithError("gpu", err);
    } finally {
      cri?.close();
    }
    const result = await runGpuCommand({
      action: args.action,
      ...target,
      backend: args.gpuBackend,
      ...(args.libcuda ? { libcuda: args.libcuda } : {}),
      ...(args.cudaCheckpoint ? { cudaCheckpoint: args.cudaCheckpoint } : {}),
      ...(args.lockTimeout !== undefined ? { lockTimeoutMs: args.lockTimeout } : {}),
      ...(args.deviceMap ? { deviceMap: args.deviceMap } : {}),
      json: args.json,
      logger: createLogger(args.logLevel as "warn"),
    });
    // runGpuCommand's contract: a driver call cut by its deadline may keep a worker thread busy.
    process.exit(result.exitCode);
  },
};

import { existsSync, readFileSync } from "node:fs";
import type { ArgumentsCamelCase, Argv, CommandModule } from "yargs";
import { checkContainerdConfig } from "../../admin/containerd-config.js";
import { install } from "../../admin/install.js";
import { containerdVersion } from "../../admin/versions.js";
import { packageRoot } from "../../base/paths.js";
import { version } from "../../base/version.js";
import { exitWithError } from "../cli-error.js";

interface InstallArgs {
  prefix: string;
  containerdConfig: string;
  containerd: string;
  systemdUnitDir: string;
  systemd: boolean;
  runArgs?: string;
}

export const DEFAULT_RUN_ARGS = ["--metrics-port", "9464", "--metrics-host", "127.0.0.1"];

export const installCommand: CommandModule<object, InstallArgs> = {
  command: "install",
  describe:
    "Install kybernate on this host: a self-contained copy in --prefix, a systemd unit, config checks",
  builder: (yargs: Argv) =>
    yargs
      .option("prefix", { type: "string", default: "/opt/kybernate", describe: "where the copy goes" })
      .option("containerd-config", { type: "string", default: "/etc/containerd/config.toml" })
      .option("containerd", {
        type: "string",
        default: "containerd",
        describe: "containerd binary (version)",
      })
      .option("systemd-unit-dir", { type: "string", default: "/etc/systemd/system" })
      .option("systemd", {
        type: "boolean",
        default: true,
        describe: "write (and, when systemd runs, enable) kybernate.service; --no-systemd for the DaemonSet",
      })
      .option("run-args", {
        type: "string",
        describe: `arguments of \`kybernate run\` in the unit (default "${DEFAULT_RUN_ARGS.join(" ")}")`,
      }) as unknown as Argv<InstallArgs>,
  handler: async (args: ArgumentsCamelCase<InstallArgs>) => {
    try {
      const report = await install({
        prefix: args.prefix,
        sourceRoot: packageRoot,
        nodeBinary: process.execPath,
        version,
        unitDir: args.systemd ? args.systemdUnitDir : "",
        systemdRunning: existsSync("/run/systemd/system"),
        runArgs: args.runArgs ? args.runArgs.split(/\s+/).filter(Boolean) : DEFAULT_RUN_ARGS,
      });
      const { manifest } = report;
      process.stdout.write(
        `installed kybernate ${version} in ${manifest.prefix}: ${manifest.files.length} files (manifest ${manifest.prefix}/install-manifest.json)\n`,
      );
      for (const note of report.notes) process.stdout.write(`${note}\n`);
      const cdVersion = await containerdVersion(args.containerd).catch(() => undefined);
      if (!existsSync(args.containerdConfig)) {
        process.stdout.write(
          `containerd config ${args.containerdConfig} not found: check NRI is enabled there (kybernate doctor --containerd-config PATH)\n`,
        );
        return;
      }
      const findings = checkContainerdConfig(readFileSync(args.containerdConfig, "utf8"), cdVersion);
      for (const f of findings) {
        process.stdout.write(`${f.ok ? "ok  " : "TODO"}  containerd: ${f.what}\n`);
        if (f.add)
          process.stdout.write(
            `      add to ${args.containerdConfig}, then restart containerd:\n${f.add.replace(/^/gm, "        ")}\n`,
          );
      }
    } catch (error) {
      exitWithError("install", error);
    }
  },
};

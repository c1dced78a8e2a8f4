import type { ArgumentsCamelCase, Argv, CommandModule } from "yargs";
import {
  type DoctorOptions,
  defaultDoctorOptions,
  doctorFailed,
  formatReport,
  runDoctor,
} from "../../admin/doctor.js";

type DoctorArgs = Omit<DoctorOptions, "containerdConfig" | "kernelConfig"> & {
  containerdConfig?: string;
  kernelConfig?: string;
  json: boolean;
};

export const doctorCommand: CommandModule<object, DoctorArgs> = {
  command: "doctor",
  describe:
    "Check this node for GPU checkpoint/restore: driver, checkpoint API, CRIU, runc, containerd, kernel",
  builder: (yargs: Argv) =>
    yargs
      .option("criu", { type: "string", default: defaultDoctorOptions.criu, describe: "CRIU binary" })
      .option("runc", { type: "string", default: defaultDoctorOptions.runc, describe: "runc binary" })
      .option("containerd", {
        type: "string",
        default: defaultDoctorOptions.containerd,
        describe: "containerd binary",
      })
      .option("nri-socket", { type: "string", default: defaultDoctorOptions.nriSocket })
      .option("containerd-config", {
        type: "string",
        describe: "containerd's config.toml (default /etc/containerd/config.toml when present)",
      })
      .option("nvidia-smi", { type: "string", default: defaultDoctorOptions.nvidiaSmi })
      .option("libcuda", { type: "string", default: defaultDoctorOptions.libcuda })
      .option("cuda-checkpoint", { type: "string", default: defaultDoctorOptions.cudaCheckpoint })
      .option("driver-version-file", { type: "string", default: defaultDoctorOptions.driverVersionFile })
      .option("kernel-config", {
        type: "string",
        describe:
          "kernel config file (default: the running kernel's config.gz, then /boot/config-$(uname -r))",
      })
      .option("cgroup-root", { type: "string", default: defaultDoctorOptions.cgroupRoot })
      .option("json", {
        type: "boolean",
        default: false,
        describe: "print the checks as JSON",
      }) as unknown as Argv<DoctorArgs>,
  handler: async (args: ArgumentsCamelCase<DoctorArgs>) => {
    const results = await runDoctor({
      criu: args.criu,
      runc: args.runc,
      containerd: args.containerd,
      nriSocket: args.nriSocket,
      nvidiaSmi: args.nvidiaSmi,
      libcuda: args.libcuda,
      cudaCheckpoint: args.cudaCheckpoint,
      driverVersionFile: args.driverVersionFile,
      cgroupRoot: args.cgroupRoot,
      ...(args.containerdConfig ? { containerdConfig: args.containerdConfig } : {}),
      ...(args.kernelConfig ? { kernelConfig: args.kernelConfig } : {}),
    });
    process.stdout.write(args.json ? `${JSON.stringify(results, null, 2)}\n` : formatReport(results));
    process.exitCode = doctorFailed(results) ? 1 : 0;
  },
};

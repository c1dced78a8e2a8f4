import type { ArgumentsCamelCase, Argv, CommandModule } from "yargs";
import { type AgentOptions, startAgent } from "../../agent/agent.js";
import { createLogger } from "../../base/log.js";
import { DEFAULT_STATE_DIR } from "../../base/paths.js";
import { DEFAULT_CONTAINERD_SOCKET } from "../../containerd/tasks.js";
import { DEFAULT_DAEMON_SOCKET } from "../../daemon/protocol.js";
import { exitProcess } from "../../gpu/driver-pool.js";
import type { BackendKind } from "../../gpu/select-backend.js";
import { parseSelector } from "../../plugin/selector.js";

interface RunArgs {
  nriSocket: string;
  containerdSocket: string;
  index: string;
  logLevel: string;
  select?: string;
  socket: string;
  stateDir: string;
  gpuBackend: BackendKind;
  libcuda?: string;
  cudaCheckpoint?: string;
  gpuBudget: number;
  lockTimeout: number;
  frozenGrace: number;
  criuNetworkLock: string;
  criu: string;
  metricsPort: number;
  metricsHost: string;
  admission: boolean;
  admissionHeadroomMib: number;
  vramEstimateMib?: number;
  nvidiaSmi: string;
  pageStore?: string;
  pageStoreKeep: number;
  nodeName?: string;
  diskAdmission: boolean;
  containerdRoot: string;
  archiveDir: string[];
  deadlineHint: number;
}

export const runCommand: CommandModule<object, RunArgs> = {
  command: "run",
  describe: "Run kybernate on this node: the NRI plugin plus the daemon CRIU's hook talks to",
  builder: (yargs: Argv) =>
    yargs
      .option("nri-socket", {
        type: "string",
        default: "/var/run/nri/nri.sock",
        describe: "containerd's NRI socket",
      })
      .option("containerd-socket", {
        type: "string",
        default: DEFAULT_CONTAINERD_SOCKET,
        describe:
          "containerd's gRPC socket (its Tasks API resumes a task after a caller's deadline cut its checkpoint)",
      })
      .option("index", { type: "string", default: "10", describe: 'plugin index "00"–"99" (call order)' })
      .option("log-level", {
        type: "string",
        default: "info",
        choices: ["fatal", "error", "warn", "info", "debug", "trace", "silent"],
      })
      .option("select", {
        type: "string",
        describe:
          "also treat as GPU containers those matching KEY=VALUE[,…] (container/pod annotations, labels)",
      })
      .option("socket", {
        type: "string",
        default: DEFAULT_DAEMON_SOCKET,
        describe: "the daemon's root-only socket",
      })
      .option("state-dir", {
        type: "string",
        default: DEFAULT_STATE_DIR,
        describe: "journal and per-container CRIU configs",
      })
      .option("gpu-backend", { type: "string", default: "auto", choices: ["auto", "driver", "binary"] })
      .option("libcuda", { type: "string", describe: "path of libcuda.so.1 for the driver backend" })
      .option("cuda-checkpoint", {
        type: "string",
        describe: "path of NVIDIA's cuda-checkpoint for the binary backend",
      })
      .option("gpu-budget", {
        type: "number",
        default: 90,
        describe:
          "seconds the GPU stage of a checkpoint may take; keep it below the caller's timeout (kubelet: 120 s)",
      })
      .option("lock-timeout", { type: "number", default: 10_000, describe: "the driver's lock timeout, ms" })
      .option("metrics-port", {
        type: "number",
        default: 0,
        describe: "serve Prometheus /metrics on this port (0: off; the DaemonSet and systemd unit use 9464)",
      })
      .option("metrics-host", { type: "string", default: "0.0.0.0", describe: "address for /metrics" })
      .option("admission", {
        type: "boolean",
        default: true,
        describe: "refuse a checkpoint whose VRAM would not fit in host memory (--no-admission: off)",
      })
      .option("admission-headroom-mib", {
        type: "number",
        default: 1024,
        describe: "host memory (MiB) that must stay available after staging a checkpoint's VRAM",
      })
      .option("vram-estimate-mib", {
        type: "number",
        describe: "VRAM per CUDA process (MiB) for admission instead of nvidia-smi's numbers",
      })
      .option("nvidia-smi", {
        type: "string",
        default: "nvidia-smi",
        describe: "nvidia-smi binary: GPU inventory, VRAM per process, checkpoint metadata",
      })
      .option("frozen-grace", {
        type: "number",
        default: 30,
        describe:
          "seconds a container may stay frozen after containerd stored CRIU's images before kybernate resumes it through containerd",
      })
      .option("criu-network-lock", {
        type: "string",
        default: "auto",
        choices: ["auto", "", "iptables", "nftables", "skip"],
        describe:
          "CRIU's network lock: auto asks CRIU for nftables, else uses iptables when iptables-restore is on PATH, else skip",
      })
      .option("criu", {
        type: "string",
        default: "criu",
        describe: "the CRIU binary containerd runs (for --criu-network-lock auto)",
      })
      .option("page-store", {
        type: "string",
        describe:
          "keep checkpoints' page images in DIR (on the filesystem of containerd's temp dir): archives carry only metadata, restores on this node link the pages back (off by default)",
      })
      .option("page-store-keep", {
        type: "number",
        default: 2,
        describe: "checkpoints per container whose pages the page store keeps",
      })
      .option("node-name", {
        type: "string",
        describe: "this node's name in page manifests and refusals (default: $NODE_NAME, else the hostname)",
      })
      .option("disk-admission", {
        type: "boolean",
        default: true,
        describe:
          "refuse a checkpoint whose images would not fit on the filesystems it writes to (--no-disk-admission: off)",
      })
      .option("containerd-root", {
        type: "string",
        default: "/var/lib/containerd",
        describe: "containerd's root (its content store), for the disk admission",
      })
      .option("archive-dir", {
        type: "string",
        array: true,
        default: ["/var/lib/kubelet/checkpoints"],
        describe:
          "where CRI checkpoint archives land (the kubelet's); the page store learns each archive's path there",
      })
      .option("deadline-hint", {
        type: "number",
        default: 120,
        describe:
          "seconds a caller waits for a checkpoint (the kubelet's default); a longer estimate is logged with the ?timeout= to use",
      })
      .check((args) => {
        if (!(Number(args.gpuBudget) > 0))
          throw new Error("--gpu-budget must be a positive number of seconds");
        if (!(Number(args.frozenGrace) > 0))
          throw new Error("--frozen-grace must be a positive number of seconds");
        if (!/^\d{1,2}$/.test(args.index)) throw new Error(`--index must be "00"–"99", got "${args.index}"`);
        if (!(Number.isInteger(args.pageStoreKeep) && Number(args.pageStoreKeep) >= 1))
          throw new Error("--page-store-keep must be a whole number >= 1");
        if (!(Number(args.deadlineHint) > 0))
          throw new Error("--deadline-hint must be a positive number of seconds");
        if (args.pageStore !== undefined && !String(args.pageStore).startsWith("/"))
          throw new Error("--page-store must be an absolute path");
        return true;
      }) as unknown as Argv<RunArgs>,
  handler: async (args: ArgumentsCamelCase<RunArgs>) => {
    const log = createLogger(args.logLevel as "info");
    const agent = await startAgent({
      nriSocket: args.nriSocket,
      containerdSocket: args.containerdSocket,
      pluginIndex: args.index.padStart(2, "0"),
      daemonSocket: args.socket,
      stateDir: args.stateDir,
      ...(args.select ? { selector: parseSelector(args.select) } : {}),
      gpuBackend: args.gpuBackend,
      ...(args.libcuda ? { libcuda: args.libcuda } : {}),
      ...(args.cudaCheckpoint ? { cudaCheckpoint: args.cudaCheckpoint } : {}),
      gpuBudgetMs: args.gpuBudget * 1000,
      lockTimeoutMs: args.lockTimeout,
      frozenGraceMs: args.frozenGrace * 1000,
      criuNetworkLock: args.criuNetworkLock as AgentOptions["criuNetworkLock"],
      criu: args.criu,
      log,
      policy: {
        metricsPort: args.metricsPort,
        metricsHost: args.metricsHost,
        admission: args.admission,
        admissionHeadroomBytes: args.admissionHeadroomMib * 1024 * 1024,
        ...(args.vramEstimateMib !== undefined
          ? { vramEstimateBytes: args.vramEstimateMib * 1024 * 1024 }
          : {}),
        nvidiaSmi: args.nvidiaSmi,
      },
      checkpoint: {
        ...(args.pageStore ? { pageStoreDir: args.pageStore } : {}),
        pageStoreKeep: args.pageStoreKeep,
        ...(args.nodeName ? { nodeName: args.nodeName } : {}),
        diskAdmission: args.diskAdmission,
        containerdRoot: args.containerdRoot,
        archiveDirs: args.archiveDir,
        deadlineHintMs: args.deadlineHint * 1000,
      },
    });
    const shutdown = async (signal: string) => {
      log.info({ signal }, "shutting down");
      await agent.stop();
      // A driver call cut by its deadline may still hold a driver thread: exit without waiting for it.
      exitProcess(0);
    };
    process.once("SIGTERM", () => void shutdown("SIGTERM"));
    process.once("SIGINT", () => void shutdown("SIGINT"));
    await new Promise(() => undefined);
  },
};

import { join } from "node:path";
import type { ArgumentsCamelCase, Argv, CommandModule } from "yargs";
import { Deadline } from "../../base/deadline.js";
import { createLogger, type Logger, silentLogger } from "../../base/log.js";
import { DEFAULT_STATE_DIR } from "../../base/paths.js";
import { version } from "../../base/version.js";
import { fixedEstimator } from "../../checkpoint/admission.js";
import { type CheckpointPolicy, NodePolicy } from "../../checkpoint/policy.js";
import type { CriClient } from "../../cri/client.js";
import { limitHost } from "../../daemon/host-view.js";
import { MemoryLimits } from "../../daemon/memory-limits.js";
import type { GpuBackend } from "../../gpu/backend.js";
import { discoverCudaProcesses } from "../../gpu/discovery.js";
import { exitProcess } from "../../gpu/driver-pool.js";
import { GpuEngine, type OperationRecord } from "../../gpu/engine.js";
import { type BackendKind, openBackend } from "../../gpu/select-backend.js";
import { parseDeviceMap } from "../../gpu/types.js";
import { CGROUP_ROOT, type MemoryLevel, ProcessCgroups } from "../../host/cgroup.js";
import { NvidiaSmiProbe } from "../../host/nvidia-smi.js";
import { CliError, exitWithError } from "../cli-error.js";
import { type EndpointArgs, openCri, withEndpoints } from "../endpoints.js";
import { type GpuBackendArgs, withGpuBackend } from "../gpu-options.js";
import { initPidOf, resolveContainer } from "../resolve.js";
export interface GpuCommandOptions {
  action: "state" | "freeze" | "thaw";
  /** Target: explicit pids, or a container's cgroup, or its init pid (the CLI resolves a container ID to one). */
  pids?: number[];
  cgroup?: string;
  initPid?: number;
  backend?: BackendKind;
  cudaCheckpoint?: string;
  libcuda?: string;
  lockTimeoutMs?: number;
  /**
   * The whole command's deadline: discovery and every driver call run inside it; a rollback after a failure
   * gets as long again. Default: DEFAULT_GPU_TIMEOUT_S from now.
   */
  deadline?: Deadline;
  /** `old=new,…` GPU UUIDs, for thaw. */
  deviceMap?: string;
  /** Print the operation record as JSON instead of a summary. */
  json?: boolean;
  logger?: Logger;
  /** Where result lines go (default: stdout). */
  print?: (line: string) => void;
  /** For tests: a backend to use instead of opening one. */
  backendInstance?: GpuBackend;
  /** Freeze goes through the daemon's admission: host RAM, and the memory limits it raises (journalled here). */
  stateDir?: string;
  vramEstimateBytes?: number;
  admissionHeadroomBytes?: number;
  nvidiaSmi?: string;
  /** For tests: the policy and the limits instead of the node's. */
  policy?: CheckpointPolicy;
  limits?: MemoryLimits;
}

export interface GpuCommandResult {
  exitCode: number;
  record?: OperationRecord;
  states?: Array<{ pid: number; state?: string; error?: string }>;
}

export const DEFAULT_GPU_TIMEOUT_S = 120;

/**
 * `kybernate gpu state|freeze|thaw`: what the CLI calls. Returns the exit code (0 ok, 1 GPU failure, 2 bad
 * target) and prints results; the caller should exit the process afterwards with exitProcess(), since a
 * driver call cut by its deadline may keep a driver thread stuck.
 */
export async function runGpuCommand(opts: GpuCommandOptions): Promise<GpuCommandResult> {
  const print = opts.print ?? ((l: string) => process.stdout.write(`${l}\n`));
  const logger = opts.logger ?? silentLogger;
  const deadline =
    opts.deadline ?? Deadline.after(DEFAULT_GPU_TIMEOUT_S * 1000, { what: `kybernate gpu ${opts.action}` });
  let backend: GpuBackend;
  try {
    backend =
      opts.backendInstance ??
      openBackend({
        kind: opts.backend ?? "auto",
        ...(opts.libcuda ? { libcuda: opts.libcuda } : {}),
        ...(opts.cudaCheckpoint ? { cudaCheckpoint: opts.cudaCheckpoint } : {}),
        logger,
      });
  } catch (err) {
    print(`kybernate gpu: ${(err as Error).message}`);
    return { exitCode: 2 };
  }

  let pids: number[];
  const explicit = !!opts.pids?.length;
  try {
    if (explicit) pids = opts.pids ?? [];
    else {
      // State and thaw must also find CHECKPOINTED processes, which hold no NVIDIA device any more.
      const d = await discoverCudaProcesses({
        ...(opts.cgroup ? { cgroup: opts.cgroup } : {}),
        ...(opts.initPid ? { initPid: opts.initPid } : {}),
        backend,
        mode: opts.action === "freeze" ? "held" : "any",
        deadline,
      });
      logger.debug({ discovery: d }, "gpu discovery");
      if (d.stopped?.length) {
        print(
          `kybernate gpu: refusing to ${opts.action}: ${d.stopped.map((s) => `pid ${s.pid} is ${s.reason}`).join("; ")}; ` +
            "the driver blocks on such a process until it runs again: continue it (kill -CONT PID) or detach its debugger",
        );
        return { exitCode: 1 };
      }
      pids = d.cuda.map((c) => c.pid);
      if (!pids.length) {
        print(
          `kybernate gpu: no CUDA process found in ${d.cgroupDir ?? "the target"} (${d.candidates.length} processes looked at: ` +
            `${d.skipped.map((s) => `${s.pid} ${s.reason}`).join("; ") || "none"})`,
        );
        return { exitCode: 2 };
      }
    }
  } catch (err) {
    print(`kybernate gpu: ${(err as Error).message}`);
    return { exitCode: 2 };
  }

  // Whose memory cgroups the staged VRAM is charged to: the processes' container (one container per command).
  const cgroup = await ProcessCgroups.ofPid(pids[0] ?? 0)
    .then((c) => c.memoryLevels())
    .catch(() => []);
  const limits =
    opts.limits ??
    new MemoryLimits(join(opts.stateDir ?? DEFAULT_STATE_DIR, "memory-limits"), limitHost(), logger);
  const engine = new GpuEngine({
    backend,
    logger,
    rollbackMs: Math.max(1000, deadline.remaining()),
    ...(opts.lockTimeoutMs !== undefined ? { lockTimeoutMs: opts.lockTimeoutMs } : {}),
  });
  if (opts.action === "state") {
    const states = (await engine.states(pids, deadline)).map((s) => ({
      pid: s.pid,
      ...(s.state ? { state: s.state } : {}),
      ...(s.error ? { error: s.error.message } : {}),
    }));
    if (opts.json) print(JSON.stringify(states));
    else for (const s of states) print(`${s.pid}\t${s.state ?? `error: ${s.error}`}`);
    return { exitCode: states.some((s) => s.error) ? 1 : 0, states };
  }

  if (opts.action === "freeze") {
    const refused = await admitFreeze(opts, pids, cgroup, limits, logger);
    if (refused) {
      print(`kybernate gpu: ${refused}`);
      return { exitCode: 1 };
    }
  }
  let record: OperationRecord;
  try {
    record =
      opts.action === "freeze"
        ? await engine.checkpoint(pids, deadline)
        : await engine.restore(pids, opts.deviceMap ? parseDeviceMap(opts.deviceMap) : undefined, deadline);
  } catch (err) {
    print(`kybernate gpu: ${(err as Error).message}`);
    if (cgroup[0]) await limits.settle(cgroup[0].dir);
    return { exitCode: 2 };
  }
  // Back on the GPU (a thaw, or a freeze rolled back): the limits raised for the freeze go back.
  if (cgroup[0] && (opts.action === "thaw" ? record.ok : !record.ok)) await limits.settle(cgroup[0].dir);
  if (opts.json) print(JSON.stringify(record));
  else print(summary(record));
  return { exitCode: record.ok ? 0 : 1, record };
}

/**
 * The daemon's admission for a freeze by hand: the node must have room for the staged VRAM, and the memory
 * limits of the processes' cgroups below it are raised (journalled in the state dir; `gpu thaw` or the
 * daemon's next start puts them back). The refusal, or undefined.
 */
async function admitFreeze(
  opts: GpuCommandOptions,
  pids: number[],
  levels: MemoryLevel[],
  limits: MemoryLimits,
  logger: Logger,
): Promise<string | undefined> {
  const policy =
    opts.policy ??
    new NodePolicy({
      probe: new NvidiaSmiProbe(opts.nvidiaSmi),
      version,
      log: logger,
      admission: { enabled: true, headroomBytes: opts.admissionHeadroomBytes ?? 1024 * 1024 * 1024 },
      ...(opts.vramEstimateBytes !== undefined ? { estimator: fixedEstimator(opts.vramEstimateBytes) } : {}),
    });
  const cgroup = levels[0]?.dir;
  const admission = await policy.admit({
    containerId: cgroup ?? `pid ${pids.join(",")}`,
    pids,
    memoryLevels: async () => levels,
  });
  if (!admission.verdict.ok) return admission.verdict.error;
  if (!cgroup || admission.raises.length === 0) return undefined;
  try {
    await limits.open();
    await limits.raise(cgroup, { stage: "gpu freeze" }, admission.raises);
    return undefined;
  } catch (error) {
    return `${(error as Error).message}; nothing was frozen`;
  }
}

export function summary(r: OperationRecord): string {
  const phases = Object.entries(r.phasesMs)
    .map(([k, v]) => `${k} ${Math.round(v)} ms`)
    .join(", ");
  const lines = [
    `${r.op} ${r.ok ? "ok" : "FAILED"}: ${r.pids.length} process(es) in ${Math.round(r.totalMs)} ms (${phases})` +
      (r.vramBytes !== undefined ? `, ~${(r.vramBytes / 2 ** 20).toFixed(0)} MiB moved` : ""),
  ];
  for (const p of r.processes)
    lines.push(
      `  pid ${p.pid}: ${p.startState ?? "?"} -> ${p.endState ?? "?"}${p.skipped ? " (nothing to do)" : ""}`,
    );
  if (r.failure) lines.push(`  cause: ${String(r.failure.message)}`);
  if (r.rollback)
    lines.push(
      `  rollback ${r.rollback.ok ? "ok, every process RUNNING" : "INCOMPLETE"}: ` +
        r.rollback.processes
          .map(
            (p) =>
              `${p.pid} ${p.from ?? "?"}->${p.to ?? "?"}${p.error ? ` (${String(p.error.message)})` : ""}`,
          )
          .join(", "),
    );
  return lines.join("\n");
}

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
  timeout: number;
  deviceMap?: string;
  json: boolean;
  logLevel: string;
  stateDir: string;
  vramEstimateMib?: number;
  admissionHeadroomMib: number;
  nvidiaSmi: string;
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
            describe: `a cgroup (full ${CGROUP_ROOT}/... path or hierarchy-relative)`,
          })
          .option("lock-timeout", { type: "number", describe: "the driver's lock timeout, ms (freeze)" })
          .option("timeout", {
            type: "number",
            default: DEFAULT_GPU_TIMEOUT_S,
            describe: "seconds the command may take; a rollback after a failure gets as long again",
          })
          .option("device-map", { type: "string", describe: "old=new,… GPU UUIDs to remap on thaw" })
          .option("json", {
            type: "boolean",
            default: false,
            describe: "print the states or the record as JSON",
          })
          .option("state-dir", {
            type: "string",
            default: DEFAULT_STATE_DIR,
            describe: "where a freeze journals the memory limits it raises (kybernate run's --state-dir)",
          })
          .option("vram-estimate-mib", {
            type: "number",
            describe: "VRAM per CUDA process (MiB) for admission instead of nvidia-smi's numbers",
          })
          .option("admission-headroom-mib", {
            type: "number",
            default: 1024,
            describe: "host memory (MiB) that must stay available after staging the VRAM",
          })
          .option("nvidia-smi", { type: "string", default: "nvidia-smi" })
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
    if (!(args.timeout > 0)) exitWithError("gpu", new CliError("--timeout takes a number of seconds > 0", 2));
    const result = await runGpuCommand({
      action: args.action,
      ...target,
      backend: args.gpuBackend,
      ...(args.libcuda ? { libcuda: args.libcuda } : {}),
      ...(args.cudaCheckpoint ? { cudaCheckpoint: args.cudaCheckpoint } : {}),
      ...(args.lockTimeout !== undefined ? { lockTimeoutMs: args.lockTimeout } : {}),
      deadline: Deadline.after(args.timeout * 1000, { what: `kybernate gpu ${args.action}` }),
      ...(args.deviceMap ? { deviceMap: args.deviceMap } : {}),
      json: args.json,
      logger: createLogger(args.logLevel as "warn"),
      stateDir: args.stateDir,
      ...(args.vramEstimateMib !== undefined
        ? { vramEstimateBytes: args.vramEstimateMib * 1024 * 1024 }
        : {}),
      admissionHeadroomBytes: args.admissionHeadroomMib * 1024 * 1024,
      nvidiaSmi: args.nvidiaSmi,
    });
    // runGpuCommand's contract: a driver call cut by its deadline may keep a driver thread stuck.
    exitProcess(result.exitCode);
  },
};

import type { Logger } from "pino";
import { silentLogger } from "../base/log.js";
import type { GpuBackend } from "../gpu/backend.js";
import { discoverCudaProcesses } from "../gpu/discovery.js";
import { GpuEngine, type OperationRecord } from "../gpu/engine.js";
import { type BackendKind, openBackend } from "../gpu/select-backend.js";
import { parseDeviceMap } from "../gpu/types.js";

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
  /** `old=new,…` GPU UUIDs, for thaw. */
  deviceMap?: string;
  /** Print the operation record as JSON instead of a summary. */
  json?: boolean;
  logger?: Logger;
  /** Where result lines go (default: stdout). */
  print?: (line: string) => void;
  /** For tests: a backend to use instead of opening one. */
  backendInstance?: GpuBackend;
}

export interface GpuCommandResult {
  exitCode: number;
  record?: OperationRecord;
  states?: Array<{ pid: number; state?: string; error?: string }>;
}

/**
 * `kybernate gpu state|freeze|thaw`: what the CLI calls. Returns the exit code (0 ok, 1 GPU failure, 2 bad
 * target) and prints results; the caller should exit the process afterwards, since a driver call cut by its
 * deadline may keep a worker thread busy.
 */
export async function runGpuCommand(opts: GpuCommandOptions): Promise<GpuCommandResult> {
  const print = opts.print ?? ((l: string) => process.stdout.write(`${l}\n`));
  const logger = opts.logger ?? silentLogger;
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
      });
      logger.debug({ discovery: d }, "gpu discovery");
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

  const engine = new GpuEngine({
    backend,
    logger,
    ...(opts.lockTimeoutMs !== undefined ? { lockTimeoutMs: opts.lockTimeoutMs } : {}),
  });
  if (opts.action === "state") {
    const states = (await engine.states(pids)).map((s) => ({
      pid: s.pid,
      ...(s.state ? { state: s.state } : {}),
      ...(s.error ? { error: s.error.message } : {}),
    }));
    if (opts.json) print(JSON.stringify(states));
    else for (const s of states) print(`${s.pid}\t${s.state ?? `error: ${s.error}`}`);
    return { exitCode: states.some((s) => s.error) ? 1 : 0, states };
  }

  let record: OperationRecord;
  try {
    record =
      opts.action === "freeze"
        ? await engine.freeze(pids)
        : await engine.thaw(pids, opts.deviceMap ? parseDeviceMap(opts.deviceMap) : undefined);
  } catch (err) {
    print(`kybernate gpu: ${(err as Error).message}`);
    return { exitCode: 2 };
  }
  if (opts.json) print(JSON.stringify(record));
  else print(summary(record));
  return { exitCode: record.ok ? 0 : 1, record };
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

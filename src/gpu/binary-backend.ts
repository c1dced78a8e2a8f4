import { timerDelay } from "../base/deadline.js";
import { type CallOptions, callDeadline, type GpuBackend } from "./backend.js";
import { cudaErrorByMessage } from "./cuda-errors.js";
import {
  type DeviceMap,
  formatDeviceMap,
  GpuError,
  type GpuOp,
  type ProcessState,
  parseStateName,
} from "./types.js";

/**
 * NVIDIA's cuda-checkpoint tool, one run per call. It prints the driver's message in double quotes on
 * stderr and exits 1 (`Could not unlock on process ID 7: "the operation cannot be performed in the present
 * state"`); the message is mapped back to its CUresult so both backends report the same codes.
 */
export class BinaryBackend implements GpuBackend {
  readonly kind = "binary" as const;
  readonly description: string;

  constructor(readonly toolPath = "cuda-checkpoint") {
    this.description = `cuda-checkpoint ${toolPath}`;
  }

  private async run(pid: number, op: GpuOp, args: string[], opts?: CallOptions): Promise<string> {
    const deadline = callDeadline(op, opts);
    const ms = Math.max(1, timerDelay(deadline.remaining()));
    deadline.dispose();
    // Loaded on first use: a node on the driver backend never pays for execa's modules in its daemon.
    const { execa } = await import("execa");
    const r = await execa(this.toolPath, [...args, "--pid", String(pid)], {
      reject: false,
      timeout: ms,
      forceKillAfterDelay: 1000,
      stdin: "ignore",
    });
    if (r.timedOut)
      throw new GpuError({
        pid,
        op,
        code: "DEADLINE_EXCEEDED",
        driverMessage: `${this.toolPath} did not finish within ${ms} ms (killed)`,
      });
    if (r.failed && r.exitCode === undefined) {
      const why = (r as { code?: string }).code === "ENOENT" ? "not found" : r.shortMessage;
      throw new GpuError({
        pid,
        op,
        code: "BACKEND_FAILURE",
        driverMessage: `cannot run ${this.toolPath}: ${why}`,
        hint: "give NVIDIA's tool with --cuda-checkpoint PATH, or use --gpu-backend driver",
      });
    }
    if (r.exitCode !== 0) throw this.errorFrom(pid, op, `${r.stderr}\n${r.stdout}`.trim(), r.exitCode ?? -1);
    return r.stdout;
  }

  private errorFrom(pid: number, op: GpuOp, text: string, exitCode: number): GpuError {
    const quoted = /"([^"]+)"/.exec(text)?.[1];
    const message = quoted ?? (text || `exit status ${exitCode}, no message`);
    const known = cudaErrorByMessage(message);
    return new GpuError({
      pid,
      op,
      code: known?.name ?? "CUDA_ERROR_UNRECOGNIZED",
      driverMessage: message,
      ...(known ? { result: known.result } : {}),
    });
  }

  async getState(pid: number, opts?: CallOptions): Promise<ProcessState> {
    const out = await this.run(pid, "getState", ["--get-state"], opts);
    const state = parseStateName(out);
    if (state === undefined)
      throw new GpuError({
        pid,
        op: "getState",
        code: "BACKEND_FAILURE",
        driverMessage: `unexpected --get-state output "${out.trim()}" from ${this.toolPath}`,
      });
    return state;
  }

  async lock(pid: number, timeoutMs: number, opts?: CallOptions): Promise<void> {
    const t = timeoutMs > 0 ? ["--timeout", String(timeoutMs)] : [];
    await this.run(pid, "lock", ["--action", "lock", ...t], opts);
  }

  async checkpoint(pid: number, opts?: CallOptions): Promise<void> {
    await this.run(pid, "checkpoint", ["--action", "checkpoint"], opts);
  }

  async restore(pid: number, deviceMap?: DeviceMap, opts?: CallOptions): Promise<void> {
    const m = deviceMap?.length ? ["--device-map", formatDeviceMap(deviceMap)] : [];
    await this.run(pid, "restore", ["--action", "restore", ...m], opts);
  }

  async unlock(pid: number, opts?: CallOptions): Promise<void> {
    await this.run(pid, "unlock", ["--action", "unlock"], opts);
  }

  async getRestoreThreadId(pid: number, opts?: CallOptions): Promise<number> {
    const out = await this.run(pid, "getRestoreThreadId", ["--get-restore-tid"], opts);
    const tid = Number.parseInt(out.trim(), 10);
    if (!Number.isInteger(tid) || tid <= 0)
      throw new GpuError({
        pid,
        op: "getRestoreThreadId",
        code: "BACKEND_FAILURE",
        driverMessage: `unexpected --get-restore-tid output "${out.trim()}"`,
      });
    return tid;
  }

  close(): void {}
}

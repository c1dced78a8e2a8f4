import { Deadline, DeadlineExceeded } from "../base/deadline.js";
import { type DeviceMap, GpuError, type GpuOp, type ProcessState } from "./types.js";

/** Per call: the deadline of the stage the call belongs to (the hook's request, a CLI's --timeout). */
export interface CallOptions {
  deadline?: Deadline;
  /** The longest this one call may take inside that deadline; default CALL_CAPS_MS[op]. */
  capMs?: number;
}

/**
 * One way of reaching the driver's checkpoint API. Every method resolves on success and rejects with a
 * GpuError (never anything else), within its deadline.
 */
export interface GpuBackend {
  readonly kind: "driver" | "binary";
  /** Human-readable origin (library path or tool path, driver version) for logs and records. */
  readonly description: string;
  getState(pid: number, opts?: CallOptions): Promise<ProcessState>;
  /** timeoutMs is the driver's own lock timeout (0 = none); the process stays RUNNING when it expires. */
  lock(pid: number, timeoutMs: number, opts?: CallOptions): Promise<void>;
  checkpoint(pid: number, opts?: CallOptions): Promise<void>;
  restore(pid: number, deviceMap?: DeviceMap, opts?: CallOptions): Promise<void>;
  unlock(pid: number, opts?: CallOptions): Promise<void>;
  getRestoreThreadId(pid: number, opts?: CallOptions): Promise<number>;
  close(): void;
}

/**
 * How long one call may take at most, within its stage's deadline. The driver answers the quick calls in
 * milliseconds (15 ms measured on the H200), so one that takes seconds is stuck; checkpoint and restore move
 * VRAM and take what the stage allows. Without a stage deadline (a bare call), the fallbacks apply.
 */
export const CALL_CAPS_MS: Record<GpuOp, number> = {
  getState: 10_000,
  lock: 15_000,
  checkpoint: Number.POSITIVE_INFINITY,
  restore: Number.POSITIVE_INFINITY,
  unlock: 10_000,
  getRestoreThreadId: 10_000,
};
const BARE_CALL_MS = 90_000;

/** The deadline of one driver call: its cap, inside the stage's deadline. */
export function callDeadline(op: GpuOp, opts?: CallOptions): Deadline {
  const capMs = opts?.capMs ?? CALL_CAPS_MS[op];
  if (opts?.deadline) return opts.deadline.child(capMs, `GPU ${op}`);
  return Deadline.after(Math.min(capMs, BARE_CALL_MS), { what: `GPU ${op}` });
}

/**
 * `call`, or a GpuError once its deadline passes (DEADLINE_EXCEEDED) or its stage is called off (CANCELLED, with
 * the stage's reason); the abandoned call's result is dropped.
 */
export async function withinDeadline<T>(
  pid: number,
  op: GpuOp,
  deadline: Deadline,
  call: Promise<T>,
): Promise<T> {
  const ms = Math.round(deadline.remaining());
  try {
    return await deadline.race(call, () => {
      const reason: unknown = deadline.signal.reason;
      if (reason === undefined || reason instanceof DeadlineExceeded)
        return new GpuError({
          pid,
          op,
          code: "DEADLINE_EXCEEDED",
          driverMessage: `no answer from the driver within ${ms} ms`,
        });
      return new GpuError({
        pid,
        op,
        code: "CANCELLED",
        driverMessage: `stopped waiting for the driver: ${reason instanceof Error ? reason.message : String(reason)}`,
      });
    });
  } finally {
    deadline.dispose();
  }
}

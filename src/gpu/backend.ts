import type { DeviceMap, ProcessState } from "./types.js";

/** Per call: how long kybernate waits before it gives up (the call is then reported DEADLINE_EXCEEDED). */
export interface CallOptions {
  deadlineMs?: number;
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

export const defaultDeadlines = {
  getState: 10_000,
  lock: 15_000,
  checkpoint: 90_000,
  restore: 90_000,
  unlock: 10_000,
  getRestoreThreadId: 10_000,
} as const;

import { Worker } from "node:worker_threads";
import koffi from "koffi";
import { GpuError, type GpuOp } from "./types.js";

/** One driver call as a driver thread (driver-worker.ts) makes it. */
export interface DriverCall {
  op: GpuOp;
  pid: number;
  /** lock: the driver's own lock timeout (0 = none). */
  lockTimeoutMs?: number;
  /** restore: old → new GPU UUIDs, 16 bytes each. */
  pairs?: Array<{ from: number[]; to: number[] }>;
}

/** The CUresult (and the out value of getState / getRestoreThreadId), or what koffi threw. */
export type DriverReply = { rc: number; value?: number } | { error: string };

export interface DriverPoolOptions {
  libraryPath: string;
  /** Driver threads that may run calls at once; more calls wait for one (inside their deadline). Default 16. */
  maxThreads?: number;
  /**
   * Threads left inside a driver call past its deadline: they are never reused, and while this many are stuck
   * every new call is refused at once. Default 16.
   */
  maxStuck?: number;
}

export const DEFAULT_DRIVER_THREADS = 16;

interface Job {
  call: DriverCall;
  signal: AbortSignal;
  slot?: Slot;
  settle(result: DriverReply | Error): void;
}

interface Slot {
  worker: Worker;
  job?: Job;
  /** Set once the call it runs was given up: the thread is stuck in the driver. */
  stuck?: { since: number; call: DriverCall };
  lastError?: Error;
}

const pools = new Set<DriverCallPool>();

/**
 * kybernate's own threads for the driver's blocking checkpoint calls, one call per thread at a time. The
 * driver may never return a call (a process stopped during a checkpoint blocks even GetState): such a call
 * pins its thread, not one of libuv's shared pool, so file I/O and every other container go on. Idle threads
 * do not keep the process alive.
 */
export class DriverCallPool {
  private readonly maxThreads: number;
  private readonly maxStuck: number;
  private readonly idle: Slot[] = [];
  private readonly busy = new Set<Slot>();
  private readonly stuck = new Set<Slot>();
  private readonly queue: Job[] = [];

  constructor(private readonly options: DriverPoolOptions) {
    this.maxThreads = Math.max(1, options.maxThreads ?? DEFAULT_DRIVER_THREADS);
    this.maxStuck = Math.max(1, options.maxStuck ?? DEFAULT_DRIVER_THREADS);
    pools.add(this);
  }

  /** Its threads: running a call, waiting for one, stuck in one; and the calls waiting for a thread. */
  get stats(): { busy: number; idle: number; stuck: number; queued: number } {
    return {
      busy: this.busy.size,
      idle: this.idle.length,
      stuck: this.stuck.size,
      queued: this.queue.length,
    };
  }

  /**
   * The call's reply; rejects with the signal's reason once it aborts (the thread running the call is then
   * stuck), or at once with a GpuError while `maxStuck` threads are stuck.
   */
  run(call: DriverCall, signal: AbortSignal): Promise<DriverReply> {
    if (signal.aborted) return Promise.reject(signal.reason);
    if (this.stuck.size >= this.maxStuck) return Promise.reject(this.stuckError(call));
    return new Promise<DriverReply>((resolve, reject) => {
      const onAbort = () => this.giveUp(job);
      const job: Job = {
        call,
        signal,
        settle: (result) => {
          signal.removeEventListener("abort", onAbort);
          if (result instanceof Error) reject(result);
          else resolve(result);
        },
      };
      signal.addEventListener("abort", onAbort, { once: true });
      this.queue.push(job);
      this.pump();
    });
  }

  /** Ends the idle threads; stuck ones cannot be ended (they end when their call returns). */
  close(): void {
    for (const slot of this.idle.splice(0)) void slot.worker.terminate();
  }

  private pump(): void {
    while (this.queue.length) {
      const slot =
        this.idle.pop() ?? (this.idle.length + this.busy.size < this.maxThreads ? this.spawn() : undefined);
      if (!slot) return;
      const job = this.queue.shift() as Job;
      slot.job = job;
      job.slot = slot;
      this.busy.add(slot);
      // A call in flight keeps the process alive, as any pending I/O does.
      slot.worker.ref();
      slot.worker.postMessage(job.call);
    }
  }

  private spawn(): Slot {
    const worker = new Worker(new URL("./driver-worker.js", import.meta.url), {
      workerData: { libraryPath: this.options.libraryPath },
    });
    const slot: Slot = { worker };
    worker.on("message", (reply: DriverReply) => this.answered(slot, reply));
    worker.on("error", (error) => {
      slot.lastError = error;
    });
    worker.on("exit", (code) => this.ended(slot, code));
    return slot;
  }

  private answered(slot: Slot, reply: DriverReply): void {
    if (slot.stuck) {
      // Its caller has gone; a thread that was stuck once is not trusted with another call.
      this.stuck.delete(slot);
      void slot.worker.terminate();
      this.pump();
      return;
    }
    const job = slot.job;
    slot.job = undefined;
    this.busy.delete(slot);
    this.idle.push(slot);
    slot.worker.unref();
    job?.settle(reply);
    this.pump();
  }

  private ended(slot: Slot, code: number): void {
    const idleAt = this.idle.indexOf(slot);
    if (idleAt >= 0) this.idle.splice(idleAt, 1);
    this.busy.delete(slot);
    this.stuck.delete(slot);
    const job = slot.job;
    slot.job = undefined;
    if (job)
      job.settle(
        new GpuError({
          pid: job.call.pid,
          op: job.call.op,
          code: "BACKEND_FAILURE",
          driverMessage: `kybernate's driver thread ended during the call: ${slot.lastError?.message ?? `exit code ${code}`}`,
        }),
      );
    this.pump();
  }

  private giveUp(job: Job): void {
    const slot = job.slot;
    if (!slot) {
      const at = this.queue.indexOf(job);
      if (at >= 0) this.queue.splice(at, 1);
    } else {
      this.busy.delete(slot);
      slot.job = undefined;
      slot.stuck = { since: Date.now(), call: job.call };
      this.stuck.add(slot);
      slot.worker.unref();
    }
    job.settle(job.signal.reason instanceof Error ? job.signal.reason : new Error(String(job.signal.reason)));
    this.pump();
  }

  private stuckError(call: DriverCall): GpuError {
    const oldest = [...this.stuck].reduce<Slot["stuck"]>(
      (a, s) => (!a || (s.stuck && s.stuck.since < a.since) ? s.stuck : a),
      undefined,
    );
    const since = oldest ? new Date(oldest.since).toISOString() : "?";
    const what = oldest
      ? ` (the oldest: GPU ${oldest.call.op} of pid ${oldest.call.pid}, since ${since})`
      : "";
    return new GpuError({
      pid: call.pid,
      op: call.op,
      code: "DRIVER_CALLS_STUCK",
      driverMessage: `not asked: ${this.stuck.size} driver calls are stuck in the driver${what}, the most kybernate allows`,
      hint: "find the processes they wait for (stopped? `kill -CONT PID`) or restart kybernate to free them",
    });
  }
}

/** Driver calls running or stuck in any pool. */
export function driverCallsInFlight(): number {
  let n = 0;
  for (const p of pools) n += p.stats.busy + p.stats.stuck;
  return n;
}

let libcExit: ((code: number) => void) | undefined;

/**
 * process.exit, even while a driver call is stuck: Node's exit joins every worker thread, and one inside a
 * driver call that never returns would keep the process from ever exiting. Then libc's _exit ends it at once
 * (stdout and stderr writes are synchronous on Linux, so what was printed is out).
 */
export function exitProcess(code: number): never {
  if (driverCallsInFlight() === 0) process.exit(code);
  libcExit ??= koffi.load(null).func("void _exit(int)") as (code: number) => void;
  libcExit(code);
  return process.exit(code);
}

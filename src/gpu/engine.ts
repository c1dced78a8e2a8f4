import { Deadline } from "../base/deadline.js";
import type { Logger } from "../base/log.js";
import { silentLogger } from "../base/log.js";
import { describeHalt, type Halt, haltOf, residentBytes } from "../host/proc.js";
import type { CallOptions, GpuBackend } from "./backend.js";
import { type DeviceMap, GpuError, type GpuOp, ProcessState, type StateName, stateName } from "./types.js";

export type Phase = "getState" | "lock" | "checkpoint" | "restore" | "unlock";
export type OperationKind = "checkpoint" | "restore" | "ensureRunning";

export interface ProcessRecord {
  pid: number;
  startState?: StateName;
  endState?: StateName;
  /** Nothing to do: already in the target state. */
  skipped: boolean;
  /** Estimated VRAM moved (VmRSS change across the operation), when measurable. */
  vramBytes?: number;
  phasesMs: Partial<Record<Phase, number>>;
  error?: ReturnType<GpuError["toJSON"]>;
}

export interface RollbackRecord {
  ok: boolean;
  ms: number;
  processes: Array<{ pid: number; from?: StateName; to?: StateName; error?: ReturnType<GpuError["toJSON"]> }>;
}

export interface OperationRecord {
  op: OperationKind;
  backend: string;
  pids: number[];
  ok: boolean;
  startedAt: string;
  totalMs: number;
  /** Per phase, the longest time any process of the set spent in it (the processes run in parallel). */
  phasesMs: Partial<Record<Phase, number>>;
  vramBytes?: number;
  processes: ProcessRecord[];
  /** The first failure: which process, in which step and state, with the driver's message. */
  failure?: ReturnType<GpuError["toJSON"]>;
  failures: Array<ReturnType<GpuError["toJSON"]>>;
  /** Present when a failure made the engine bring the set back to RUNNING. */
  rollback?: RollbackRecord;
}

export interface EngineOptions {
  backend: GpuBackend;
  logger?: Logger;
  /** The driver's own lock timeout (default 10 s); the process stays RUNNING when it expires. */
  lockTimeoutMs?: number;
  /**
   * How long a rollback may take. It runs after a failure, often after the caller's deadline passed, and must
   * still bring every process back: it gets a deadline of its own. Default 120 s.
   */
  rollbackMs?: number;
  /** Measure VmRSS around each operation (two /proc reads per process). Default true. */
  measureVram?: boolean;
  /** Whether a process is stopped or traced (default: its /proc status); tests of fake pids replace it. */
  haltOf?: (pid: number) => Promise<Halt | undefined>;
}

interface Chain {
  rec: ProcessRecord;
  /** What the engine last knew of the process, for reports and for rollback when the driver is silent. */
  known?: ProcessState;
}

/** One operation's shared state: the stage's deadline and whether another process of the set failed. */
interface Run {
  call: CallOptions;
  aborted: boolean;
}

/**
 * Takes a set of CUDA processes through the driver's checkpoint states, all in parallel.
 *
 * checkpoint: RUNNING → lock → LOCKED → checkpoint → CHECKPOINTED (VRAM to host memory). restore: CHECKPOINTED →
 * restore → LOCKED → unlock → RUNNING. Both start from whatever state each process is in (checkpointing a
 * CHECKPOINTED process or restoring a RUNNING one is a successful no-op, marked skipped), so a repeated call
 * after a partial one completes it. Any failure stops the other processes at their next step and brings the
 * whole set back to RUNNING (rollback); a FAILED process cannot be brought back and is reported. Every driver
 * call runs inside the operation's deadline. Results are data (never thrown): check `ok`.
 */
export class GpuEngine {
  private readonly backend: GpuBackend;
  private readonly log: Logger;
  private readonly lockTimeoutMs: number;
  private readonly rollbackMs: number;
  private readonly measureVram: boolean;
  private readonly haltOf: (pid: number) => Promise<Halt | undefined>;

  constructor(opts: EngineOptions) {
    this.backend = opts.backend;
    this.log = (opts.logger ?? silentLogger).child({ component: "gpu-engine" });
    this.lockTimeoutMs = opts.lockTimeoutMs ?? 10_000;
    this.rollbackMs = opts.rollbackMs ?? 120_000;
    this.measureVram = opts.measureVram ?? true;
    this.haltOf = opts.haltOf ?? ((pid) => haltOf(pid));
  }

  checkpoint(pids: number[], deadline?: Deadline): Promise<OperationRecord> {
    return this.operate("checkpoint", pids, undefined, deadline, true);
  }

  restore(pids: number[], deviceMap?: DeviceMap, deadline?: Deadline): Promise<OperationRecord> {
    return this.operate("restore", pids, deviceMap, deadline, true);
  }

  /** Brings every process to RUNNING from any state (restore + unlock, or unlock); no rollback of its own. */
  ensureRunning(pids: number[], deviceMap?: DeviceMap, deadline?: Deadline): Promise<OperationRecord> {
    return this.operate("ensureRunning", pids, deviceMap, deadline, false);
  }

  /** The driver's state of each process, or the error that says why there is none. */
  async states(
    pids: number[],
    deadline?: Deadline,
  ): Promise<Array<{ pid: number; state?: StateName; error?: GpuError }>> {
    const call = deadline ? { deadline } : {};
    return Promise.all(
      pids.map(async (pid) => {
        try {
          const halt = await this.haltOf(pid);
          if (halt) return { pid, error: haltError(halt, "getState") };
          return { pid, state: stateName(await this.backend.getState(pid, call)) };
        } catch (err) {
          return { pid, error: asGpuError(err, pid, "getState") };
        }
      }),
    );
  }

  private async operate(
    op: OperationKind,
    pids: number[],
    deviceMap: DeviceMap | undefined,
    deadline: Deadline | undefined,
    rollbackOnFailure: boolean,
  ): Promise<OperationRecord> {
    const startedAt = new Date();
    const t0 = performance.now();
    const run: Run = { call: deadline ? { deadline } : {}, aborted: false };
    const failures: GpuError[] = [];
    const chains = pids.map((pid): Chain => ({ rec: { pid, skipped: false, phasesMs: {} } }));
    this.log.info({ op, pids, backend: this.backend.description }, `gpu ${op} starting`);

    // The driver blocks on a stopped or traced process until it runs again (H200: even GetState), so such a
    // set is refused before any call; no process of it was touched, so there is nothing to roll back.
    const halts = await Promise.all(pids.map((pid) => this.haltOf(pid).catch(() => undefined)));
    for (const [i, halt] of halts.entries()) {
      const c = chains[i];
      if (!halt || !c) continue;
      const e = haltError(halt, "getState");
      failures.push(e);
      c.rec.error = e.toJSON();
    }

    const refused = failures.length > 0;
    if (!refused)
      await Promise.all(
        chains.map(async (c) => {
          try {
            if (op === "checkpoint") await this.checkpointOne(c, run);
            else await this.restoreOne(c, deviceMap, run);
          } catch (err) {
            const e = asGpuError(err, c.rec.pid, "getState");
            e.state ??= c.known;
            failures.push(e);
            c.rec.error = e.toJSON();
            run.aborted = true;
          }
          if (c.known !== undefined) c.rec.endState = stateName(c.known);
        }),
      );

    let rollback: RollbackRecord | undefined;
    if (failures.length && rollbackOnFailure && !refused) rollback = await this.rollback(chains, deviceMap);

    const record = summarize(
      op,
      this.backend.description,
      pids,
      startedAt,
      performance.now() - t0,
      chains,
      failures,
    );
    if (rollback) record.rollback = rollback;
    if (record.ok) this.log.info({ record }, `gpu ${op} done in ${Math.round(record.totalMs)} ms`);
    else
      this.log.error(
        { record },
        `gpu ${op} failed: ${record.failure?.message}${rollback ? (rollback.ok ? "; rolled back to RUNNING" : "; ROLLBACK INCOMPLETE") : ""}`,
      );
    return record;
  }

  private async step<T>(c: Chain, phase: Phase, call: () => Promise<T>): Promise<T> {
    const t = performance.now();
    try {
      return await call();
    } finally {
      c.rec.phasesMs[phase] = (c.rec.phasesMs[phase] ?? 0) + (performance.now() - t);
    }
  }

  private async startState(c: Chain, run: Run): Promise<ProcessState> {
    const pid = c.rec.pid;
    const s = await this.step(c, "getState", () => this.backend.getState(pid, run.call));
    c.known = s;
    c.rec.startState = stateName(s);
    if (s === ProcessState.FAILED)
      throw new GpuError({
        pid,
        op: "getState",
        code: "CUDA_PROCESS_FAILED",
        driverMessage: "the driver reports the process FAILED",
        state: s,
        hint: "its GPU state is lost; only restarting the process (or restoring an older checkpoint) helps",
      });
    return s;
  }

  private checkAbort(c: Chain, run: Run, next: GpuOp): void {
    if (run.aborted)
      throw new GpuError({
        pid: c.rec.pid,
        op: next,
        code: "ABORTED",
        driverMessage: "not attempted: another process of the set failed",
      });
  }

  private async checkpointOne(c: Chain, run: Run): Promise<void> {
    const pid = c.rec.pid;
    const s = await this.startState(c, run);
    if (s === ProcessState.CHECKPOINTED) {
      c.rec.skipped = true;
      return;
    }
    const before = this.measureVram ? await residentBytes(pid) : undefined;
    if (s === ProcessState.RUNNING) {
      this.checkAbort(c, run, "lock");
      await this.step(c, "lock", () =>
        this.backend.lock(pid, this.lockTimeoutMs, { ...run.call, capMs: this.lockTimeoutMs + 5_000 }),
      );
      c.known = ProcessState.LOCKED;
    }
    this.checkAbort(c, run, "checkpoint");
    await this.step(c, "checkpoint", () => this.backend.checkpoint(pid, run.call));
    c.known = ProcessState.CHECKPOINTED;
    const after = this.measureVram ? await residentBytes(pid) : undefined;
    if (before !== undefined && after !== undefined) c.rec.vramBytes = Math.max(0, after - before);
  }

  private async restoreOne(c: Chain, deviceMap: DeviceMap | undefined, run: Run): Promise<void> {
    const pid = c.rec.pid;
    const s = await this.startState(c, run);
    if (s === ProcessState.RUNNING) {
      c.rec.skipped = true;
      return;
    }
    const before = this.measureVram ? await residentBytes(pid) : undefined;
    await this.toRunning(pid, s, {
      restore: async () => {
        this.checkAbort(c, run, "restore");
        await this.step(c, "restore", () => this.backend.restore(pid, deviceMap, run.call));
        c.known = ProcessState.LOCKED;
      },
      unlock: async () => {
        this.checkAbort(c, run, "unlock");
        await this.step(c, "unlock", () => this.backend.unlock(pid, run.call));
        c.known = ProcessState.RUNNING;
      },
    });
    const after = this.measureVram ? await residentBytes(pid) : undefined;
    if (before !== undefined && after !== undefined) c.rec.vramBytes = Math.max(0, before - after);
  }

  /** The one walk back to RUNNING: CHECKPOINTED → restore → LOCKED → unlock → RUNNING, from where it stands. */
  private async toRunning(
    pid: number,
    from: ProcessState | undefined,
    steps: { restore(): Promise<void>; unlock(): Promise<void> },
  ): Promise<ProcessState> {
    let now = from;
    if (now === ProcessState.FAILED)
      throw new GpuError({
        pid,
        op: "restore",
        code: "CUDA_PROCESS_FAILED",
        driverMessage: "the driver reports the process FAILED; it cannot be brought back",
        state: now,
      });
    if (now === ProcessState.CHECKPOINTED) {
      await steps.restore();
      now = ProcessState.LOCKED;
    }
    if (now === ProcessState.LOCKED) {
      await steps.unlock();
      now = ProcessState.RUNNING;
    }
    if (now === undefined)
      throw new GpuError({ pid, op: "getState", code: "STATE_UNKNOWN", driverMessage: "state unknown" });
    return now;
  }

  /**
   * A remap the driver refuses (seen on the H200: CUDA_ERROR_INVALID_VALUE) must not strand the process
   * CHECKPOINTED: without the map the driver restores it onto the GPUs it was checkpointed from.
   */
  private async restoreForRollback(
    pid: number,
    deviceMap: DeviceMap | undefined,
    call: CallOptions,
  ): Promise<void> {
    try {
      await this.backend.restore(pid, deviceMap, call);
    } catch (err) {
      if (!deviceMap?.length) throw err;
      this.log.warn(
        { pid, err: asGpuError(err, pid, "restore").toJSON() },
        "rollback: restore with the device map failed; restoring onto the original GPUs",
      );
      await this.backend.restore(pid, undefined, call);
    }
  }

  /** Every process back to RUNNING, from whatever state each is in (asked again: a failed call may have acted). */
  private async rollback(chains: Chain[], deviceMap: DeviceMap | undefined): Promise<RollbackRecord> {
    const t0 = performance.now();
    const deadline = Deadline.after(this.rollbackMs, { what: "GPU rollback" });
    const call = { deadline };
    const processes = await Promise.all(
      chains.map(async (c): Promise<RollbackRecord["processes"][number]> => {
        const pid = c.rec.pid;
        let from = c.known;
        try {
          from = await this.backend.getState(pid, call);
        } catch (err) {
          this.log.warn({ pid, err: asGpuError(err, pid, "getState").toJSON() }, "rollback: state unknown");
        }
        let now = from;
        try {
          now = await this.toRunning(pid, from, {
            restore: async () => {
              await this.restoreForRollback(pid, deviceMap, call);
              now = ProcessState.LOCKED;
            },
            unlock: () => this.backend.unlock(pid, call),
          });
          c.known = now;
          c.rec.endState = stateName(now);
          return { pid, ...(from !== undefined ? { from: stateName(from) } : {}), to: stateName(now) };
        } catch (err) {
          const e = asGpuError(err, pid, "unlock");
          e.state ??= now;
          if (now !== undefined) c.rec.endState = stateName(now);
          return {
            pid,
            ...(from !== undefined ? { from: stateName(from) } : {}),
            ...(now !== undefined ? { to: stateName(now) } : {}),
            error: e.toJSON(),
          };
        }
      }),
    );
    deadline.dispose();
    return {
      ok: processes.every((p) => !p.error && p.to === "RUNNING"),
      ms: performance.now() - t0,
      processes,
    };
  }
}

function haltError(halt: Halt, op: GpuOp): GpuError {
  const traced = halt.tracerPid !== 0;
  return new GpuError({
    pid: halt.pid,
    op,
    code: traced ? "PROCESS_TRACED" : "PROCESS_STOPPED",
    driverMessage: `not asked: pid ${halt.pid} is ${describeHalt(halt)}, and the driver blocks on such a process until it runs again`,
    hint: traced
      ? `detach the debugger or tracer (pid ${halt.tracerPid}) from pid ${halt.pid}, then try again`
      : `continue it with \`kill -CONT ${halt.pid}\`, then try again`,
  });
}

function asGpuError(err: unknown, pid: number, op: GpuOp): GpuError {
  if (err instanceof GpuError) return err;
  return new GpuError({
    pid,
    op,
    code: "BACKEND_FAILURE",
    driverMessage: (err as Error)?.message ?? String(err),
  });
}

function summarize(
  op: OperationKind,
  backend: string,
  pids: number[],
  startedAt: Date,
  totalMs: number,
  chains: Chain[],
  failures: GpuError[],
): OperationRecord {
  const phasesMs: Partial<Record<Phase, number>> = {};
  let vram = 0;
  let vramKnown = false;
  for (const c of chains) {
    for (const [k, v] of Object.entries(c.rec.phasesMs) as Array<[Phase, number]>)
      phasesMs[k] = Math.max(phasesMs[k] ?? 0, v);
    if (c.rec.vramBytes !== undefined) {
      vram += c.rec.vramBytes;
      vramKnown = true;
    }
  }
  // The process that failed first is the cause; ABORTED ones only followed it.
  const real = failures.filter((f) => f.code !== "ABORTED");
  const first = real[0] ?? failures[0];
  return {
    op,
    backend,
    pids,
    ok: failures.length === 0,
    startedAt: startedAt.toISOString(),
    totalMs,
    phasesMs,
    ...(vramKnown ? { vramBytes: vram } : {}),
    processes: chains.map((c) => c.rec),
    ...(first ? { failure: first.toJSON() } : {}),
    failures: failures.map((f) => f.toJSON()),
  };
}

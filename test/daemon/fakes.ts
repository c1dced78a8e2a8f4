/**
 * Fakes for the daemon's stages: a driver with the checkpoint API's state machine and injectable faults, a
 * host with containers, freezers and processes, and a policy and metrics that record what they are told. The
 * journal, plan store, containers and GPU engine are the real ones.
 */
import { mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { Deadline } from "../../src/base/deadline.js";
import { silentLogger } from "../../src/base/log.js";
import { limitRaises } from "../../src/checkpoint/admission.js";
import type { StageMetrics } from "../../src/checkpoint/metrics.js";
import type { Admission, CheckpointPolicy, FreezeContext } from "../../src/checkpoint/policy.js";
import type { RestorePlan } from "../../src/checkpoint/restore-plan.js";
import type { TaskRef } from "../../src/containerd/tasks.js";
import { Containers } from "../../src/daemon/containers.js";
import { Journal, type JournalEntry } from "../../src/daemon/journal.js";
import { type LimitHost, MemoryLimits } from "../../src/daemon/memory-limits.js";
import { PlanStore } from "../../src/daemon/plan-store.js";
import type { HookRequest } from "../../src/daemon/protocol.js";
import type {
  ContainerOnHost,
  FreezerControl,
  HostView,
  StageContext,
  TaskRuntime,
} from "../../src/daemon/stage-context.js";
import { type CallOptions, callDeadline, type GpuBackend, withinDeadline } from "../../src/gpu/backend.js";
import { GpuEngine } from "../../src/gpu/engine.js";
import { type DeviceMap, GpuError, type GpuOp, ProcessState } from "../../src/gpu/types.js";
import type { MemoryLevel } from "../../src/host/cgroup.js";

/**
 * How one driver call misbehaves: fails (CUDA_ERROR_UNKNOWN), takes `ms`, never answers, or holds the event
 * loop for `ms` (so it answers although its deadline passed meanwhile).
 */
export type Fault =
  | { kind: "fail"; times?: number }
  | { kind: "slow"; ms: number }
  | { kind: "busy"; ms: number }
  | { kind: "hang" };

/** The driver's checkpoint state machine per pid, as the real one answers. */
export class FakeDriver implements GpuBackend {
  readonly kind = "driver" as const;
  readonly description = "fake driver";
  readonly states = new Map<number, ProcessState>();
  readonly faults = new Map<string, Fault>();
  readonly calls: Array<{ pid: number; op: GpuOp; deviceMap?: DeviceMap }> = [];
  /**
   * The driver works on one call per process at a time (the GPU double's workload too): a call waits for the
   * one before it, also when that one's caller stopped waiting. A hung call is dropped, as the double drops it.
   */
  private readonly queues = new Map<number, Promise<unknown>>();

  /** `pid` fails (or stalls) at `op`. */
  fault(pid: number, op: GpuOp, fault: Fault): void {
    this.faults.set(`${pid}:${op}`, fault);
  }

  private async act(
    pid: number,
    op: GpuOp,
    opts: CallOptions | undefined,
    change: () => void,
    deviceMap?: DeviceMap,
  ): Promise<void> {
    this.calls.push({ pid, op, ...(deviceMap ? { deviceMap } : {}) });
    const deadline = callDeadline(op, opts);
    const fault = this.faults.get(`${pid}:${op}`);
    if (fault?.kind === "busy") for (const until = Date.now() + fault.ms; Date.now() < until; );
    if (fault?.kind === "hang") return withinDeadline(pid, op, deadline, new Promise<void>(() => undefined));
    const before = this.queues.get(pid) ?? Promise.resolve();
    const work = (async () => {
      await before.catch(() => undefined);
      if (fault?.kind === "slow") await new Promise((r) => setTimeout(r, fault.ms));
      if (fault?.kind === "fail" && (fault.times ?? Number.POSITIVE_INFINITY) > 0) {
        if (fault.times !== undefined) fault.times--;
        throw new GpuError({
          pid,
          op,
          code: "CUDA_ERROR_UNKNOWN",
          result: 999,
          driverMessage: "unknown error",
        });
      }
      if (!this.states.has(pid))
        throw new GpuError({
          pid,
          op,
          code: "CUDA_ERROR_NOT_INITIALIZED",
          result: 3,
          driverMessage: "initialization error",
        });
      change();
    })();
    this.queues.set(
      pid,
      work.catch(() => undefined),
    );
    await withinDeadline(pid, op, deadline, work);
  }

  private move(pid: number, op: GpuOp, from: ProcessState, to: ProcessState): () => void {
    return () => {
      if (this.states.get(pid) !== from)
        throw new GpuError({
          pid,
          op,
          code: "CUDA_ERROR_ILLEGAL_STATE",
          result: 401,
          driverMessage: "the operation cannot be performed in the present state",
        });
      this.states.set(pid, to);
    };
  }

  async getState(pid: number, opts?: CallOptions): Promise<ProcessState> {
    await this.act(pid, "getState", opts, () => undefined);
    return this.states.get(pid) as ProcessState;
  }
  lock(pid: number, _timeoutMs: number, opts?: CallOptions): Promise<void> {
    return this.act(pid, "lock", opts, this.move(pid, "lock", ProcessState.RUNNING, ProcessState.LOCKED));
  }
  checkpoint(pid: number, opts?: CallOptions): Promise<void> {
    return this.act(
      pid,
      "checkpoint",
      opts,
      this.move(pid, "checkpoint", ProcessState.LOCKED, ProcessState.CHECKPOINTED),
    );
  }
  restore(pid: number, deviceMap?: DeviceMap, opts?: CallOptions): Promise<void> {
    return this.act(
      pid,
      "restore",
      opts,
      this.move(pid, "restore", ProcessState.CHECKPOINTED, ProcessState.LOCKED),
      deviceMap,
    );
  }
  unlock(pid: number, opts?: CallOptions): Promise<void> {
    return this.act(pid, "unlock", opts, this.move(pid, "unlock", ProcessState.LOCKED, ProcessState.RUNNING));
  }
  async getRestoreThreadId(pid: number): Promise<number> {
    return pid;
  }
  close(): void {}
}

export class FakeFreezer implements FreezerControl {
  readonly dir = "/fake/cgroup";
  frozen = false;
  /** Makes the next freeze() throw, as a cgroup that will not freeze does. */
  failFreeze = false;
  async isFrozen(): Promise<boolean> {
    return this.frozen;
  }
  async thaw(): Promise<void> {
    this.frozen = false;
  }
  async freeze(): Promise<void> {
    if (this.failFreeze) throw new Error(`cgroup ${this.dir} did not freeze within 5000 ms`);
    this.frozen = true;
  }
}

/** One container: its init pid, its CUDA pids (on the fake driver) and its freezer. */
export interface FakeContainer {
  initPid: number;
  cudaPids: number[];
  freezer: FakeFreezer;
  /** Its memory cgroup and the pod's (innermost first), as FakeCgroups holds them. */
  memoryDirs: string[];
}

/**
 * Memory cgroups: each dir's limit files, usage and unreclaimable part; writes are recorded, and a write can be
 * made to fail (EBUSY, as v1 answers a limit below what it cannot reclaim).
 */
export class FakeCgroups implements LimitHost {
  readonly levels = new Map<string, MemoryLevel>();
  readonly writes: string[] = [];
  readonly traces = new Set<string>();
  failWrite?: (dir: string, file: string, text: string) => boolean;

  /** A v2 cgroup with memory.max `limit` (undefined: "max") holding `usage` bytes, all unreclaimable. */
  add(dir: string, limit: number | undefined, usage: number): MemoryLevel {
    const level: MemoryLevel = {
      dir,
      version: 2,
      usage,
      unreclaimable: usage,
      limits: [
        limit === undefined
          ? { file: "memory.max", text: "max" }
          : { file: "memory.max", text: String(limit), bytes: limit },
      ],
    };
    this.levels.set(dir, level);
    return level;
  }
  limit(dir: string): string | undefined {
    return this.levels.get(dir)?.limits[0]?.text;
  }
  use(dir: string, bytes: number): void {
    const level = this.levels.get(dir);
    if (level) {
      level.usage = bytes;
      level.unreclaimable = bytes;
    }
  }
  async readLevel(dir: string): Promise<MemoryLevel | undefined> {
    const level = this.levels.get(dir);
    return level ? structuredClone(level) : undefined;
  }
  async writeLimit(dir: string, file: string, text: string): Promise<void> {
    if (this.failWrite?.(dir, file, text)) throw new Error(`write ${dir}/${file}: Device or resource busy`);
    const level = this.levels.get(dir);
    const l = level?.limits.find((x) => x.file === file);
    if (!l) throw new Error(`write ${dir}/${file}: No such file or directory`);
    l.text = text;
    if (text === "max") delete l.bytes;
    else l.bytes = Number(text);
    this.writes.push(`${dir}/${file}=${text}`);
  }
  async traced(dir: string): Promise<boolean> {
    return this.traces.has(dir);
  }
}

export class FakeHost implements HostView {
  readonly containers = new Map<number, FakeContainer>();
  /** Processes that exist, with their tracer (0: none), parent and command line. */
  readonly processes = new Map<
    number,
    { startTime: string; tracer: number; ppid?: number; args?: string[] }
  >();
  /** Paths that exist (CRIU's image directory, as containerd keeps it until it has stored the images). */
  readonly paths = new Set<string>();

  constructor(
    private readonly driver: FakeDriver,
    readonly cgroups: FakeCgroups = new FakeCgroups(),
  ) {}

  /** A running GPU container whose processes are RUNNING on the fake driver. */
  addContainer(initPid: number, cudaPids: number[], memoryDirs: string[] = []): FakeContainer {
    const c: FakeContainer = { initPid, cudaPids, freezer: new FakeFreezer(), memoryDirs };
    this.containers.set(initPid, c);
    for (const pid of [initPid, ...cudaPids]) this.processes.set(pid, { startTime: "1", tracer: 0 });
    for (const pid of cudaPids) this.driver.states.set(pid, ProcessState.RUNNING);
    return c;
  }

  async container(initPid: number): Promise<ContainerOnHost> {
    const c = this.containers.get(initPid);
    if (!c)
      throw new Error(`pid ${initPid} not found (no /proc/${initPid}/cgroup): is the container running?`);
    return {
      freezer: () => c.freezer,
      discover: async (mode: "held" | "any", deadline?: Deadline) => {
        const cuda: Array<{ pid: number; state: ProcessState }> = [];
        for (const pid of c.cudaPids) {
          if (!this.processes.has(pid)) continue;
          const state = await this.driver.getState(pid, deadline ? { deadline } : {});
          // A CHECKPOINTED process holds no NVIDIA device: "held" does not see it.
          if (mode === "any" || state !== ProcessState.CHECKPOINTED) cuda.push({ pid, state });
        }
        return { candidates: [initPid, ...c.cudaPids], cuda, skipped: [] };
      },
      memoryLevels: async () => {
        const levels: MemoryLevel[] = [];
        for (const dir of c.memoryDirs) {
          const level = await this.cgroups.readLevel(dir);
          if (level) levels.push(level);
        }
        return levels;
      },
    };
  }
  async identify(pid: number) {
    const p = this.processes.get(pid);
    return p ? { pid, startTime: p.startTime } : undefined;
  }
  async isSameProcess(identity: { pid: number; startTime: string }): Promise<boolean> {
    return this.processes.get(identity.pid)?.startTime === identity.startTime;
  }
  async tracerOf(pid: number): Promise<number | undefined> {
    return this.processes.get(pid)?.tracer;
  }
  async livingPids(pids: readonly number[]): Promise<number[]> {
    return pids.filter((pid) => this.processes.has(pid));
  }
  async parentOf(pid: number): Promise<number | undefined> {
    return this.processes.get(pid)?.ppid;
  }
  async commandLine(pid: number): Promise<string[]> {
    return this.processes.get(pid)?.args ?? [];
  }
  async realPath(path: string): Promise<string | undefined> {
    return path.startsWith("/proc/") ? "/tmp/ctrd-checkpoint123" : path;
  }
  async exists(path: string): Promise<boolean> {
    return this.paths.has(path);
  }
  async openFiles(): Promise<string[]> {
    return [];
  }
  async readTail(): Promise<string | undefined> {
    return undefined;
  }

  /**
   * A checkpoint under way: CRIU (9000, the hook's parent) run by runc (8999, in containerd namespace "k8s.io"),
   * writing into the image directory containerd made. Returns what a deadline cut does to them.
   */
  checkpointUnderWay(): { cut(): void; finish(): void } {
    this.processes.set(8999, {
      startTime: "5",
      tracer: 0,
      args: ["runc", "--root", "/run/containerd/runc/k8s.io", "checkpoint"],
    });
    this.processes.set(9000, { startTime: "7", tracer: 0, ppid: 8999 });
    this.paths.add("/tmp/ctrd-checkpoint123");
    return {
      // containerd's shim kills runc and containerd removes the images; CRIU goes on until its hook returns.
      cut: () => {
        this.processes.delete(8999);
        this.paths.delete("/tmp/ctrd-checkpoint123");
      },
      finish: () => {
        this.processes.delete(9000);
        this.processes.delete(8999);
        this.paths.delete("/tmp/ctrd-checkpoint123");
      },
    };
  }
}

/** containerd's Tasks API as the daemon uses it: records the resumes; `unreachable` makes them fail. */
export class FakeRuntime implements TaskRuntime {
  readonly resumed: TaskRef[] = [];
  unreachable = false;
  /** Called on each resume: what containerd's shim does (runc resume thaws the cgroup). */
  onResume?: (task: TaskRef) => void;
  async resume(task: TaskRef): Promise<void> {
    if (this.unreachable) throw new Error("containerd's Tasks/Resume failed: connect ENOENT");
    this.resumed.push(task);
    this.onResume?.(task);
  }
}

export class RecordingMetrics implements StageMetrics {
  readonly results: string[] = [];
  readonly repairs: string[] = [];
  phase(): void {}
  result(kind: "checkpoint" | "restore", outcome: string): void {
    this.results.push(`${kind}:${outcome}`);
  }
  record(): void {}
  repaired(reason: string, count: number): void {
    this.repairs.push(`${reason}:${count}`);
  }
}

export class FakePolicy implements CheckpointPolicy {
  refuse?: string;
  plan?: RestorePlan;
  failRecord = false;
  /** What admission expects a checkpoint (or restore) to stage; undefined: unknown. */
  stagedBytes?: number;
  /** Refuses a restore's staging, as the node's admission does without room. */
  refuseRestore?: string;
  async admit(ctx: FreezeContext): Promise<Admission> {
    const snapshot = { inventory: { gpus: [] }, apps: [] };
    const raises =
      this.stagedBytes === undefined ? [] : limitRaises(await ctx.memoryLevels(), this.stagedBytes);
    return this.refuse
      ? { verdict: { ok: false as const, error: this.refuse }, snapshot, raises: [] }
      : { verdict: { ok: true as const }, snapshot, raises };
  }
  async admitRestore(
    _id: string,
    bytes: number | undefined,
    levels: () => Promise<MemoryLevel[]>,
    usage = 0,
  ) {
    if (this.refuseRestore) return { verdict: { ok: false as const, error: this.refuseRestore }, raises: [] };
    return {
      verdict: { ok: true as const },
      raises: bytes === undefined ? [] : limitRaises(await levels(), bytes, usage),
    };
  }
  /** What the CUDA processes still hold after the freeze that CRIU cannot dump. */
  undumpableAfterFreeze?: string;
  async checkFrozen(): Promise<string | undefined> {
    return this.undumpableAfterFreeze;
  }
  async recordCheckpoint(): Promise<void> {
    if (this.failRecord) throw new Error("metadata writer broke");
  }
  async planRestore(): Promise<RestorePlan> {
    return this.plan ?? { ok: true, deviceMap: [], reason: "same GPUs" };
  }
}

export interface Rig {
  ctx: StageContext;
  driver: FakeDriver;
  host: FakeHost;
  policy: FakePolicy;
  metrics: RecordingMetrics;
  runtime: FakeRuntime;
  stateDir: string;
  /** The journal's entries on disk. */
  journalEntries(): JournalEntry[];
  /** The memory-limit records on disk. */
  limitRecords(): string[];
  cleanup(): void;
}

/** A stage context over fakes, with a real journal and plan store in a temporary directory. */
export async function rig(timing: Partial<StageContext["timing"]> = {}): Promise<Rig> {
  const stateDir = mkdtempSync(join(tmpdir(), "kyb-stages-"));
  const driver = new FakeDriver();
  const host = new FakeHost(driver);
  const policy = new FakePolicy();
  const metrics = new RecordingMetrics();
  const runtime = new FakeRuntime();
  const journal = new Journal(join(stateDir, "journal"));
  await journal.open();
  const limits = new MemoryLimits(join(stateDir, "memory-limits"), host.cgroups, silentLogger, {
    retryMs: 10,
    marginBytes: 0,
  });
  await limits.open();
  const ctx: StageContext = {
    log: silentLogger,
    journal,
    containers: new Containers(),
    plans: new PlanStore(join(stateDir, "plans")),
    limits,
    policy,
    metrics,
    engine: new GpuEngine({
      backend: driver,
      measureVram: false,
      lockTimeoutMs: 1000,
      rollbackMs: 2000,
      // The fake pids are no processes of this host: nothing is stopped or traced.
      haltOf: async () => undefined,
    }),
    host,
    runtime,
    timing: { gpuBudgetMs: 2000, frozenGraceMs: 200, pollMs: 5, retryBackoffMs: 1, ...timing },
  };
  return {
    ctx,
    driver,
    host,
    policy,
    metrics,
    runtime,
    stateDir,
    journalEntries: () =>
      readdirSync(join(stateDir, "journal"))
        .filter((n) => n.endsWith(".json"))
        .map((n) => JSON.parse(readFileSync(join(stateDir, "journal", n), "utf8")) as JournalEntry),
    cleanup: () => {
      limits.close();
      rmSync(stateDir, { recursive: true, force: true });
    },
    limitRecords: () => readdirSync(join(stateDir, "memory-limits")).filter((n) => n.endsWith(".json")),
  };
}

/** A hook request as the hook sends it for `action`. */
export function hookRequest(
  action: HookRequest["action"],
  initPid: number,
  extra: Partial<HookRequest> = {},
): HookRequest {
  return {
    kind: "hook",
    action,
    containerId: "c0ffee",
    initPid: action === "pre-restore" ? 0 : initPid,
    criuPid: 9000,
    deadlineMs: 60_000,
    ...extra,
  };
}

export const states = (driver: FakeDriver, pids: number[]): ProcessState[] =>
  pids.map((pid) => driver.states.get(pid) as ProcessState);

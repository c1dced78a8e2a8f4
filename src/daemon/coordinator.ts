import { randomUUID } from "node:crypto";
import { setTimeout as sleep } from "node:timers/promises";
import type { Logger } from "../base/log.js";
import type { GpuRequest } from "../checkpoint/gpu-request.js";
import type { RestorePlan } from "../checkpoint/metadata.js";
import type { CheckpointOps, ContainerNames } from "../checkpoint/policy.js";
import type { GpuBackend } from "../gpu/backend.js";
import { discoverCudaProcesses } from "../gpu/discovery.js";
import { GpuEngine, type OperationRecord } from "../gpu/engine.js";
import { type DeviceMap, ProcessState } from "../gpu/types.js";
import { Freezer } from "../host/freezer.js";
import { identify, isSameProcess, type ProcessIdentity, tracerOf } from "../host/proc.js";
import type { Journal, JournalEntry } from "./journal.js";
import type { RestorePlanStore } from "./plan-store.js";
import type { ContainerActivity, DaemonReply, HookRequest, LastOperationStatus } from "./protocol.js";

/** On shutdown, how long watchers may still wait for a container's resume before leaving it to the journal. */
const CLOSE_GRACE_MS = 5000;

export interface CoordinatorOptions {
  backend: GpuBackend;
  journal: Journal;
  log: Logger;
  /** Longest the GPU stage of one checkpoint may take; must stay well inside the caller's CRI deadline. */
  gpuBudgetMs: number;
  /** After CRIU is done, how long a container may stay frozen before kybernate thaws it itself. */
  frozenGraceMs: number;
  /** The driver's lock timeout. */
  lockTimeoutMs: number;
  pollMs?: number;
  /** Admission, GPU metadata, restore compatibility and metrics (src/ops); absent = none of them. */
  ops?: CheckpointOps;
  /** Pod and container names for logs (the NRI plugin knows them). */
  names?: (containerId: string) => ContainerNames | undefined;
  /** The GPUs a container's spec asks for (from NRI), so a restore maps onto the container's GPUs. */
  gpuRequest?: (containerId: string) => GpuRequest | undefined;
  /** Keeps a restore's device map from pre-restore until its processes run, for a repair after a restart. */
  restorePlans?: RestorePlanStore;
}

/** What the status reply carries, plus the engine's record of the operation. */
export interface LastOperation extends LastOperationStatus {
  record?: OperationRecord;
}

/**
 * Owns every GPU state change of a container around CRIU: the freeze at pre-dump, the thaw when containerd
 * resumes the container, the thaw at post-resume after a restore, and the repair of whatever a crash left.
 * One operation per container at a time; each is journalled before the driver is touched.
 */
export class Coordinator {
  private readonly busy = new Map<string, ContainerActivity>();
  private readonly last = new Map<string, LastOperation>();
  private readonly watchers = new Set<Promise<void>>();
  /** Plans made at pre-restore, used at the post-resume that follows: one metadata read and GPU query a restore. */
  private readonly plans = new Map<string, RestorePlan | undefined>();
  /** Set by close(): watchers keep going until then, so a resume that is already coming is still handled. */
  private giveUpAt = Number.POSITIVE_INFINITY;

  constructor(private readonly options: CoordinatorOptions) {}

  activity(): ContainerActivity[] {
    return [...this.busy.values()];
  }

  lastOperations(): LastOperation[] {
    return [...this.last.values()];
  }

  async handle(request: HookRequest): Promise<DaemonReply> {
    const current = this.busy.get(request.containerId);
    if (current) {
      const error = `container ${request.containerId} is busy: a ${current.action} started at ${current.since} is still in progress; retry when it has finished`;
      this.options.log.warn(
        { containerId: request.containerId, action: request.action, error },
        "GPU stage refused",
      );
      return { ok: false, error };
    }
    const activity = {
      containerId: request.containerId,
      action: request.action,
      since: new Date().toISOString(),
    };
    this.busy.set(request.containerId, activity);
    let keepBusy = false;
    try {
      if (request.action === "pre-dump") {
        const result = await this.preDump(request);
        keepBusy = result.watching;
        return result.reply;
      }
      if (request.action === "pre-restore") return await this.preRestore(request);
      return await this.postResume(request);
    } finally {
      if (!keepBusy) this.busy.delete(request.containerId);
    }
  }

  /**
   * containerd has frozen the container. The driver cannot lock frozen threads, so: thaw, move VRAM to host
   * memory, freeze again (containerd's `runc resume` fails on a container that is not paused), and start
   * watching for the resume that no CRIU action reports.
   */
  private async preDump(request: HookRequest): Promise<{ reply: DaemonReply; watching: boolean }> {
    const { log } = this.options;
    const started = performance.now();
    const budgetMs = Math.min(this.options.gpuBudgetMs, request.deadlineMs - 2000);
    const names = this.options.names?.(request.containerId);
    const clog = log.child({ containerId: request.containerId, ...names, action: "pre-dump" });
    const ops = this.options.ops;
    let freezer: Freezer;
    let criu: ProcessIdentity | undefined;
    try {
      freezer = await Freezer.ofPid(request.initPid);
      criu = await identify(request.criuPid);
    } catch (error) {
      return {
        reply: this.fail(request, `cannot find the container's cgroup: ${(error as Error).message}`),
        watching: false,
      };
    }
    const wasFrozen = await freezer.isFrozen();
    const thawStarted = performance.now();
    if (wasFrozen) await freezer.thaw();
    const discoverStarted = performance.now();
    ops?.phase("thaw_cgroup", discoverStarted - thawStarted);
    const engine = this.engine(budgetMs);
    let record: OperationRecord | undefined;
    let entry: JournalEntry | undefined;
    try {
      const found = await discoverCudaProcesses({
        initPid: request.initPid,
        backend: this.options.backend,
        mode: "held",
      });
      const pids = found.cuda.filter((p) => p.state === ProcessState.RUNNING).map((p) => p.pid);
      ops?.phase("discover", performance.now() - discoverStarted);
      if (pids.length === 0) {
        clog.info({ skipped: found.skipped }, "no running CUDA process in the container; nothing to move");
        return { reply: { ok: true, data: { pids: [] } }, watching: false };
      }
      const context = {
        containerId: request.containerId,
        pids,
        initPid: request.initPid,
        ...(request.imageDir ? { imageDir: request.imageDir } : {}),
        ...(names ? { names } : {}),
      };
      const admission = await ops?.admit(context);
      if (admission && !admission.verdict.ok) {
        ops?.result("checkpoint", "refused");
        return { reply: this.fail(request, admission.verdict.error), watching: false };
      }
      entry = {
        id: randomUUID(),
        containerId: request.containerId,
        action: "pre-dump",
        pids,
        initPid: request.initPid,
        startedAt: new Date().toISOString(),
      };
      await this.options.journal.record(entry);
      const elapsed = performance.now() - started;
      record = await engine.freeze(pids);
      ops?.record(record);
      if (!record.ok) {
        ops?.result("checkpoint", "failure");
        await this.options.journal.complete(entry.id);
        return { reply: this.fail(request, describeFailure(record), record), watching: false };
      }
      if (performance.now() - started > budgetMs) {
        await engine.ensureRunning(pids);
        await this.options.journal.complete(entry.id);
        ops?.result("checkpoint", "failure");
        return {
          reply: this.fail(
            request,
            `the GPU stage took ${Math.round(performance.now() - started)} ms, over its budget of ${budgetMs} ms (discovery ${Math.round(elapsed)} ms): raise kybernate's --gpu-budget and the caller's checkpoint timeout (kubelet ?timeout=, crictl checkpoint --timeout)`,
            record,
          ),
          watching: false,
        };
      }
      if (admission) await ops?.recordCheckpoint(context, record, admission.snapshot);
    } catch (error) {
      // Anything unexpected after the driver was touched must not leave the GPU state in host memory with no
      // watcher to bring it back: undo, and fail this checkpoint cleanly.
      clog.error({ err: error }, "GPU stage failed unexpectedly; bringing the GPU back");
      if (entry) {
        await engine.ensureRunning(entry.pids);
        await this.options.journal.complete(entry.id);
      }
      ops?.result("checkpoint", "failure");
      record = undefined;
      entry = undefined;
      return {
        reply: this.fail(request, `the GPU stage failed: ${(error as Error).message}`),
        watching: false,
      };
    } finally {
      if (wasFrozen) {
        try {
          const refreezeStarted = performance.now();
          await freezer.freeze();
          ops?.phase("refreeze", performance.now() - refreezeStarted);
        } catch (error) {
          // Without the freeze, containerd's resume fails and CRIU would dump a running container: undo.
          clog.error({ err: error }, "could not freeze the container again; bringing the GPU back");
          if (entry) {
            await engine.ensureRunning(entry.pids);
            await this.options.journal.complete(entry.id);
          }
          ops?.result("checkpoint", "failure");
          // biome-ignore lint/correctness/noUnsafeFinally: the freeze failure overrides any result.
          return {
            reply: this.fail(request, `could not freeze the container again: ${(error as Error).message}`),
            watching: false,
          };
        }
      }
    }
    if (!entry || !record) return { reply: { ok: true }, watching: false };
    const watching: JournalEntry = { ...entry, action: "thaw-after-resume" };
    await this.options.journal.update(watching);
    ops?.result("checkpoint", "success");
    clog.info(
      { pids: entry.pids, ms: Math.round(performance.now() - started), phasesMs: record.phasesMs },
      "GPU state moved to host memory",
    );
    this.watch(watching, freezer, criu);
    return { reply: { ok: true, data: { pids: entry.pids, record } }, watching: true };
  }

  /**
   * Before CRIU creates any process: a checkpoint this node cannot restore (another GPU model, too few GPUs,
   * a driver too old to remap) is refused here, where a failure still fails StartContainer cleanly. At
   * post-resume runc would ignore it and leave the processes CHECKPOINTED.
   */
  private async preRestore(request: HookRequest): Promise<DaemonReply> {
    const ops = this.options.ops;
    if (!ops) return { ok: true };
    const t0 = performance.now();
    const clog = this.options.log.child({ containerId: request.containerId, action: "pre-restore" });
    const plan = await this.planRestore(request, clog);
    if (plan && !plan.ok) {
      ops.result("restore", "refused");
      return this.fail(request, `${plan.error}; nothing was restored (the checkpoint archive is unchanged)`);
    }
    this.plans.set(request.containerId, plan);
    if (plan?.deviceMap.length) await this.savePlan(request.containerId, plan.deviceMap, clog);
    // StartContainer waits for this stage: its cost is reported by the GPU end-to-end run.
    clog.info({ ms: Math.round(performance.now() - t0) }, "restore planned");
    return { ok: true };
  }

  /** The compatibility plan; no plan (metadata unreadable) means "restore onto the same GPUs". */
  private async planRestore(request: HookRequest, clog: Logger): Promise<RestorePlan | undefined> {
    return this.options.ops
      ?.planRestore({
        containerId: request.containerId,
        criuPid: request.criuPid,
        ...(request.imageDir ? { imageDir: request.imageDir } : {}),
        ...this.gpuRequestOf(request.containerId),
      })
      .catch((error: Error) => {
        // An archive kybernate wrote no metadata into is no reason to refuse, nor to leave processes CHECKPOINTED.
        clog.warn(
          { err: error },
          "no restore plan (checkpoint metadata unreadable); restoring onto the same GPUs",
        );
        return undefined;
      });
  }

  private async savePlan(containerId: string, deviceMap: DeviceMap, clog: Logger): Promise<void> {
    await this.options.restorePlans?.save(containerId, deviceMap).catch((error: Error) =>
      // Only a repair after a crash needs it; the restore itself goes on from the in-memory plan.
      clog.warn({ err: error }, "could not keep the restore's device map on disk"),
    );
  }

  private gpuRequestOf(containerId: string): { gpuRequest?: GpuRequest } {
    const gpuRequest = this.options.gpuRequest?.(containerId);
    return gpuRequest ? { gpuRequest } : {};
  }

  /** After `runc restore`: the processes run again but their GPU state is still in host memory. */
  private async postResume(request: HookRequest): Promise<DaemonReply> {
    const clog = this.options.log.child({
      containerId: request.containerId,
      ...this.options.names?.(request.containerId),
      action: "post-resume",
    });
    const ops = this.options.ops;
    const engine = this.engine(this.options.gpuBudgetMs);
    const planned = this.plans.has(request.containerId);
    const prePlan = this.plans.get(request.containerId);
    this.plans.delete(request.containerId);
    let pids: number[];
    try {
      const found = await discoverCudaProcesses({
        initPid: request.initPid,
        backend: this.options.backend,
        mode: "any",
      });
      pids = found.cuda.filter((p) => p.state !== ProcessState.RUNNING).map((p) => p.pid);
    } catch (error) {
      return this.fail(
        request,
        `cannot list the restored container's processes: ${(error as Error).message}`,
      );
    }
    if (pids.length === 0) {
      clog.info("no checkpointed CUDA process in the restored container");
      return { ok: true, data: { pids: [] } };
    }
    // Planned at pre-restore; planned here only when that stage did not run (a CRIU config written before it).
    const plan = planned ? prePlan : await this.planRestore(request, clog);
    if (plan && !plan.ok) {
      // The processes stay CHECKPOINTED (their GPU state safe in host memory): a restore onto the wrong
      // GPUs would fail in the driver or, worse, run on a GPU it was not meant for.
      ops?.result("restore", "refused");
      return this.fail(
        request,
        `${plan.error}; the restored processes stay CHECKPOINTED (pids ${pids.join(", ")})`,
      );
    }
    const deviceMap = plan?.deviceMap.length ? plan.deviceMap : undefined;
    const entry: JournalEntry = {
      id: randomUUID(),
      containerId: request.containerId,
      action: "post-resume",
      pids,
      initPid: request.initPid,
      ...(deviceMap ? { deviceMap } : {}),
      startedAt: new Date().toISOString(),
    };
    await this.options.journal.record(entry);
    const record = await this.bringBack(engine, pids, clog, deviceMap);
    await this.options.journal.complete(entry.id);
    if (record.ok) await this.options.restorePlans?.remove(request.containerId).catch(() => undefined);
    ops?.record(record);
    ops?.result("restore", record.ok ? "success" : "failure");
    if (!record.ok) return this.fail(request, describeFailure(record), record);
    this.succeed(request, record);
    clog.info({ pids, ms: record.totalMs, phasesMs: record.phasesMs }, "GPU state restored");
    return { ok: true, data: { pids, record } };
  }

  /** Restore + unlock, retried: runc ignores a post-resume failure, so nobody else will try again. */
  private async bringBack(
    engine: GpuEngine,
    pids: number[],
    clog: Logger,
    deviceMap?: DeviceMap,
  ): Promise<OperationRecord> {
    let record = await engine.thaw(pids, deviceMap);
    for (let attempt = 1; !record.ok && attempt <= 3; attempt++) {
      clog.warn({ attempt, failure: record.failure }, "GPU thaw failed; retrying");
      await sleep(250 * attempt);
      const alive = (await Promise.all(pids.map(async (pid) => ((await identify(pid)) ? pid : 0)))).filter(
        Boolean,
      );
      if (alive.length === 0) return record;
      record = await engine.ensureRunning(alive, deviceMap);
      if (record.ok) this.options.ops?.repaired("retry", alive.length);
    }
    return record;
  }

  /**
   * Waits for CRIU to finish and containerd to resume the container, then brings the GPU back. Covers
   * leave-running checkpoints and failed dumps alike; a container that exited (checkpoint without
   * leave-running) needs nothing.
   */
  private watch(entry: JournalEntry, freezer: Freezer | undefined, criu: ProcessIdentity | undefined): void {
    const watcher = this.awaitResumeAndThaw(entry, freezer, criu)
      .catch((error) =>
        this.options.log.error({ err: error, containerId: entry.containerId }, "resume watcher failed"),
      )
      .finally(() => {
        this.busy.delete(entry.containerId);
        this.watchers.delete(watcher);
      });
    this.watchers.add(watcher);
  }

  private async awaitResumeAndThaw(
    entry: JournalEntry,
    freezer: Freezer | undefined,
    criu: ProcessIdentity | undefined,
  ): Promise<void> {
    const { log, pollMs = 10 } = this.options;
    const clog = log.child({
      containerId: entry.containerId,
      ...this.options.names?.(entry.containerId),
      action: "resume",
    });
    const t0 = performance.now();
    const stopping = () => performance.now() > this.giveUpAt;
    while (criu && (await isSameProcess(criu)) && !stopping()) await sleep(pollMs);
    const criuDone = performance.now();
    let frozenSince: number | undefined;
    for (;;) {
      // What is left unfinished stays in the journal: the next start repairs it.
      if (stopping()) return;
      const alive = (
        await Promise.all(entry.pids.map(async (pid) => ((await identify(pid)) ? pid : 0)))
      ).filter(Boolean);
      if (alive.length === 0) {
        clog.info({ pids: entry.pids }, "container exited after its checkpoint; nothing to thaw");
        await this.options.journal.complete(entry.id);
        this.last.set(entry.containerId, {
          containerId: entry.containerId,
          action: "checkpoint",
          ok: true,
          at: new Date().toISOString(),
        });
        return;
      }
      const frozen = freezer ? await freezer.isFrozen().catch(() => false) : false;
      const traced = (await Promise.all(alive.map((pid) => tracerOf(pid)))).some(
        (tracer) => (tracer ?? 0) !== 0,
      );
      if (!frozen && !traced) {
        const record = await this.bringBack(
          this.engine(this.options.gpuBudgetMs),
          alive,
          clog,
          entry.deviceMap,
        );
        await this.options.journal.complete(entry.id);
        this.options.ops?.record(record);
        // A watcher started by pre-dump knows its CRIU process; one started by recover() does not.
        if (record.ok) this.options.ops?.repaired(criu ? "resume" : "recovery", alive.length);
        this.last.set(entry.containerId, {
          containerId: entry.containerId,
          action: "checkpoint",
          ok: record.ok,
          at: new Date().toISOString(),
          record,
          ...(record.ok ? {} : { error: describeFailure(record) }),
        });
        clog.info(
          {
            pids: alive,
            ok: record.ok,
            afterCriuMs: Math.round(performance.now() - criuDone),
            totalMs: Math.round(performance.now() - t0),
          },
          record.ok ? "container resumed; GPU state restored" : "container resumed; GPU state NOT restored",
        );
        return;
      }
      if (frozen && !traced) {
        frozenSince ??= performance.now();
        if (performance.now() - frozenSince > this.options.frozenGraceMs && freezer) {
          // containerd's deferred resume can be lost (FACTS §1: a cancelled CRI context); a frozen workload
          // with its GPU state in host memory helps nobody.
          clog.warn(
            { graceMs: this.options.frozenGraceMs },
            "container still frozen after CRIU finished; thawing it",
          );
          await freezer.thaw();
        }
      } else frozenSince = undefined;
      await sleep(pollMs);
    }
  }

  /** At start: bring back every process an interrupted operation left locked or checkpointed. */
  async recover(): Promise<void> {
    const entries = await this.options.journal.pending();
    for (const entry of entries) {
      this.options.log.warn({ entry }, "unfinished GPU operation found in the journal; repairing");
      this.busy.set(entry.containerId, {
        containerId: entry.containerId,
        action: "repair",
        since: new Date().toISOString(),
      });
      const freezer = await Freezer.ofPid(entry.initPid).catch(() => undefined);
      this.watch(entry, freezer, undefined);
    }
  }

  /**
   * After a (re)start: GPU processes sitting LOCKED or CHECKPOINTED in a container that runs (thawed, not
   * traced) missed their thaw while no daemon was there: a post-resume hook that could not reach it (runc
   * ignores that failure), or a resume nobody watched. Containers frozen or traced are mid-checkpoint: the
   * journal and its watcher own those.
   */
  async repairStranded(containers: Array<{ containerId: string; initPid: number }>): Promise<void> {
    for (const { containerId, initPid } of containers) {
      if (initPid <= 1 || this.busy.has(containerId)) continue;
      const clog = this.options.log.child({
        containerId,
        ...this.options.names?.(containerId),
        action: "repair",
      });
      try {
        const found = await discoverCudaProcesses({ initPid, backend: this.options.backend, mode: "any" });
        const stranded = found.cuda
          .filter((p) => p.state === ProcessState.LOCKED || p.state === ProcessState.CHECKPOINTED)
          .map((p) => p.pid);
        if (stranded.length === 0) continue;
        if (await (await Freezer.ofPid(initPid)).isFrozen()) continue;
        const tracers = await Promise.all(stranded.map((pid) => tracerOf(pid)));
        if (tracers.some((t) => (t ?? 0) !== 0)) continue;
        if (this.busy.has(containerId)) continue;
        this.busy.set(containerId, { containerId, action: "repair", since: new Date().toISOString() });
        try {
          clog.warn(
            { pids: stranded },
            "GPU processes left locked or checkpointed while the container runs; repairing",
          );
          // A restore interrupted between pre-restore and post-resume goes onto the GPUs it was planned for.
          const deviceMap = await this.options.restorePlans?.load(containerId);
          const record = await this.bringBack(
            this.engine(this.options.gpuBudgetMs),
            stranded,
            clog,
            deviceMap,
          );
          if (record.ok) {
            this.options.ops?.repaired("recovery", stranded.length);
            await this.options.restorePlans?.remove(containerId).catch(() => undefined);
          }
          this.last.set(containerId, {
            containerId,
            action: "repair",
            ok: record.ok,
            at: new Date().toISOString(),
            record,
            ...(record.ok ? {} : { error: describeFailure(record) }),
          });
          clog.info(
            { pids: stranded, ok: record.ok },
            record.ok ? "GPU state repaired" : "GPU state NOT repaired",
          );
        } finally {
          this.busy.delete(containerId);
        }
      } catch (error) {
        clog.warn({ err: error }, "could not check the container for stranded GPU state");
      }
    }
  }

  async close(): Promise<void> {
    this.giveUpAt = performance.now() + CLOSE_GRACE_MS;
    await Promise.all(this.watchers);
  }

  private engine(budgetMs: number): GpuEngine {
    return new GpuEngine({
      backend: this.options.backend,
      logger: this.options.log,
      lockTimeoutMs: this.options.lockTimeoutMs,
      deadlines: { checkpoint: budgetMs, restore: budgetMs },
    });
  }

  private succeed(request: HookRequest, record: OperationRecord): void {
    this.last.set(request.containerId, {
      containerId: request.containerId,
      action: request.action === "pre-dump" ? "checkpoint" : "restore",
      ok: true,
      at: new Date().toISOString(),
      record,
    });
  }

  private fail(request: HookRequest, error: string, record?: OperationRecord): DaemonReply {
    this.options.log.error(
      { containerId: request.containerId, action: request.action, error },
      "GPU stage failed",
    );
    this.last.set(request.containerId, {
      containerId: request.containerId,
      action: request.action === "pre-dump" ? "checkpoint" : "restore",
      ok: false,
      at: new Date().toISOString(),
      error,
      ...(record ? { record } : {}),
    });
    return { ok: false, error };
  }
}

function describeFailure(record: OperationRecord): string {
  const failure = record.failure;
  const what = failure ? `process ${failure.pid}: ${failure.message}` : "unknown failure";
  const rollback = record.rollback
    ? record.rollback.ok
      ? "; every process is back on the GPU"
      : "; ROLLBACK INCOMPLETE"
    : "";
  return `GPU ${record.op} failed at ${what}${rollback}`;
}

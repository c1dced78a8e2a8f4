import type { RestorePlan } from "../checkpoint/restore-plan.js";
import type { OperationRecord } from "../gpu/engine.js";
import type {
  ContainerActivity,
  DaemonStatusData,
  HookAction,
  LastOperationStatus,
  ManagedContainer,
  OperationKind,
} from "./protocol.js";
import type { CheckpointRun } from "./timeline.js";

/** Pod and container names for logs, as the NRI plugin saw them. */
export interface ContainerNames {
  pod?: string;
  container?: string;
}

/** The status reply's last operation, plus the engine's record of it (kept for logs, not sent). */
export interface LastOperation extends LastOperationStatus {
  record?: OperationRecord;
}

/** Everything the daemon knows of one container, in one place. */
interface ContainerRecord {
  id: string;
  /** What the NRI plugin told of it; absent for a container seen only through the hook. */
  managed?: ManagedContainer;
  /** The one GPU operation in flight (a container takes one at a time). */
  activity?: ContainerActivity;
  last?: LastOperation;
  /** The restore plan pre-restore made, for the post-resume that follows (undefined: restore as is). */
  plan?: { value: RestorePlan | undefined };
  /** Removed by the runtime while an operation ran: forgotten when it ends. */
  removed?: boolean;
  /** The checkpoint in flight, from its pre-dump to its resume: its timeline and the page store's part. */
  run?: CheckpointRun;
}

/**
 * The daemon's containers: one record each, holding the names and GPU request NRI gave, the operation in flight
 * (the per-container lock), how the last one ended, and a restore's plan between its two stages.
 */
export class Containers {
  private readonly records = new Map<string, ContainerRecord>();

  private record(id: string): ContainerRecord {
    let r = this.records.get(id);
    if (!r) {
      r = { id };
      this.records.set(id, r);
    }
    return r;
  }

  /** A GPU container the NRI plugin configured (at creation, or again at a resynchronize). */
  manage(container: ManagedContainer): void {
    const r = this.record(container.id);
    r.managed = container;
    r.removed = false;
  }

  /** The runtime removed the container: its record goes (once any operation on it has ended). */
  remove(id: string): void {
    const r = this.records.get(id);
    if (!r) return;
    if (r.activity) r.removed = true;
    else this.records.delete(id);
  }

  names(id: string): ContainerNames {
    const m = this.records.get(id)?.managed;
    return m ? { pod: m.pod, container: m.name } : {};
  }

  managed(id: string): ManagedContainer | undefined {
    return this.records.get(id)?.managed;
  }

  isBusy(id: string): boolean {
    return this.records.get(id)?.activity !== undefined;
  }

  /**
   * Takes the container's one operation slot for `action`; when another operation holds it, the refusal says
   * which and since when.
   */
  begin(id: string, action: HookAction | "repair"): { ok: true } | { ok: false; error: string } {
    const r = this.record(id);
    if (r.activity)
      return {
        ok: false,
        error: `container ${id} is busy: a ${r.activity.action} started at ${r.activity.since} is still in progress; retry when it has finished`,
      };
    r.activity = { containerId: id, action, since: new Date().toISOString() };
    return { ok: true };
  }

  end(id: string): void {
    const r = this.records.get(id);
    if (!r) return;
    r.activity = undefined;
    if (r.removed) this.records.delete(id);
    else if (!r.managed && !r.last && !r.plan) this.records.delete(id);
  }

  /** How an operation on the container ended, for `kybernate ps` and the CLI's explanations. */
  finished(
    id: string,
    action: OperationKind,
    outcome: { ok: boolean; record?: OperationRecord; error?: string },
  ): void {
    this.record(id).last = {
      containerId: id,
      action,
      ok: outcome.ok,
      at: new Date().toISOString(),
      ...(outcome.error !== undefined ? { error: outcome.error } : {}),
      ...(outcome.record ? { record: outcome.record } : {}),
    };
  }

  last(id: string): LastOperation | undefined {
    return this.records.get(id)?.last;
  }

  /** Adds a checkpoint's phases (known only once containerd resumed it) to the container's last operation. */
  annotateLast(
    id: string,
    extra: Partial<Pick<LastOperation, "phasesMs" | "checkpointId" | "ok" | "error">>,
  ): void {
    const last = this.records.get(id)?.last;
    if (last) Object.assign(last, extra);
  }

  setRun(id: string, run: CheckpointRun): void {
    this.record(id).run = run;
  }

  run(id: string): CheckpointRun | undefined {
    return this.records.get(id)?.run;
  }

  takeRun(id: string): CheckpointRun | undefined {
    const r = this.records.get(id);
    const run = r?.run;
    if (r) r.run = undefined;
    return run;
  }

  /** Keeps pre-restore's plan for the post-resume that follows. */
  keepPlan(id: string, plan: RestorePlan | undefined): void {
    this.record(id).plan = { value: plan };
  }

  /** The plan pre-restore kept (and forgets it); `planned` false when no pre-restore ran. */
  takePlan(id: string): { planned: boolean; plan?: RestorePlan } {
    const r = this.records.get(id);
    const kept = r?.plan;
    if (r) r.plan = undefined;
    if (!kept) return { planned: false };
    return kept.value ? { planned: true, plan: kept.value } : { planned: true };
  }

  status(): DaemonStatusData {
    const all = [...this.records.values()];
    return {
      managed: all.flatMap((r) => (r.managed && !r.removed ? [r.managed] : [])),
      busy: all.flatMap((r) => (r.activity ? [r.activity] : [])),
      last: all.flatMap((r) => {
        if (!r.last) return [];
        const { record: _record, ...status } = r.last;
        return [status];
      }),
    };
  }

  /** Every container with an operation in flight (for shutdown and tests). */
  activity(): ContainerActivity[] {
    return this.status().busy;
  }
}

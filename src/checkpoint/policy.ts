import type { Logger } from "../base/log.js";
import type { OperationRecord } from "../gpu/engine.js";
import type { ComputeApp, GpuInfo, GpuInventory, GpuProbe } from "../host/nvidia-smi.js";
import {
  type AdmissionVerdict,
  cgroupRoomBytes,
  computeAppsEstimator,
  decideAdmission,
  memAvailableBytes,
  type VramEstimator,
} from "./admission.js";
import { type GpuRequest, gpusOpenedBy, resolveGpuRequest } from "./gpu-request.js";
import {
  buildMetadata,
  findMetadataDir,
  planRestore,
  type RestorePlan,
  readMetadata,
  writeMetadata,
} from "./metadata.js";
import type { KybernateMetrics, Outcome, Phase } from "./metrics.js";

export interface ContainerNames {
  pod?: string;
  container?: string;
}

export interface FreezeContext {
  containerId: string;
  pids: number[];
  initPid: number;
  imageDir?: string;
  names?: ContainerNames;
}

/** What was known of the GPUs while the processes still ran (VRAM per process reads 0 after a checkpoint). */
export interface GpuSnapshot {
  inventory: GpuInventory;
  apps: ComputeApp[];
  /** The GPUs the processes hold open (what the driver checkpoints), when their fds could be read. */
  opened?: GpuInfo[];
}

export interface RestoreContext {
  containerId: string;
  imageDir?: string;
  criuPid?: number;
  /** The restored container's GPUs as its spec asks for them (from NRI); the node's GPUs when absent. */
  gpuRequest?: GpuRequest;
}

/**
 * The operations side of a checkpoint, as the daemon's coordinator sees it: admission before the freeze,
 * metadata after it, the compatibility plan at restore, and what each stage reports to metrics.
 */
export interface CheckpointOps {
  admit(ctx: FreezeContext): Promise<{ verdict: AdmissionVerdict; snapshot: GpuSnapshot }>;
  /** Leaves kybernate.json in CRIU's image directory; a failure is logged, never fatal to the checkpoint. */
  recordCheckpoint(ctx: FreezeContext, record: OperationRecord, snapshot: GpuSnapshot): Promise<void>;
  planRestore(ctx: RestoreContext): Promise<RestorePlan>;
  phase(phase: Phase, ms: number): void;
  result(kind: "checkpoint" | "restore", outcome: Outcome): void;
  /** Driver phases and VRAM moved, from an engine record. */
  record(record: OperationRecord): void;
  repaired(reason: "resume" | "recovery" | "retry", count: number): void;
}

export interface NodeOpsOptions {
  probe: GpuProbe;
  version: string;
  log: Logger;
  metrics?: KybernateMetrics;
  /** Replaces nvidia-smi's per-process numbers (nodes without nvidia-smi, and tests). */
  estimator?: VramEstimator;
  admission: { enabled: boolean; headroomBytes: number };
  memAvailable?: () => Promise<number>;
}

export class NodeOps implements CheckpointOps {
  private readonly estimator: VramEstimator;

  constructor(private readonly options: NodeOpsOptions) {
    this.estimator = options.estimator ?? computeAppsEstimator();
  }

  async admit(ctx: FreezeContext): Promise<{ verdict: AdmissionVerdict; snapshot: GpuSnapshot }> {
    const [inventory, apps] = await Promise.all([
      this.options.probe.inventory(),
      this.options.probe.computeApps(),
    ]);
    const opened = await gpusOpenedBy(ctx.pids, inventory.gpus);
    const snapshot = { inventory, apps, ...(opened ? { opened } : {}) };
    if (!this.options.admission.enabled) return { verdict: { ok: true, note: "admission off" }, snapshot };
    const [estimate, memAvailable, cgroup] = await Promise.all([
      this.estimator(ctx.pids, apps),
      (this.options.memAvailable ?? memAvailableBytes)(),
      cgroupRoomBytes(ctx.initPid),
    ]);
    const verdict = decideAdmission({
      containerId: ctx.containerId,
      estimate,
      memAvailable,
      headroom: this.options.admission.headroomBytes,
      ...(cgroup ? { cgroup } : {}),
    });
    this.options.log.debug(
      { containerId: ctx.containerId, ...ctx.names, estimate, memAvailable, cgroup, ok: verdict.ok },
      "host-RAM admission",
    );
    return { verdict, snapshot };
  }

  async recordCheckpoint(ctx: FreezeContext, record: OperationRecord, snapshot: GpuSnapshot): Promise<void> {
    if (!ctx.imageDir) {
      this.options.log.warn(
        { containerId: ctx.containerId },
        "CRIU gave no image directory (CRTOOLS_IMAGE_DIR); checkpoint carries no GPU metadata",
      );
      return;
    }
    const metadata = buildMetadata({
      version: this.options.version,
      containerId: ctx.containerId,
      ...ctx.names,
      inventory: snapshot.inventory,
      apps: snapshot.apps,
      pids: ctx.pids,
      ...(snapshot.opened ? { opened: snapshot.opened } : {}),
      ...(record.vramBytes !== undefined ? { vramBytesMoved: record.vramBytes } : {}),
    });
    try {
      const path = await writeMetadata(ctx.imageDir, metadata);
      this.options.log.info(
        { containerId: ctx.containerId, path, gpus: metadata.gpus },
        "GPU metadata written",
      );
    } catch (error) {
      this.options.log.warn(
        { err: error, containerId: ctx.containerId, imageDir: ctx.imageDir },
        "could not write GPU metadata into CRIU's image directory; the checkpoint goes on without it",
      );
    }
  }

  async planRestore(ctx: RestoreContext): Promise<RestorePlan> {
    const dir = await findMetadataDir(ctx.imageDir, ctx.criuPid);
    let metadata: Awaited<ReturnType<typeof readMetadata>>;
    try {
      metadata = dir ? await readMetadata(dir) : undefined;
    } catch (error) {
      return { ok: false, error: (error as Error).message };
    }
    const node = metadata ? await this.options.probe.inventory() : { gpus: [] };
    const container = resolveGpuRequest(ctx.gpuRequest, node.gpus);
    const plan = planRestore(metadata, node, container);
    this.options.log.info(
      {
        containerId: ctx.containerId,
        metadata: metadata ? "present" : "absent",
        containerGpus: container && "gpus" in container ? container.source : "the node's",
        plan,
      },
      "GPU restore plan",
    );
    return plan;
  }

  phase(phase: Phase, ms: number): void {
    this.options.metrics?.observePhase(phase, ms);
  }

  result(kind: "checkpoint" | "restore", outcome: Outcome): void {
    (kind === "checkpoint" ? this.options.metrics?.checkpoints : this.options.metrics?.restores)?.inc({
      result: outcome,
    });
  }

  record(record: OperationRecord): void {
    const metrics = this.options.metrics;
    if (!metrics) return;
    for (const phase of ["lock", "checkpoint", "restore", "unlock"] as const) {
      const ms = record.phasesMs[phase];
      if (ms !== undefined) metrics.observePhase(phase, ms);
    }
    if (record.vramBytes)
      metrics.vramBytes.inc({ direction: record.op === "freeze" ? "to_host" : "to_gpu" }, record.vramBytes);
  }

  repaired(reason: "resume" | "recovery" | "retry", count: number): void {
    if (count > 0) this.options.metrics?.repaired.inc({ reason }, count);
  }
}

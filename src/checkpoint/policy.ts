import type { Logger } from "../base/log.js";
import type { OperationRecord } from "../gpu/engine.js";
import type { MemoryUse } from "../host/cgroup.js";
import type { ComputeApp, GpuInfo, GpuInventory, GpuProbe } from "../host/nvidia-smi.js";
import { memAvailableBytes } from "../host/proc.js";
import {
  type AdmissionVerdict,
  cgroupRoom,
  computeAppsEstimator,
  decideAdmission,
  type VramEstimator,
} from "./admission.js";
import { type GpuRequest, gpusOpenedBy, resolveGpuRequest } from "./gpu-request.js";
import { buildMetadata, findMetadataDir, readMetadata, writeMetadata } from "./metadata.js";
import { type NcclFacts, ncclRefusal, readNcclFacts } from "./nccl.js";
import { planRestore, type RestorePlan } from "./restore-plan.js";

export interface ContainerNames {
  pod?: string;
  container?: string;
}

export interface FreezeContext {
  containerId: string;
  pids: number[];
  /** The container's memory cgroup (limit and usage), read when admission asks. */
  memory: () => Promise<MemoryUse | undefined>;
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
 * The rules of a checkpoint on this node, as the daemon's stages ask them: admission before the freeze,
 * metadata after it, and the compatibility plan at restore.
 */
export interface CheckpointPolicy {
  admit(ctx: FreezeContext): Promise<{ verdict: AdmissionVerdict; snapshot: GpuSnapshot }>;
  /** Leaves kybernate.json in CRIU's image directory; a failure is logged, never fatal to the checkpoint. */
  recordCheckpoint(ctx: FreezeContext, record: OperationRecord, snapshot: GpuSnapshot): Promise<void>;
  planRestore(ctx: RestoreContext): Promise<RestorePlan>;
}

export interface NodePolicyOptions {
  probe: GpuProbe;
  version: string;
  log: Logger;
  /** Replaces nvidia-smi's per-process numbers (nodes without nvidia-smi, and tests). */
  estimator?: VramEstimator;
  admission: { enabled: boolean; headroomBytes: number };
  memAvailable?: () => Promise<number>;
  /** Replaces the reading of each process's environment and mappings (tests). */
  ncclFacts?: (pids: readonly number[]) => Promise<NcclFacts[]>;
}

export class NodePolicy implements CheckpointPolicy {
  private readonly estimator: VramEstimator;

  constructor(private readonly options: NodePolicyOptions) {
    this.estimator = options.estimator ?? computeAppsEstimator();
  }

  async admit(ctx: FreezeContext): Promise<{ verdict: AdmissionVerdict; snapshot: GpuSnapshot }> {
    const [inventory, apps] = await Promise.all([
      this.options.probe.inventory(),
      this.options.probe.computeApps(),
    ]);
    const opened = await gpusOpenedBy(ctx.pids, inventory.gpus);
    const snapshot = { inventory, apps, ...(opened ? { opened } : {}) };
    // Whatever host memory says: an NCCL job the driver cannot checkpoint would hang in it (docs/MULTI-GPU.md).
    const nccl = ncclRefusal(await (this.options.ncclFacts ?? readNcclFacts)(ctx.pids));
    if (nccl) return { verdict: { ok: false, error: nccl }, snapshot };
    if (!this.options.admission.enabled) return { verdict: { ok: true, note: "admission off" }, snapshot };
    const [estimate, memAvailable, cgroup] = await Promise.all([
      this.estimator(ctx.pids, apps),
      (this.options.memAvailable ?? memAvailableBytes)(),
      ctx.memory().then(cgroupRoom),
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
      // A file that is there but hostile or malformed is no "checkpoint without metadata": restoring as is
      // could put the processes onto GPUs nobody checked. Only a missing file means that.
      const plan = {
        ok: false as const,
        error: `refusing to restore: ${(error as Error).message}; restore only a checkpoint kybernate wrote, unchanged`,
      };
      this.options.log.warn({ containerId: ctx.containerId, plan }, "GPU restore plan");
      return plan;
    }
    const node = metadata ? await this.options.probe.inventory() : { gpus: [] };
    const container = resolveGpuRequest(ctx.gpuRequest, node.gpus);
    const plan = planRestore(metadata, node, container, ctx.gpuRequest?.deviceMap);
    this.options.log.info(
      {
        containerId: ctx.containerId,
        metadata: metadata ? "present" : "absent",
        containerGpus: container && "gpus" in container ? container.source : "the node's",
        ...(ctx.gpuRequest?.deviceMap !== undefined ? { requestedDeviceMap: ctx.gpuRequest.deviceMap } : {}),
        plan,
      },
      "GPU restore plan",
    );
    return plan;
  }
}

import type { Logger } from "../base/log.js";
import type { OperationRecord } from "../gpu/engine.js";
import type { MemoryLevel } from "../host/cgroup.js";
import { tcpAddressesOf } from "../host/net.js";
import type { ComputeApp, GpuInfo, GpuInventory, GpuProbe } from "../host/nvidia-smi.js";
import { deletedMappings, memAvailableBytes } from "../host/proc.js";
import {
  type AdmissionVerdict,
  computeAppsEstimator,
  decideAdmission,
  type LimitRaise,
  limitRaises,
  type VramEstimate,
  type VramEstimator,
} from "./admission.js";
import { criuRefusal, type DumpFacts, readDumpFacts } from "./criu-limits.js";
import { type GpuRequest, gpusOpenedBy, resolveGpuRequest } from "./gpu-request.js";
import { buildMetadata, findMetadataDir, readMetadata, stagedBytesOf, writeMetadata } from "./metadata.js";
import { type NcclFacts, ncclRefusal, readNcclFacts } from "./nccl.js";
import { planRestore, type RestorePlan } from "./restore-plan.js";

export interface ContainerNames {
  pod?: string;
  container?: string;
}

export interface FreezeContext {
  containerId: string;
  pids: number[];
  /** The container's memory cgroup and those above it, read when admission asks. */
  memoryLevels: () => Promise<MemoryLevel[]>;
  imageDir?: string;
  names?: ContainerNames;
  /** The pod's IPs as NRI gave them (none: host network). */
  podIps?: string[];
  /** How CRIU dumps the container's established TCP connections. */
  tcp?: "established" | "close";
  /** Every process of the container (the CUDA ones and the rest: a launcher, a data loader). */
  containerPids?: number[];
}

/** What was known of the GPUs while the processes still ran (VRAM per process reads 0 after a checkpoint). */
export interface GpuSnapshot {
  inventory: GpuInventory;
  apps: ComputeApp[];
  /** The GPUs the processes hold open (what the driver checkpoints), when their fds could be read. */
  opened?: GpuInfo[];
  /** What admission expected the checkpoint to stage in host memory, when it knew. */
  stagedBytes?: number;
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
export interface Admission {
  verdict: AdmissionVerdict;
  snapshot: GpuSnapshot;
  /** Memory limits to raise for the GPU stage (the container's and those above it). */
  raises: LimitRaise[];
  /** The VRAM the freeze will stage, when admission asked (the disk admission uses it too). */
  estimate?: VramEstimate;
}

export interface CheckpointPolicy {
  admit(ctx: FreezeContext): Promise<Admission>;
  /**
   * A restore stages `bytes` again (CRIU restores them into host memory before the driver moves them back): the
   * node's room for them, and the limits of the restored container's cgroups to raise.
   */
  admitRestore(
    containerId: string,
    bytes: number | undefined,
    levels: () => Promise<MemoryLevel[]>,
    usageBytes?: number,
  ): Promise<{ verdict: AdmissionVerdict; raises: LimitRaise[] }>;
  /** After the freeze: what the CUDA processes still hold that CRIU cannot dump (a refusal), or undefined. */
  checkFrozen(ctx: FreezeContext): Promise<string | undefined>;
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
  /** Replaces the reading of each process's fds and mappings for what CRIU cannot dump (tests). */
  dumpFacts?: (pids: readonly number[]) => Promise<DumpFacts[]>;
}

export class NodePolicy implements CheckpointPolicy {
  private readonly estimator: VramEstimator;

  constructor(private readonly options: NodePolicyOptions) {
    this.estimator = options.estimator ?? computeAppsEstimator();
  }

  async admit(ctx: FreezeContext): Promise<Admission> {
    const [inventory, apps] = await Promise.all([
      this.options.probe.inventory(),
      this.options.probe.computeApps(),
    ]);
    const opened = await gpusOpenedBy(ctx.pids, inventory.gpus);
    // Whatever host memory says: an NCCL job the driver cannot checkpoint would hang in it (docs/MULTI-GPU.md).
    const nccl = ncclRefusal(await (this.options.ncclFacts ?? readNcclFacts)(ctx.pids));
    // CRIU dumps every process of the container; those the freeze leaves as they are are looked at now.
    const others = (ctx.containerPids ?? []).filter((pid) => !ctx.pids.includes(pid));
    const undumpable =
      nccl ?? criuRefusal(await (this.options.dumpFacts ?? readDumpFacts)(others), "before the freeze");
    if (undumpable)
      return {
        verdict: { ok: false, error: undumpable },
        snapshot: { inventory, apps, ...(opened ? { opened } : {}) },
        raises: [],
      };
    const [estimate, levels] = await Promise.all([this.estimator(ctx.pids, apps), ctx.memoryLevels()]);
    const snapshot = {
      inventory,
      apps,
      ...(opened ? { opened } : {}),
      ...(estimate.bytes !== undefined ? { stagedBytes: estimate.bytes } : {}),
    };
    const raises = estimate.bytes !== undefined ? limitRaises(levels, estimate.bytes) : [];
    if (!this.options.admission.enabled)
      return { verdict: { ok: true, note: "admission off" }, snapshot, raises, estimate };
    const memAvailable = await (this.options.memAvailable ?? memAvailableBytes)();
    const verdict = decideAdmission({
      containerId: ctx.containerId,
      estimate,
      memAvailable,
      headroom: this.options.admission.headroomBytes,
    });
    this.options.log.debug(
      { containerId: ctx.containerId, ...ctx.names, estimate, memAvailable, raises, ok: verdict.ok },
      "host-RAM admission",
    );
    return { verdict, snapshot, raises, estimate };
  }

  async admitRestore(
    containerId: string,
    bytes: number | undefined,
    levels: () => Promise<MemoryLevel[]>,
    usageBytes = 0,
  ): Promise<{ verdict: AdmissionVerdict; raises: LimitRaise[] }> {
    if (bytes === undefined)
      return { verdict: { ok: true, note: "the checkpoint does not say what it staged" }, raises: [] };
    const raises = limitRaises(await levels(), bytes, usageBytes);
    if (!this.options.admission.enabled) return { verdict: { ok: true, note: "admission off" }, raises };
    const memAvailable = await (this.options.memAvailable ?? memAvailableBytes)();
    const verdict = decideAdmission({
      containerId,
      estimate: { bytes, perPid: [], source: "the checkpoint's kybernate.json" },
      memAvailable,
      headroom: this.options.admission.headroomBytes,
      stage: "restore",
    });
    return { verdict, raises };
  }

  async checkFrozen(ctx: FreezeContext): Promise<string | undefined> {
    return criuRefusal(await (this.options.dumpFacts ?? readDumpFacts)(ctx.pids), "after the freeze");
  }

  async recordCheckpoint(ctx: FreezeContext, record: OperationRecord, snapshot: GpuSnapshot): Promise<void> {
    if (!ctx.imageDir) {
      this.options.log.warn(
        { containerId: ctx.containerId },
        "CRIU gave no image directory (CRTOOLS_IMAGE_DIR); checkpoint carries no GPU metadata",
      );
      return;
    }
    const [first] = ctx.pids;
    const tcp = first ? await tcpAddressesOf(first) : undefined;
    // Read at pre-dump before the staging (admission's levels): what a restore brings back besides the VRAM.
    const [own] = await ctx.memoryLevels().catch(() => []);
    const shm = [
      ...new Set(
        (await Promise.all((ctx.containerPids ?? ctx.pids).map((pid) => deletedMappings(pid))))
          .flat()
          .filter((path) => path.startsWith("/dev/shm/")),
      ),
    ].sort();
    if (shm.length)
      this.options.log.warn(
        { containerId: ctx.containerId, files: shm },
        "this checkpoint cannot be restored: its processes map /dev/shm files under unlinked names (POSIX semaphores); a restore will be refused",
      );
    const metadata = buildMetadata({
      version: this.options.version,
      containerId: ctx.containerId,
      ...ctx.names,
      inventory: snapshot.inventory,
      apps: snapshot.apps,
      pids: ctx.pids,
      ...(snapshot.opened ? { opened: snapshot.opened } : {}),
      ...(record.vramBytes !== undefined ? { vramBytesMoved: record.vramBytes } : {}),
      ...(snapshot.stagedBytes !== undefined ? { stagedBytesEstimate: snapshot.stagedBytes } : {}),
      ...(own ? { memoryUsageBytes: own.usage } : {}),
      ...(shm.length ? { unrestorableShm: shm } : {}),
      ...(tcp
        ? {
            network: {
              tcp: ctx.tcp ?? "established",
              podIps: ctx.podIps ?? [],
              tcpEstablished: tcp.established,
              tcpListening: tcp.listening,
            },
          }
        : {}),
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
    const planned: RestorePlan = metadata?.unrestorableShm?.length
      ? {
          ok: false,
          error: `refusing to restore: the checkpointed processes map files of their pod's /dev/shm under names since unlinked (${metadata.unrestorableShm.slice(0, 4).join(", ")}${metadata.unrestorableShm.length > 4 ? ", …" : ""}: POSIX semaphores from sem_open, e.g. Python multiprocessing's locks); CRIU kept them with link-remap links that existed only in the original pod's /dev/shm during the dump, so CRIU cannot open them in any restore`,
        }
      : planRestore(metadata, node, container, ctx.gpuRequest?.deviceMap);
    const staged = metadata ? stagedBytesOf(metadata) : undefined;
    const plan =
      planned.ok && staged !== undefined
        ? {
            ...planned,
            stagedBytes: staged,
            ...(metadata?.memoryUsageBytes !== undefined ? { usageBytes: metadata.memoryUsageBytes } : {}),
          }
        : planned;
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

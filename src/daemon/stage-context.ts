import type { Deadline } from "../base/deadline.js";
import type { Logger } from "../base/log.js";
import type { StageMetrics } from "../checkpoint/metrics.js";
import type { CheckpointPolicy } from "../checkpoint/policy.js";
import type { TaskRef } from "../containerd/tasks.js";
import type { Discovery } from "../gpu/discovery.js";
import type { GpuEngine } from "../gpu/engine.js";
import type { MemoryLevel } from "../host/cgroup.js";
import type { ProcessIdentity } from "../host/proc.js";
import type { CheckpointExtras } from "./checkpoint-extras.js";
import type { Containers } from "./containers.js";
import type { Journal } from "./journal.js";
import type { MemoryLimits } from "./memory-limits.js";
import type { PlanStore } from "./plan-store.js";

/** A cgroup freezer as the stages use it (host/freezer.ts in production). */
export interface FreezerControl {
  readonly dir: string;
  isFrozen(): Promise<boolean>;
  thaw(): Promise<void>;
  /** Freezes and waits until every task is frozen. */
  freeze(): Promise<void>;
}

/** One container on the host, its cgroups read once: what a stage asks of it. */
export interface ContainerOnHost {
  /** Throws, saying why, when the container has no freezer kybernate can use. */
  freezer(): FreezerControl;
  /** held: processes holding an NVIDIA device (to checkpoint); any: every CUDA process (to restore). */
  discover(mode: "held" | "any", deadline?: Deadline): Promise<Discovery>;
  /** Its memory cgroup and each one above it (the pod's), innermost first. */
  memoryLevels(): Promise<MemoryLevel[]>;
}

/** The host as the stages see it, behind one seam so that each stage runs over fakes in unit tests. */
export interface HostView {
  /** Throws, naming the pid, when the process (the container's init) does not exist. */
  container(initPid: number): Promise<ContainerOnHost>;
  identify(pid: number): Promise<ProcessIdentity | undefined>;
  isSameProcess(identity: ProcessIdentity): Promise<boolean>;
  /** The ptrace tracer (0 when none), undefined when the process is gone. */
  tracerOf(pid: number): Promise<number | undefined>;
  livingPids(pids: readonly number[]): Promise<number[]>;
  parentOf(pid: number): Promise<number | undefined>;
  commandLine(pid: number): Promise<string[]>;
  /** Where a path leads (for a process fd link: the file it is open on), undefined when it leads nowhere. */
  realPath(path: string): Promise<string | undefined>;
  exists(path: string): Promise<boolean>;
  /** The files a process holds open, as host paths. */
  openFiles(pid: number): Promise<string[]>;
  /** The end of a (log) file, undefined when it cannot be read. */
  readTail(path: string, bytes: number): Promise<string | undefined>;
}

/** What the daemon asks of the container runtime (containerd's Tasks API in production). */
export interface TaskRuntime {
  /** Resumes a task the runtime believes paused; rejects, saying why, when the runtime cannot. */
  resume(task: TaskRef, deadline: Deadline): Promise<void>;
}

export interface StageTiming {
  /** What `--gpu-budget` says: the longest the GPU stage of one checkpoint or restore may take. */
  gpuBudgetMs: number;
  /** After CRIU is done, how long a container may stay frozen before kybernate thaws it itself. */
  frozenGraceMs: number;
  /** How often a watcher looks at the container. */
  pollMs: number;
  /** The first wait before a restore is retried (doubled, then tripled). */
  retryBackoffMs: number;
}

/** What every stage of the daemon works with. */
export interface StageContext {
  log: Logger;
  journal: Journal;
  containers: Containers;
  plans: PlanStore;
  /** Memory limits raised for GPU stages, journalled, put back once the staged memory is gone. */
  limits: MemoryLimits;
  policy: CheckpointPolicy;
  metrics: StageMetrics;
  engine: GpuEngine;
  host: HostView;
  runtime: TaskRuntime;
  timing: StageTiming;
  /** The page store, disk admission, deadline hint and phase breakdown (checkpoint-extras.ts); absent in old rigs. */
  checkpoint?: CheckpointExtras;
}

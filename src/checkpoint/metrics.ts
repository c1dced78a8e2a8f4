import { createServer, type Server } from "node:http";
import { Counter, collectDefaultMetrics, Histogram, Registry } from "prom-client";
import type { OperationRecord } from "../gpu/engine.js";

export type Phase = "thaw_cgroup" | "discover" | "lock" | "checkpoint" | "refreeze" | "restore" | "unlock";
export type Outcome = "success" | "failure" | "refused";
export type RepairReason = "resume" | "recovery" | "retry";

/** A whole checkpoint's phases as the daemon times them (daemon/timeline.ts), in ms. */
export type CheckpointPhaseName =
  | "preDump"
  | "gpuFreeze"
  | "criuDump"
  | "pageStore"
  | "untilResume"
  | "gpuThaw"
  | "total";

/** What the daemon's stages report; `noMetrics` where nobody scrapes. */
export interface StageMetrics {
  phase(phase: Phase, ms: number): void;
  result(kind: "checkpoint" | "restore", outcome: Outcome): void;
  /** Driver phases and VRAM moved, from an engine record. */
  record(record: OperationRecord): void;
  repaired(reason: RepairReason, count: number): void;
  /** One checkpoint's phases, once containerd resumed the container. */
  checkpointPhases?(phases: Partial<Record<CheckpointPhaseName, number>>): void;
  /** Page images moved into the page store (or a store stage that failed). */
  pageStore?(outcome: "stored" | "failure" | "linked" | "refused", bytes?: number): void;
}

/** Prometheus label values of the checkpoint phases. */
const PHASE_LABEL: Record<CheckpointPhaseName, string> = {
  preDump: "pre_dump",
  gpuFreeze: "gpu_freeze",
  criuDump: "criu_dump",
  pageStore: "page_store",
  untilResume: "until_resume",
  gpuThaw: "gpu_thaw",
  total: "total",
};

export const noMetrics: StageMetrics = {
  phase: () => undefined,
  result: () => undefined,
  record: () => undefined,
  repaired: () => undefined,
};

/**
 * kybernate's Prometheus metrics, on a registry of its own (so tests and several daemons in one process
 * never share counters). Names follow Prometheus conventions: _total counters, _seconds and _bytes units.
 */
export class KybernateMetrics implements StageMetrics {
  readonly registry = new Registry();
  private readonly checkpoints = new Counter({
    name: "kybernate_checkpoints_total",
    help: "GPU stages of checkpoints (CRIU pre-dump), by result; refused = host-RAM admission said no",
    labelNames: ["result"],
    registers: [this.registry],
  });
  private readonly restores = new Counter({
    name: "kybernate_restores_total",
    help: "GPU stages of restores (CRIU post-resume), by result; refused = incompatible GPUs",
    labelNames: ["result"],
    registers: [this.registry],
  });
  private readonly phases = new Histogram({
    name: "kybernate_phase_duration_seconds",
    help: "Duration of each GPU stage phase (the slowest process of a set for driver phases)",
    labelNames: ["phase"],
    buckets: [0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120],
    registers: [this.registry],
  });
  private readonly vramBytes = new Counter({
    name: "kybernate_vram_bytes_moved_total",
    help: "VRAM moved between GPU and host memory (estimated from the processes' resident memory)",
    labelNames: ["direction"],
    registers: [this.registry],
  });
  private readonly checkpointPhaseSeconds = new Histogram({
    name: "kybernate_checkpoint_phase_seconds",
    help: "Where each checkpoint's time went: pre_dump (kybernate's GPU stage), gpu_freeze (the driver's part of it), criu_dump (pre-dump's end to post-dump), page_store (post-dump: page images into the store), until_resume (post-dump to containerd's resume), gpu_thaw (after the resume), total (pre-dump to resume)",
    labelNames: ["phase"],
    buckets: [0.1, 0.5, 1, 2.5, 5, 10, 20, 30, 45, 60, 90, 120, 180, 300, 600],
    registers: [this.registry],
  });
  private readonly pageStoreOps = new Counter({
    name: "kybernate_page_store_operations_total",
    help: "Page store operations: stored (post-dump moved a checkpoint's pages in), failure (post-dump could not; the checkpoint failed), linked (pre-restore linked them into a restore), refused (a restore whose pages this store lacks)",
    labelNames: ["result"],
    registers: [this.registry],
  });
  private readonly pageStoreBytes = new Counter({
    name: "kybernate_page_store_bytes_total",
    help: "Bytes of page images moved into the page store (stored) and linked into restores (linked)",
    labelNames: ["result"],
    registers: [this.registry],
  });
  private readonly repairs = new Counter({
    name: "kybernate_processes_repaired_total",
    help: "CUDA processes kybernate brought back to RUNNING by itself: after containerd's resume (resume), after a daemon crash (recovery), on a retry (retry)",
    labelNames: ["reason"],
    registers: [this.registry],
  });

  constructor(options: { processMetrics?: boolean } = {}) {
    if (options.processMetrics ?? true) collectDefaultMetrics({ register: this.registry });
    // Every series exists from the start, so a scrape before the first checkpoint shows zeros, not gaps.
    for (const result of ["success", "failure", "refused"]) {
      this.checkpoints.inc({ result }, 0);
      this.restores.inc({ result }, 0);
    }
    for (const direction of ["to_host", "to_gpu"]) this.vramBytes.inc({ direction }, 0);
    for (const reason of ["resume", "recovery", "retry"]) this.repairs.inc({ reason }, 0);
    for (const result of ["stored", "failure", "linked", "refused"]) this.pageStoreOps.inc({ result }, 0);
    for (const result of ["stored", "linked"]) this.pageStoreBytes.inc({ result }, 0);
  }

  checkpointPhases(phases: Partial<Record<CheckpointPhaseName, number>>): void {
    for (const [name, ms] of Object.entries(phases) as Array<[CheckpointPhaseName, number | undefined]>) {
      if (ms !== undefined && PHASE_LABEL[name])
        this.checkpointPhaseSeconds.observe({ phase: PHASE_LABEL[name] }, ms / 1000);
    }
  }

  pageStore(outcome: "stored" | "failure" | "linked" | "refused", bytes?: number): void {
    this.pageStoreOps.inc({ result: outcome });
    if (bytes && (outcome === "stored" || outcome === "linked"))
      this.pageStoreBytes.inc({ result: outcome }, bytes);
  }

  phase(phase: Phase, ms: number): void {
    this.phases.observe({ phase }, ms / 1000);
  }

  result(kind: "checkpoint" | "restore", outcome: Outcome): void {
    (kind === "checkpoint" ? this.checkpoints : this.restores).inc({ result: outcome });
  }

  record(record: OperationRecord): void {
    for (const phase of ["lock", "checkpoint", "restore", "unlock"] as const) {
      const ms = record.phasesMs[phase];
      if (ms !== undefined) this.phase(phase, ms);
    }
    if (record.vramBytes)
      this.vramBytes.inc({ direction: record.op === "checkpoint" ? "to_host" : "to_gpu" }, record.vramBytes);
  }

  repaired(reason: RepairReason, count: number): void {
    if (count > 0) this.repairs.inc({ reason }, count);
  }

  text(): Promise<string> {
    return this.registry.metrics();
  }
}

/** `GET /metrics` (and `/healthz`) on host:port; resolves once listening. */
export async function startMetricsServer(
  metrics: KybernateMetrics,
  port: number,
  host = "0.0.0.0",
): Promise<Server> {
  const server = createServer((req, res) => {
    const path = (req.url ?? "/").split("?")[0];
    if (req.method !== "GET" || (path !== "/metrics" && path !== "/healthz")) {
      res.writeHead(404, { "content-type": "text/plain" }).end("kybernate serves /metrics and /healthz\n");
      return;
    }
    if (path === "/healthz") {
      res.writeHead(200, { "content-type": "text/plain" }).end("ok\n");
      return;
    }
    metrics.text().then(
      (body) => res.writeHead(200, { "content-type": metrics.registry.contentType }).end(body),
      (error: Error) => res.writeHead(500, { "content-type": "text/plain" }).end(`${error.message}\n`),
    );
  });
  await new Promise<void>((resolve, reject) => {
    server.once("error", (error: NodeJS.ErrnoException) =>
      reject(
        new Error(
          `cannot serve metrics on ${host}:${port}: ${error.code ?? error.message}; pick a free port with --metrics-port (0 turns metrics off)`,
        ),
      ),
    );
    server.listen(port, host, () => resolve());
  });
  return server;
}

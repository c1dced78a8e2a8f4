import { join } from "node:path";
import type { Logger } from "../base/log.js";
import { hooksDir } from "../base/paths.js";
import { version } from "../base/version.js";
import { fixedEstimator } from "../checkpoint/admission.js";
import { gpuRequestOf } from "../checkpoint/gpu-request.js";
import { KybernateMetrics, startMetricsServer } from "../checkpoint/metrics.js";
import { NodeOps } from "../checkpoint/policy.js";
import { Coordinator } from "../daemon/coordinator.js";
import { Journal } from "../daemon/journal.js";
import { RestorePlanStore } from "../daemon/plan-store.js";
import type { ManagedContainer } from "../daemon/protocol.js";
import { assertNoLiveDaemon, startDaemonServer } from "../daemon/server.js";
import { type BackendKind, openBackend } from "../gpu/select-backend.js";
import { NvidiaSmiProbe } from "../host/nvidia-smi.js";
import { NriStub } from "../nri/stub.js";
import type { CriuConfigOptions } from "../plugin/criu-config.js";
import { kybernateHandlers } from "../plugin/kybernate-plugin.js";
import type { Selector } from "../plugin/selector.js";

export interface DaemonOptions {
  nriSocket: string;
  pluginIndex: string;
  daemonSocket: string;
  stateDir: string;
  selector?: Selector;
  gpuBackend: BackendKind;
  libcuda?: string;
  cudaCheckpoint?: string;
  gpuBudgetMs: number;
  lockTimeoutMs: number;
  frozenGraceMs: number;
  criuNetworkLock: CriuConfigOptions["networkLock"];
  log: Logger;
  /** Operations (src/ops): metrics endpoint, host-RAM admission, GPU metadata. */
  ops?: DaemonOpsOptions;
}

export interface DaemonOpsOptions {
  /** 0 or absent: no metrics endpoint. */
  metricsPort?: number;
  metricsHost?: string;
  admission: boolean;
  admissionHeadroomBytes: number;
  /** Fixed VRAM estimate per CUDA process, replacing nvidia-smi's numbers. */
  vramEstimateBytes?: number;
  nvidiaSmi?: string;
}

export interface Daemon {
  stub: NriStub;
  stop(): Promise<void>;
}

/**
 * kybernate on a node: the NRI plugin that marks GPU containers for the hook, and the daemon the hook asks
 * for every GPU state change. One process, so the plugin's knowledge and the GPU operations share state.
 */
export async function startDaemon(options: DaemonOptions): Promise<Daemon> {
  const { log } = options;
  await assertNoLiveDaemon(options.daemonSocket);
  const journal = new Journal(join(options.stateDir, "journal"));
  await journal.open();
  const backend = openBackend({
    kind: options.gpuBackend,
    ...(options.libcuda ? { libcuda: options.libcuda } : {}),
    ...(options.cudaCheckpoint ? { cudaCheckpoint: options.cudaCheckpoint } : {}),
    logger: log,
  });
  log.info({ backend: backend.description }, "GPU backend");
  const managed = new Map<string, ManagedContainer>();
  const restorePlans = new RestorePlanStore(join(options.stateDir, "restore-plans"));
  const metrics = new KybernateMetrics();
  const opsOptions = options.ops ?? { admission: true, admissionHeadroomBytes: 1024 * 1024 * 1024 };
  const ops = new NodeOps({
    probe: new NvidiaSmiProbe(opsOptions.nvidiaSmi),
    version,
    log,
    metrics,
    admission: { enabled: opsOptions.admission, headroomBytes: opsOptions.admissionHeadroomBytes },
    ...(opsOptions.vramEstimateBytes !== undefined
      ? { estimator: fixedEstimator(opsOptions.vramEstimateBytes) }
      : {}),
  });
  const metricsServer = opsOptions.metricsPort
    ? await startMetricsServer(metrics, opsOptions.metricsPort, opsOptions.metricsHost)
    : undefined;
  if (metricsServer) log.info({ address: metricsServer.address() }, "metrics on /metrics");
  const coordinator = new Coordinator({
    backend,
    journal,
    log,
    gpuBudgetMs: options.gpuBudgetMs,
    lockTimeoutMs: options.lockTimeoutMs,
    frozenGraceMs: options.frozenGraceMs,
    ops,
    names: (id) => {
      const container = managed.get(id);
      return container ? { pod: container.pod, container: container.name } : undefined;
    },
    gpuRequest: (id) => managed.get(id)?.gpuRequest,
    restorePlans,
  });
  await coordinator.recover();
  const server = await startDaemonServer(
    options.daemonSocket,
    coordinator,
    () => ({
      managed: [...managed.values()],
      busy: coordinator.activity(),
      last: coordinator.lastOperations(),
    }),
    log,
  );
  const handlers = kybernateHandlers({
    criu: {
      stateDir: join(options.stateDir, "containers"),
      hookPath: join(hooksDir, "kybernate-criu-hook"),
      node: process.execPath,
      daemonSocket: options.daemonSocket,
      networkLock: options.criuNetworkLock,
      timeoutS: Math.ceil(options.gpuBudgetMs / 1000),
    },
    ...(options.selector ? { selector: options.selector } : {}),
    log,
    onManaged: (pod, container, reason) => {
      managed.set(container.id, {
        id: container.id,
        name: container.name,
        pod: `${pod.namespace}/${pod.name}`,
        reason,
        restored: container.annotations.restored === "true",
        since: new Date().toISOString(),
        gpuRequest: gpuRequestOf(container.linux?.devices ?? [], container.env),
      });
    },
    onRemoved: (id) => {
      managed.delete(id);
      void restorePlans.remove(id).catch(() => undefined);
    },
    // In the background: registration must not wait on driver calls.
    onSynchronized: (containers) => {
      void restorePlans
        .prune(new Set(containers.map((c) => c.id)), new Date())
        .then(() =>
          coordinator.repairStranded(containers.map((c) => ({ containerId: c.id, initPid: c.pid }))),
        );
    },
  });
  const stub = new NriStub(handlers, {
    socketPath: options.nriSocket,
    pluginName: "kybernate",
    pluginIndex: options.pluginIndex,
    log,
  });
  void stub.start();
  return {
    stub,
    async stop() {
      await stub.stop();
      await new Promise<void>((resolve) => server.close(() => resolve()));
      await coordinator.close();
      if (metricsServer) await new Promise<void>((resolve) => metricsServer.close(() => resolve()));
      backend.close();
    },
  };
}

import { join } from "node:path";
import type { Logger } from "../base/log.js";
import { hooksDir } from "../base/paths.js";
import { version } from "../base/version.js";
import { fixedEstimator } from "../checkpoint/admission.js";
import { gpuRequestOf } from "../checkpoint/gpu-request.js";
import { KybernateMetrics, startMetricsServer } from "../checkpoint/metrics.js";
import { NodePolicy } from "../checkpoint/policy.js";
import { ContainerdTasks, DEFAULT_CONTAINERD_SOCKET } from "../containerd/tasks.js";
import { Containers } from "../daemon/containers.js";
import { Coordinator } from "../daemon/coordinator.js";
import { hostView } from "../daemon/host-view.js";
import { Journal } from "../daemon/journal.js";
import { PlanStore } from "../daemon/plan-store.js";
import { HOOK_REPLY_MARGIN_MS } from "../daemon/protocol.js";
import { assertNoLiveDaemon, closeDaemonServer, startDaemonServer } from "../daemon/server.js";
import { GpuEngine } from "../gpu/engine.js";
import { type BackendKind, openBackend } from "../gpu/select-backend.js";
import { NvidiaSmiProbe } from "../host/nvidia-smi.js";
import { NriStub } from "../nri/stub.js";
import type { CriuConfigOptions } from "../plugin/criu-config.js";
import { kybernateHandlers } from "../plugin/kybernate-plugin.js";
import type { Selector } from "../plugin/selector.js";

export interface AgentOptions {
  nriSocket: string;
  /** containerd's gRPC socket: its Tasks API resumes a task whose resume containerd lost. */
  containerdSocket?: string;
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
  policy?: PolicyOptions;
}

/** The metrics endpoint, host-RAM admission and the GPU facts behind the checkpoint metadata. */
export interface PolicyOptions {
  /** 0 or absent: no metrics endpoint. */
  metricsPort?: number;
  metricsHost?: string;
  admission: boolean;
  admissionHeadroomBytes: number;
  /** Fixed VRAM estimate per CUDA process, replacing nvidia-smi's numbers. */
  vramEstimateBytes?: number;
  nvidiaSmi?: string;
}

export interface Agent {
  stub: NriStub;
  stop(): Promise<void>;
}

/**
 * kybernate on a node: the NRI plugin that marks GPU containers for the hook, and the daemon the hook asks
 * for every GPU state change. One process, so the plugin's knowledge and the GPU operations share state.
 */
/**
 * `kybernate run` on a node: the NRI plugin that marks GPU containers for the hook, and the daemon the hook asks
 * for every GPU state change. One process, so the containers the plugin sees and the GPU operations share one
 * record each.
 */
export async function startAgent(options: AgentOptions): Promise<Agent> {
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
  const containers = new Containers();
  const tasks = new ContainerdTasks(options.containerdSocket ?? DEFAULT_CONTAINERD_SOCKET);
  const plans = new PlanStore(join(options.stateDir, "restore-plans"));
  const metrics = new KybernateMetrics();
  const policyOptions = options.policy ?? { admission: true, admissionHeadroomBytes: 1024 * 1024 * 1024 };
  const policy = new NodePolicy({
    probe: new NvidiaSmiProbe(policyOptions.nvidiaSmi),
    version,
    log,
    admission: { enabled: policyOptions.admission, headroomBytes: policyOptions.admissionHeadroomBytes },
    ...(policyOptions.vramEstimateBytes !== undefined
      ? { estimator: fixedEstimator(policyOptions.vramEstimateBytes) }
      : {}),
  });
  const metricsServer = policyOptions.metricsPort
    ? await startMetricsServer(metrics, policyOptions.metricsPort, policyOptions.metricsHost)
    : undefined;
  if (metricsServer) log.info({ address: metricsServer.address() }, "metrics on /metrics");
  const coordinator = new Coordinator({
    log,
    journal,
    containers,
    plans,
    policy,
    metrics,
    engine: new GpuEngine({
      backend,
      logger: log,
      lockTimeoutMs: options.lockTimeoutMs,
      rollbackMs: options.gpuBudgetMs,
    }),
    host: hostView(backend),
    runtime: tasks,
    timing: {
      gpuBudgetMs: options.gpuBudgetMs,
      frozenGraceMs: options.frozenGraceMs,
      pollMs: 10,
      retryBackoffMs: 250,
    },
  });
  await coordinator.recover();
  const server = await startDaemonServer(options.daemonSocket, coordinator, () => containers.status(), log);
  const handlers = kybernateHandlers({
    criu: {
      stateDir: join(options.stateDir, "containers"),
      hookPath: join(hooksDir, "kybernate-criu-hook"),
      node: process.execPath,
      daemonSocket: options.daemonSocket,
      networkLock: options.criuNetworkLock,
      timeoutS: Math.ceil(options.gpuBudgetMs / 1000),
      hookTimeoutMs: options.gpuBudgetMs + HOOK_REPLY_MARGIN_MS,
    },
    ...(options.selector ? { selector: options.selector } : {}),
    log,
    onManaged: (pod, container, reason) => {
      containers.manage({
        id: container.id,
        name: container.name,
        pod: `${pod.namespace}/${pod.name}`,
        reason,
        restored: container.annotations.restored === "true",
        since: new Date().toISOString(),
        gpuRequest: gpuRequestOf(container.linux?.devices ?? [], container.env, pod.annotations),
      });
    },
    onRemoved: (id) => {
      containers.remove(id);
      void plans.remove(id).catch(() => undefined);
    },
    // In the background: registration must not wait on driver calls.
    onSynchronized: (survivors) => {
      void plans
        .prune(new Set(survivors.map((c) => c.id)), new Date())
        .then(() =>
          coordinator.repairStranded(survivors.map((c) => ({ containerId: c.id, initPid: c.pid }))),
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
      await closeDaemonServer(server);
      await coordinator.close();
      if (metricsServer) await new Promise<void>((resolve) => metricsServer.close(() => resolve()));
      backend.close();
      tasks.close();
    },
  };
}

import { existsSync } from "node:fs";
import { hostname } from "node:os";
import { join } from "node:path";
import type { Logger } from "../base/log.js";
import { hooksDir } from "../base/paths.js";
import { version } from "../base/version.js";
import { fixedEstimator } from "../checkpoint/admission.js";
import { gpuRequestOf } from "../checkpoint/gpu-request.js";
import { KybernateMetrics, startMetricsServer } from "../checkpoint/metrics.js";
import { NodePolicy } from "../checkpoint/policy.js";
import { ContainerdTasks, DEFAULT_CONTAINERD_SOCKET } from "../containerd/tasks.js";
import type { CheckpointExtras } from "../daemon/checkpoint-extras.js";
import { Containers } from "../daemon/containers.js";
import { Coordinator } from "../daemon/coordinator.js";
import { hostView, limitHost } from "../daemon/host-view.js";
import { Journal } from "../daemon/journal.js";
import { MemoryLimits } from "../daemon/memory-limits.js";
import { PageStoreKeeper } from "../daemon/page-store-keeper.js";
import { PlanStore } from "../daemon/plan-store.js";
import { HOOK_REPLY_MARGIN_MS, type StoreRequest } from "../daemon/protocol.js";
import { RateBook } from "../daemon/rates.js";
import { assertNoLiveDaemon, closeDaemonServer, startDaemonServer } from "../daemon/server.js";
import { GpuEngine } from "../gpu/engine.js";
import { type BackendKind, openBackend } from "../gpu/select-backend.js";
import { detectNetworkLock } from "../host/criu.js";
import { NvidiaSmiProbe } from "../host/nvidia-smi.js";
import { NriStub } from "../nri/stub.js";
import { type CriuConfigOptions, criuFilesFor, POST_DUMP_STAMP } from "../plugin/criu-config.js";
import { pageStoreOptedOut } from "../plugin/gpu-container.js";
import { kybernateHandlers } from "../plugin/kybernate-plugin.js";
import type { Selector } from "../plugin/selector.js";
import { PageStore } from "../store/page-store.js";

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
  /** "auto": what CRIU and the PATH offer (host/criu.ts). */
  criuNetworkLock: CriuConfigOptions["networkLock"] | "auto";
  /** The CRIU binary, for the auto network lock. */
  criu?: string;
  log: Logger;
  policy?: PolicyOptions;
  /** The node's page store and the checks before a checkpoint (issue 13); defaults: no store, checks on. */
  checkpoint?: CheckpointOptions;
}

export interface CheckpointOptions {
  /** `--page-store DIR`, on the filesystem of containerd's temp dir. */
  pageStoreDir?: string;
  pageStoreKeep?: number;
  /** This node's name in page manifests (default: $NODE_NAME, else the hostname). */
  nodeName?: string;
  diskAdmission?: boolean;
  containerdRoot?: string;
  /** Where CRI archives land (the kubelet's checkpoints dir). */
  archiveDirs?: string[];
  deadlineHintMs?: number;
}

const DEFAULT_ARCHIVE_DIR = "/var/lib/kubelet/checkpoints";

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
  const limits = new MemoryLimits(join(options.stateDir, "memory-limits"), limitHost(), log);
  await limits.open();
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
  const checkpointOptions = options.checkpoint ?? {};
  const criuDir = join(options.stateDir, "containers");
  const node = checkpointOptions.nodeName || process.env.NODE_NAME || hostname();
  const archiveDirs = checkpointOptions.archiveDirs ?? [DEFAULT_ARCHIVE_DIR];
  const keeper = checkpointOptions.pageStoreDir
    ? new PageStoreKeeper(await PageStore.open(checkpointOptions.pageStoreDir), {
        keep: checkpointOptions.pageStoreKeep ?? 2,
        archiveDirs,
        log,
      })
    : undefined;
  if (keeper) {
    // Nothing is in flight yet: an entry a crash left incomplete goes now.
    const collected = await keeper.store.collect({ keep: keeper.keep, incompleteAfterMs: 0 });
    log.info(
      { dir: keeper.store.dir, keep: keeper.keep, node, removed: collected.remove.length },
      "page store opened",
    );
    keeper.start();
  }
  const rates = new RateBook(join(options.stateDir, "rates.json"));
  await rates.load();
  const extras: CheckpointExtras = {
    node,
    ...(keeper ? { pages: keeper } : {}),
    disk: {
      enabled: checkpointOptions.diskAdmission ?? true,
      containerdRoot: checkpointOptions.containerdRoot ?? "/var/lib/containerd",
      ...(archiveDirs.find((d) => existsSync(d))
        ? { archiveDir: archiveDirs.find((d) => existsSync(d)) }
        : {}),
    },
    deadlineHintMs: checkpointOptions.deadlineHintMs ?? 120_000,
    rates,
    postDumpStamp: (id) => join(criuFilesFor(criuDir, id).dir, POST_DUMP_STAMP),
    criuConfigOf: (id) => criuFilesFor(criuDir, id).config,
  };
  const metricsServer = policyOptions.metricsPort
    ? await startMetricsServer(metrics, policyOptions.metricsPort, policyOptions.metricsHost)
    : undefined;
  if (metricsServer) log.info({ address: metricsServer.address() }, "metrics on /metrics");
  const coordinator = new Coordinator({
    log,
    journal,
    containers,
    plans,
    limits,
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
    checkpoint: extras,
  });
  await coordinator.recover();
  const status = () => ({
    ...containers.status(),
    ...(keeper ? { pageStore: { dir: keeper.store.dir, node, keep: keeper.keep } } : {}),
  });
  const server = await startDaemonServer(
    options.daemonSocket,
    coordinator,
    status,
    log,
    keeper ? (request) => storeRequest(keeper, node, request) : undefined,
  );
  let networkLock: CriuConfigOptions["networkLock"];
  if (options.criuNetworkLock === "auto") {
    const detected = await detectNetworkLock(options.criu ?? "criu");
    networkLock = detected.method;
    // Without a lock CRIU dumps connections while packets still reach them: worth a warning, not a refusal.
    (detected.method === "skip" ? log.warn.bind(log) : log.info.bind(log))(
      { networkLock: detected.method, reason: detected.reason },
      "CRIU network lock",
    );
  } else {
    networkLock = options.criuNetworkLock;
    log.info(
      { networkLock: networkLock || "criu's default (iptables)" },
      "CRIU network lock (--criu-network-lock)",
    );
  }
  const handlers = kybernateHandlers({
    criu: {
      stateDir: criuDir,
      hookPath: join(hooksDir, "kybernate-criu-hook"),
      node: process.execPath,
      daemonSocket: options.daemonSocket,
      networkLock,
      timeoutS: Math.ceil(options.gpuBudgetMs / 1000),
      hookTimeoutMs: options.gpuBudgetMs + HOOK_REPLY_MARGIN_MS,
      ...(keeper ? { pageStore: true } : {}),
    },
    ...(options.selector ? { selector: options.selector } : {}),
    log,
    onManaged: (pod, container, reason, tcp) => {
      containers.manage({
        id: container.id,
        name: container.name,
        pod: `${pod.namespace}/${pod.name}`,
        reason,
        restored: container.annotations.restored === "true",
        since: new Date().toISOString(),
        gpuRequest: gpuRequestOf(container.linux?.devices ?? [], container.env, pod.annotations),
        ...(pod.ips.length ? { podIps: pod.ips } : {}),
        ...(tcp ? { tcp } : {}),
        ...(pageStoreOptedOut(pod, container) ? { pageStore: false } : {}),
      });
    },
    onRemoved: (id) => {
      containers.remove(id);
      void plans.remove(id).catch(() => undefined);
      // A restore that never reached post-resume (CRIU failed) used its pages until now.
      void keeper?.store.releaseContainer(id).catch(() => undefined);
      // …and kept the limits pre-restore raised (its pod's survive the container): they go back now.
      void limits.settleContainer(id).catch(() => undefined);
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
      limits.close();
      await keeper?.close();
      if (metricsServer) await new Promise<void>((resolve) => metricsServer.close(() => resolve()));
      backend.close();
      tasks.close();
    },
  };
}

/** `kybernate store ls|gc` and `kybernate checkpoint`'s archive path, through the daemon that owns the store. */
async function storeRequest(keeper: PageStoreKeeper, node: string, request: StoreRequest) {
  switch (request.op) {
    case "ls":
      return {
        ok: true,
        data: {
          dir: keeper.store.dir,
          node,
          keep: keeper.keep,
          entries: await keeper.store.entries(),
          inUse: await keeper.store.inUse(),
        },
      };
    case "gc":
      return { ok: true, data: await keeper.collect(request.keep) };
    case "archive": {
      const known = await keeper.store.setArchive(request.checkpointId, request.path);
      return known
        ? { ok: true }
        : {
            ok: false,
            error: `the page store ${keeper.store.dir} has no checkpoint ${request.checkpointId}`,
          };
    }
  }
}

/**
 * The test node with kybernate and the GPU double, as the integration tests of GPU checkpoints use it: a
 * kybernate daemon, pods (on the node's CNI pod network, as the kubelet makes them, or host-network ones),
 * GPU-double containers, and the checks that a workload runs on its "GPU" with its VRAM intact. Pods made here
 * are removed at tearDown (unless KYBERNATE_TEST_KEEP is set).
 */
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { promisify } from "node:util";
import { packageRoot } from "../../src/base/paths.js";
import type { In, PodSandboxConfig } from "../../src/cri/types.js";
import { buildDouble } from "../gpu/double/harness.js";
import {
  gpuDoubleMounts,
  kybernateArgsForDouble,
  type WorkloadStatus,
  waitForWorkload,
  workloadStatuses,
} from "./gpu-double-container.js";
import { type KybernateProcess, startKybernate } from "./kybernate-process.js";
import { TestCriClient } from "./test-cri-client.js";
import { loadTestNode, type TestNode, testNodeEnvPath } from "./testnode.js";

const run = promisify(execFile);

export type Pod = { podId: string; config: In<PodSandboxConfig> };

export interface PodChoice {
  /** The node's network instead of a pod network of its own (kubelet's hostNetwork). */
  hostNetwork?: boolean;
  annotations?: Record<string, string>;
  /** The pod's cgroup, as the kubelet makes one per pod (cgroupfs path). */
  cgroupParent?: string;
}

const podNetworkFile = () => join(testNodeEnvPath(), "..", "pod-network.json");

/** Whether the test node has its CNI pod network (test/node/pod-network.sh). */
export function hasPodNetwork(): boolean {
  return existsSync(podNetworkFile());
}

/** The pod network test/node/pod-network.sh made: its bridge, subnet and the node's address on it. */
export function podNetwork(): { bridge: string; subnet: string; gateway: string } {
  return JSON.parse(readFileSync(podNetworkFile(), "utf8")) as {
    bridge: string;
    subnet: string;
    gateway: string;
  };
}

export class GpuNode {
  node!: TestNode;
  cri!: TestCriClient;
  scratch!: string;
  doubleDir!: string;
  kyb: KybernateProcess | undefined;
  private readonly pods: string[] = [];

  async setUp(): Promise<void> {
    this.node = loadTestNode();
    this.cri = new TestCriClient(this.node.criSocket);
    this.scratch = mkdtempSync("/tmp/kyb-gpu-e2e-");
    writeFileSync(join(this.scratch, "nvidiactl"), "");
    this.doubleDir = buildDouble();
    await this.cri.pullImage(this.node.image);
  }

  async tearDown(): Promise<void> {
    if (!process.env.KYBERNATE_TEST_KEEP)
      for (const podId of this.pods) await this.cri.stopAndRemovePod(podId).catch(() => undefined);
    await this.kyb?.stop();
    this.cri.close();
    rmSync(this.scratch, { recursive: true, force: true });
  }

  async ensureDaemon(): Promise<KybernateProcess> {
    return this.kyb ?? this.startDaemon();
  }

  async startDaemon(stateDir?: string, extraArgs: string[] = []): Promise<KybernateProcess> {
    this.kyb = await startKybernate({
      nriSocket: this.node.nriSocket,
      args: [...kybernateArgsForDouble(this.doubleDir, this.node), ...extraArgs],
      // The double's control sockets live in the container's /tmp/fake-cuda (its default); the harness module
      // points FAKE_CUDA_DIR elsewhere for plain-process tests.
      env: { FAKE_CUDA_DIR: "/tmp/fake-cuda" },
      ...(stateDir ? { stateDir } : {}),
    });
    return this.kyb;
  }

  /** A pod on the node's pod network (the kubelet's default), or on the host's network when asked or when the node has no pod network. */
  async newPod(name: string, choice: PodChoice = {}): Promise<Pod> {
    const podName = `${name}-${process.pid}`;
    const options = {
      ...(choice.annotations ? { annotations: choice.annotations } : {}),
      ...(choice.cgroupParent ? { cgroupParent: choice.cgroupParent } : {}),
    };
    const pod =
      choice.hostNetwork || !hasPodNetwork()
        ? await this.cri.runHostNetworkPod(podName, "kybernate-test", options)
        : await this.cri.runPodNetworkPod(podName, "kybernate-test", options);
    this.pods.push(pod.podId);
    return pod;
  }

  podIp(pod: Pod): Promise<string> {
    return this.cri.podIp(pod.podId);
  }

  /** A client pod's container querying an inference server in a loop; its status at /tmp/client.json. */
  async inferenceClient(pod: Pod, server: string, name = "client"): Promise<string> {
    const id = await this.cri.createContainer(pod.podId, pod.config, {
      name,
      image: this.node.image,
      command: ["/kyb/inference-client", "--server", server, "--status", "/tmp/client.json"],
      mounts: [{ containerPath: "/kyb", hostPath: this.doubleDir, readonly: true }],
    });
    await this.cri.startContainer(id);
    await this.clientStatus(id, (s) => s.ok > 5);
    return id;
  }

  /** The client's status once `ok` holds (within 15 s). */
  async clientStatus(
    clientId: string,
    ok: (s: ClientStatus) => boolean = () => true,
    timeoutMs = 15_000,
  ): Promise<ClientStatus> {
    const until = Date.now() + timeoutMs;
    let last: ClientStatus | undefined;
    while (Date.now() < until) {
      const { stdout, exitCode } = await this.cri
        .exec(clientId, ["cat", "/tmp/client.json"], 5)
        .catch(() => ({
          stdout: "",
          exitCode: 1,
        }));
      if (exitCode === 0 && stdout.startsWith("{")) {
        last = JSON.parse(stdout) as ClientStatus;
        if (ok(last)) return last;
      }
      await sleep(100);
    }
    throw new Error(
      `inference client ${clientId.slice(0, 12)}: never reached the expected state; last ${JSON.stringify(last)}`,
    );
  }

  /** Each of the client's inputs once, answered by the server at `server` ("k answer" lines). */
  async inferenceAnswers(fromContainer: string, server: string): Promise<string[]> {
    const { stdout, stderr, exitCode } = await this.cri.exec(
      fromContainer,
      ["/kyb/inference-client", "--server", server, "--print"],
      20,
    );
    assert.equal(exitCode, 0, `inference-client --print against ${server}: ${stderr}`);
    return stdout.trim().split("\n");
  }

  gpuMounts(faultDir?: string) {
    return gpuDoubleMounts(
      this.doubleDir,
      join(this.scratch, "nvidiactl"),
      faultDir ? [{ containerPath: "/faults", hostPath: faultDir }] : [],
    );
  }

  /** A fault directory for `--fault-file /faults/%p` (write a rule into `<dir>/<ns pid>`). */
  faultDir(): string {
    return mkdtempSync(join(this.scratch, "faults-"));
  }

  async gpuContainer(
    pod: Pod,
    options: {
      procs?: number;
      /** A helper process beside the workload holding what CRIU cannot dump: an io_uring ring, or a file lock. */
      undumpableHelper?: "io_uring" | "lock";
      faultDir?: string;
      mib?: number;
      /** An inference server on this port (GPU double's --serve). */
      serve?: number;
      memoryLimitBytes?: number;
      annotations?: Record<string, string>;
    } = {},
  ): Promise<string> {
    const workload = ["/kyb/fake-cuda-workload", "--mib", String(options.mib ?? 32)];
    if (options.procs) workload.push("--procs", String(options.procs));
    if (options.faultDir) workload.push("--fault-file", "/faults/%p");
    if (options.serve) workload.push("--serve", String(options.serve));
    const command = options.undumpableHelper
      ? [
          "sh",
          "-c",
          `/kyb/fake-cuda-workload ${options.undumpableHelper === "lock" ? "--undumpable-lock" : "--undumpable"} & exec ${workload.join(" ")}`,
        ]
      : workload;
    const id = await this.cri.createContainer(pod.podId, pod.config, {
      name: "cuda",
      image: this.node.image,
      command,
      mounts: this.gpuMounts(options.faultDir),
      ...(options.memoryLimitBytes !== undefined ? { memoryLimitBytes: options.memoryLimitBytes } : {}),
      ...(options.annotations ? { annotations: options.annotations } : {}),
    });
    await this.cri.startContainer(id);
    await this.waitFor(
      id,
      (all) =>
        all.length === (options.procs ?? 1) && all.every((s) => s.state === "running" && s.counter > 5),
    );
    return id;
  }

  /** A container that is no GPU container (kybernate must never touch or slow it). */
  async plainContainer(pod: Pod, name = "plain"): Promise<string> {
    const id = await this.cri.createContainer(pod.podId, pod.config, {
      name,
      image: this.node.image,
      command: ["sleep", "3600"],
    });
    await this.cri.startContainer(id);
    return id;
  }

  statuses(containerId: string): Promise<WorkloadStatus[]> {
    return workloadStatuses(this.cri, containerId);
  }

  waitFor(containerId: string, ok: (all: WorkloadStatus[]) => boolean): Promise<WorkloadStatus[]> {
    return waitForWorkload(this.cri, containerId, ok, { kybernateLogs: () => this.kyb?.logs ?? [] });
  }

  /** Running on the GPU and making progress: the counter only moves while the "driver" state is RUNNING. */
  async assertRunningOnGpu(
    containerId: string,
    expect: Partial<WorkloadStatus> = {},
  ): Promise<WorkloadStatus[]> {
    const first = await this.waitFor(containerId, (all) => all.every((s) => s.state === "running"));
    await sleep(300);
    const later = await this.statuses(containerId);
    for (const status of later) {
      const before = first.find((s) => s.pid === status.pid);
      assert.equal(status.state, "running");
      assert.ok(
        before && status.counter > before.counter,
        `counter of pid ${status.pid} does not move: ${JSON.stringify({ before, status })}`,
      );
      assert.equal(status.verifyFailures, 0, "VRAM checksum failures");
      for (const [key, value] of Object.entries(expect)) {
        assert.equal(status[key as keyof WorkloadStatus], value, `${key} of pid ${status.pid}`);
      }
    }
    const info = await this.cri.containerStatus(containerId);
    assert.equal(info.status?.state, "CONTAINER_RUNNING");
    return later;
  }

  /** containerd agrees the task runs: an exec is accepted (it refuses one "in a paused state"). */
  async assertExecWorks(containerId: string): Promise<void> {
    const result = await this.cri.exec(containerId, ["true"], 5);
    assert.equal(result.exitCode, 0, `exec in ${containerId.slice(0, 12)}: ${result.stderr}`);
  }

  /**
   * What a post-resume that could not reach the daemon leaves (runc ignores that failure): the container runs, its
   * CUDA process sits CHECKPOINTED. Made with kybernate's own operator command while no daemon runs.
   */
  async strandCheckpointed(id: string): Promise<void> {
    await run(
      process.execPath,
      [
        join(packageRoot, "dist/src/cli/main.js"),
        "gpu",
        "freeze",
        "--container",
        id,
        "--runtime-endpoint",
        this.node.criSocket,
        ...kybernateArgsForDouble(this.doubleDir).slice(0, 4),
      ],
      { env: { ...process.env, FAKE_CUDA_DIR: "/tmp/fake-cuda" } },
    );
    await waitForWorkload(this.cri, id, (all) => all.every((s) => s.state === "checkpointed"), {
      what: "stranded",
    });
  }

  /** A checkpoint that must succeed; on failure the daemon's last log lines say why. */
  async checkpointOrShowLogs(containerId: string, name: string): Promise<void> {
    try {
      await this.cri.checkpoint(containerId, this.archivePath(name), 60);
    } catch (error) {
      const tail = (this.kyb?.logs ?? []).slice(-15).map((l) => JSON.stringify(l).slice(0, 400));
      throw new Error(`${(error as Error).message}\nkybernate log:\n${tail.join("\n")}`);
    }
  }

  archivePath(name: string): string {
    return join(this.scratch, `${name}.tar`);
  }

  ociConfig(containerId: string): { annotations?: Record<string, string> } {
    const n = this.node;
    return JSON.parse(
      readFileSync(
        join(n.state, "io.containerd.runtime.v2.task", n.namespace, containerId, "config.json"),
        "utf8",
      ),
    ) as { annotations?: Record<string, string> };
  }
}

/** What inference-client writes (test/gpu/inference/inference-client.c). */
export interface ClientStatus {
  requests: number;
  ok: number;
  failed: number;
  mismatches: number;
  connects: number;
  maxLatencyMs: number;
  lastLatencyMs: number;
  lastError: string;
}

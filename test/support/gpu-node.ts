/**
 * The test node with kybernate and the GPU double, as the integration tests of GPU checkpoints use it: a
 * kybernate daemon, host-network pods, GPU-double containers, and the checks that a workload runs on its "GPU"
 * with its VRAM intact. Pods made here are removed at tearDown (unless KYBERNATE_TEST_KEEP is set).
 */
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
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
import { loadTestNode, type TestNode } from "./testnode.js";

const run = promisify(execFile);

export type Pod = { podId: string; config: In<PodSandboxConfig> };

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

  async newPod(name: string): Promise<Pod> {
    const pod = await this.cri.runHostNetworkPod(`${name}-${process.pid}`, "kybernate-test");
    this.pods.push(pod.podId);
    return pod;
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
    options: { procs?: number; undumpableHelper?: boolean; faultDir?: string; mib?: number } = {},
  ): Promise<string> {
    const workload = ["/kyb/fake-cuda-workload", "--mib", String(options.mib ?? 32)];
    if (options.procs) workload.push("--procs", String(options.procs));
    if (options.faultDir) workload.push("--fault-file", "/faults/%p");
    const command = options.undumpableHelper
      ? ["sh", "-c", `/kyb/fake-cuda-workload --undumpable & exec ${workload.join(" ")}`]
      : workload;
    const id = await this.cri.createContainer(pod.podId, pod.config, {
      name: "cuda",
      image: this.node.image,
      command,
      mounts: this.gpuMounts(options.faultDir),
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

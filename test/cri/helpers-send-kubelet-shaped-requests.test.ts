// The CRI helpers must put on the wire what kubelet would send for the same pod and container.
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { TestCriClient } from "../support/test-cri-client.js";
import { type FakeRuntime, startFakeRuntime } from "./fake-cri-runtime.js";

// biome-ignore lint/suspicious/noExplicitAny: requests are inspected as decoded JSON-ish trees.
type Any = any;

describe("TestCriClient helpers on the wire", () => {
  let rt: FakeRuntime;
  let cri: TestCriClient;
  before(async () => {
    rt = await startFakeRuntime({
      Version: { version: "0.1.0", runtimeName: "fake", runtimeVersion: "v9", runtimeApiVersion: "v1" },
      RunPodSandbox: { podSandboxId: "pod-1" },
      CreateContainer: { containerId: "ctr-1" },
      StartContainer: {},
      ExecSync: { stdout: Buffer.from("héllo\n"), stderr: Buffer.from(""), exitCode: 3 },
      CheckpointContainer: {},
      StopPodSandbox: {},
      RemovePodSandbox: {},
      PullImage: { imageRef: "sha256:abc" },
      ImageStatus: {},
      ListContainers: {
        containers: [
          {
            id: "ctr-1",
            podSandboxId: "pod-1",
            state: "CONTAINER_RUNNING",
            createdAt: "1732890000123456789",
          },
        ],
      },
    });
    cri = new TestCriClient(rt.socket);
  });
  after(async () => {
    cri.close();
    await rt.stop();
  });
  /** The last (or i-th) request the runtime saw for `name`. */
  const sent = (name: string, i = -1): Any => {
    const list = rt.seen[name];
    assert.ok(list?.length, `the runtime saw no ${name}`);
    return list.at(i);
  };

  it("Version reports the runtime", async () => {
    const v = await cri.version();
    assert.deepEqual(v, {
      version: "0.1.0",
      runtimeName: "fake",
      runtimeVersion: "v9",
      runtimeApiVersion: "v1",
    });
    assert.deepEqual(rt.seen.Version, [{ version: "v1" }]);
  });

  it("runHostNetworkPod asks for the node's network, its own pid namespace per container and no hostname", async () => {
    const pod = await cri.runHostNetworkPod("web", "ns1", {
      labels: { app: "x" },
      annotations: { a: "1" },
      uid: "u-1",
    });
    assert.equal(pod.podId, "pod-1");
    const req = sent("RunPodSandbox", 0);
    assert.deepEqual(req.config.metadata, { name: "web", namespace: "ns1", uid: "u-1", attempt: 0 });
    assert.equal(req.config.hostname, "");
    assert.deepEqual(req.config.labels, { app: "x" });
    assert.deepEqual(req.config.annotations, { a: "1" });
    assert.deepEqual(req.config.linux.securityContext.namespaceOptions, {
      network: "NODE",
      pid: "CONTAINER",
      ipc: "POD",
      targetId: "",
    });
  });

  it("createContainer sends env as UTF-8 bytes, mounts, devices, CDI names and the pod's namespaces", async () => {
    const pod = await cri.runHostNetworkPod("web", "ns1");
    const id = await cri.createContainer(pod.podId, pod.config, {
      name: "main",
      image: "localhost:5000/busybox:1",
      command: ["sleep"],
      args: ["infinity"],
      env: { GREETING: "grüß=dich", EMPTY: "" },
      mounts: [{ containerPath: "/data", hostPath: "/srv/data", readonly: true }],
      devices: [{ containerPath: "/dev/fuse", hostPath: "/dev/fuse" }],
      cdiDevices: ["nvidia.com/gpu=0"],
      annotations: { "org.criu.config": "" },
      labels: { role: "test" },
      logPath: "main.log",
    });
    assert.equal(id, "ctr-1");
    const req = sent("CreateContainer");
    assert.equal(req.podSandboxId, "pod-1");
    assert.deepEqual(req.sandboxConfig.metadata.name, "web");
    const c = req.config;
    assert.deepEqual(c.metadata, { name: "main", attempt: 0 });
    assert.equal(c.image.image, "localhost:5000/busybox:1");
    assert.deepEqual([c.command, c.args], [["sleep"], ["infinity"]]);
    assert.deepEqual(
      c.envs.map((e: Any) => [e.key, e.value.toString("utf8")]),
      [
        ["GREETING", "grüß=dich"],
        ["EMPTY", ""],
      ],
    );
    assert.deepEqual(c.mounts[0], {
      containerPath: "/data",
      hostPath: "/srv/data",
      readonly: true,
      selinuxRelabel: false,
      propagation: "PROPAGATION_PRIVATE",
      recursiveReadOnly: false,
    });
    assert.deepEqual(c.devices, [{ containerPath: "/dev/fuse", hostPath: "/dev/fuse", permissions: "rwm" }]);
    assert.deepEqual(c.CDIDevices, [{ name: "nvidia.com/gpu=0" }]);
    assert.deepEqual(c.annotations, { "org.criu.config": "" });
    assert.deepEqual(c.labels, { role: "test" });
    assert.equal(c.logPath, "main.log");
    assert.equal(c.linux.securityContext.namespaceOptions.network, "NODE");
    assert.equal(c.linux.securityContext.namespaceOptions.pid, "CONTAINER");
  });

  it("restoreFromArchive creates a container whose image is the archive path", async () => {
    const pod = await cri.runHostNetworkPod("web2", "ns1");
    await cri.restoreFromArchive(pod.podId, pod.config, "/var/lib/kybernate/ckpt.tar", "restored", {
      labels: { r: "1" },
    });
    const c = sent("CreateContainer").config;
    assert.equal(c.image.image, "/var/lib/kybernate/ckpt.tar");
    assert.deepEqual(c.metadata, { name: "restored", attempt: 0 });
    assert.deepEqual(c.labels, { r: "1" });
    assert.deepEqual(c.command, []);
    await assert.rejects(cri.restoreFromArchive(pod.podId, pod.config, "ckpt.tar", "x"), /must be absolute/);
  });

  it("exec decodes output and returns a non-zero exit code as a result", async () => {
    const r = await cri.exec("ctr-1", ["sh", "-c", "exit 3"], 7);
    assert.deepEqual(r, { stdout: "héllo\n", stderr: "", exitCode: 3 });
    assert.deepEqual(sent("ExecSync", 0), {
      containerId: "ctr-1",
      cmd: ["sh", "-c", "exit 3"],
      timeout: "7",
    });
  });

  it("checkpoint sends location and timeout in seconds, and refuses a relative location", async () => {
    await cri.checkpoint("ctr-1", "/tmp/c.tar", 90);
    assert.deepEqual(sent("CheckpointContainer", 0), {
      containerId: "ctr-1",
      location: "/tmp/c.tar",
      timeout: "90",
    });
    await assert.rejects(cri.checkpoint("ctr-1", "c.tar", 90), /absolute path/);
    await assert.rejects(cri.checkpoint("ctr-1", "/tmp/c.tar", 0), /timeout must be > 0/);
  });

  it("pullImage returns the resolved ref; imageStatus returns null for an absent image", async () => {
    assert.equal(await cri.pullImage("localhost:5000/busybox:1"), "sha256:abc");
    assert.equal(sent("PullImage", 0).image.image, "localhost:5000/busybox:1");
    assert.equal(await cri.imageStatus("nope:1"), null);
  });

  it("listContainers keeps nanosecond timestamps exact (int64 as strings)", async () => {
    const [c] = await cri.listContainers({ podSandboxId: "pod-1" });
    assert.equal(c?.createdAt, "1732890000123456789");
    assert.equal(c?.state, "CONTAINER_RUNNING");
    assert.equal(sent("ListContainers", 0).filter.podSandboxId, "pod-1");
  });

  it("stopAndRemovePod stops, then removes", async () => {
    await cri.stopAndRemovePod("pod-1");
    assert.deepEqual(rt.seen.StopPodSandbox, [{ podSandboxId: "pod-1" }]);
    assert.deepEqual(rt.seen.RemovePodSandbox, [{ podSandboxId: "pod-1" }]);
  });
});

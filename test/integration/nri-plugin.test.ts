// The NRI plugin (in-process NriStub + kybernate's handlers) against the real containerd of the test node,
// driven through CRI: registration, the annotation in the OCI config.json, containerd restarts, and handlers
// that throw or stall never failing a container's creation.
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { existsSync, readFileSync, statSync } from "node:fs";
import { join } from "node:path";
import { performance } from "node:perf_hooks";
import { after, before, describe, it } from "node:test";
import { version } from "../../src/base/version.js";
import type { RunningPod } from "../../src/cri/client.js";
import type { NriHandlers } from "../../src/nri/handlers.js";
import { NriStub } from "../../src/nri/stub.js";
import { CRIU_CONFIG_ANNOTATION, VERSION_ANNOTATION } from "../../src/plugin/kybernate-plugin.js";
import { captureLog, kybernateFor, within } from "../nri/fixtures.js";
import { TestCriClient } from "../support/test-cri-client.js";
import { loadTestNode, restartContainerd, type TestNode } from "../support/testnode.js";

const SELECT_KEY = "kybernate.io/it";

interface OciConfig {
  annotations?: Record<string, string>;
}

describe("NRI plugin on the containerd test node", { timeout: 60_000 }, () => {
  const suffix = randomBytes(3).toString("hex");
  const capture = captureLog();
  let node: TestNode;
  let cri: TestCriClient;
  let plugin: ReturnType<typeof kybernateFor>;
  let stub: NriStub;
  let pod: RunningPod;
  const pods: string[] = [];
  const stubs: NriStub[] = [];

  /** The OCI spec runc got: the task's bundle exists once the container has been started. */
  function ociConfig(containerId: string): OciConfig {
    const file = join(
      node.state,
      "io.containerd.runtime.v2.task",
      node.namespace,
      containerId,
      "config.json",
    );
    assert.ok(existsSync(file), `no OCI config at ${file}`);
    return JSON.parse(readFileSync(file, "utf8")) as OciConfig;
  }

  async function createAndStart(name: string, labels: Record<string, string>): Promise<string> {
    const id = await cri.createContainer(pod.podId, pod.config, {
      name,
      image: node.image,
      command: ["sleep", "3600"],
      labels,
    });
    await cri.startContainer(id);
    return id;
  }

  before(async () => {
    node = loadTestNode();
    cri = new TestCriClient(node.criSocket);
    await cri.pullImage(node.image);
    plugin = kybernateFor(`${SELECT_KEY}=${suffix}`, capture.log);
    stub = new NriStub(plugin.handlers, {
      socketPath: node.nriSocket,
      pluginName: "kybernate",
      pluginIndex: "10",
      log: capture.log,
    });
    stubs.push(stub);
    pod = await cri.runHostNetworkPod(`nri-plugin-${suffix}`, "kybernate-test");
    pods.push(pod.podId);
  });

  after(async () => {
    for (const s of stubs) await s.stop();
    for (const id of pods) {
      await cri.stopAndRemovePod(id).catch((e: Error) => console.error(`cleanup of pod ${id}: ${e.message}`));
    }
    cri?.close();
    plugin?.cleanup();
  });

  it("registers with containerd", async (t) => {
    const started = performance.now();
    await within(5000, "registration with the test node's containerd", stub.start());
    t.diagnostic(`registered in ${(performance.now() - started).toFixed(0)} ms`);
    assert.ok(stub.connected);
    const configured = capture.lines.find((l) => l.msg === "configured by runtime");
    assert.equal(configured?.runtime, "containerd");
    assert.equal(configured?.requestTimeoutMs, 2000);
  });

  it("a container matching the selector carries the annotation in its OCI config.json", async () => {
    const id = await createAndStart("selected", { [SELECT_KEY]: suffix });
    const annotations = ociConfig(id).annotations ?? {};
    assert.equal(annotations[VERSION_ANNOTATION], version);
    assert.equal(annotations[CRIU_CONFIG_ANNOTATION], join(plugin.stateDir, id, "criu.conf"));
    assert.ok(existsSync(join(plugin.stateDir, id, "criu.conf")), "the plugin wrote no CRIU files for it");
  });

  it("a container not matching the selector is untouched", async () => {
    const id = await createAndStart("unselected", { [SELECT_KEY]: "someone-else" });
    const annotations = ociConfig(id).annotations ?? {};
    const ours = Object.keys(annotations).filter(
      (k) => k.startsWith("kybernate.io/") || k === CRIU_CONFIG_ANNOTATION,
    );
    assert.deepEqual(ours, [], JSON.stringify(annotations));
    assert.ok(annotations["io.kubernetes.cri.container-name"], "no CRI annotations: wrong config.json?");
  });

  it("is registered again within 2 s of a containerd restart, and adjusts the next container", async (t) => {
    let disconnectedAt = 0;
    stub.once("disconnected", () => {
      disconnectedAt = performance.now();
    });
    const registered = new Promise<[number, number]>((resolve) =>
      stub.once("registered", () => resolve([performance.now(), Date.now()])),
    );
    const restartAt = performance.now();
    const restartWall = Date.now();
    await restartContainerd();
    const upAt = performance.now();
    const [registeredAt, registeredWall] = await within(
      5000,
      "re-registration after the containerd restart",
      registered,
    );
    // containerd creates its NRI socket anew when it starts: from then on, the time is the plugin's backoff.
    const socketAt = statSync(node.nriSocket).ctimeMs;
    assert.ok(socketAt >= restartWall, "containerd did not recreate its NRI socket: was it restarted?");
    const afterSocket = registeredWall - socketAt;
    const afterCri = registeredAt - upAt;
    t.diagnostic(
      `containerd restart took ${(upAt - restartAt).toFixed(0)} ms; plugin re-registered ` +
        `${afterSocket.toFixed(0)} ms after the NRI socket reappeared, ${afterCri.toFixed(0)} ms after CRI ` +
        `answered again, ${(registeredAt - disconnectedAt).toFixed(0)} ms after it lost the connection`,
    );
    assert.ok(disconnectedAt > restartAt, "the plugin never saw containerd go away");
    assert.ok(
      afterSocket < 2000,
      `re-registered ${afterSocket.toFixed(0)} ms after containerd's NRI socket was back`,
    );
    assert.ok(afterCri < 2000, `re-registered ${afterCri.toFixed(0)} ms after containerd answered CRI again`);
    const id = await createAndStart("after-restart", { [SELECT_KEY]: suffix });
    assert.equal(ociConfig(id).annotations?.[VERSION_ANNOTATION], version);
  });

  describe("a misbehaving handler", () => {
    let behaviour: "throw" | "slow" = "throw";
    let calls = 0;
    const throwing: NriHandlers = {
      createContainer: async (_pod, container) => {
        if (container.labels[SELECT_KEY] !== `${suffix}-bad`) return undefined;
        calls++;
        if (behaviour === "throw") throw new Error("handler bug");
        // Past containerd's 2 s request timeout: answering late would make containerd drop the plugin.
        await new Promise((r) => setTimeout(r, 2500));
        return { annotations: { "kybernate.io/late": "yes" } };
      },
    };
    let bad: NriStub;
    let drops = 0;

    before(async () => {
      bad = new NriStub(throwing, {
        socketPath: node.nriSocket,
        pluginName: "kybernate",
        pluginIndex: "11",
        log: capture.log,
      });
      stubs.push(bad);
      bad.on("disconnected", () => drops++);
      await within(5000, "registration of the second plugin", bad.start());
    });

    it("that throws never fails the container's creation", async () => {
      behaviour = "throw";
      const id = await createAndStart("handler-throws", { [SELECT_KEY]: `${suffix}-bad` });
      assert.equal(calls, 1, "the throwing handler was not called");
      assert.equal((await cri.containerStatus(id)).status?.state, "CONTAINER_RUNNING");
      assert.ok(
        capture.lines.some((l) => l.id === id && l.msg === "CreateContainer handler failed; no adjustment"),
      );
    });

    it("that outlasts containerd's request timeout gives no adjustment, and the plugin stays registered", async (t) => {
      behaviour = "slow";
      const started = performance.now();
      const id = await createAndStart("handler-slow", { [SELECT_KEY]: `${suffix}-bad` });
      t.diagnostic(`create + start with a stalled handler: ${(performance.now() - started).toFixed(0)} ms`);
      assert.equal(calls, 2);
      assert.equal(ociConfig(id).annotations?.["kybernate.io/late"], undefined);
      // containerd drops a plugin that misses its deadline; a new container shows whether it still calls us.
      behaviour = "throw";
      await createAndStart("handler-after-slow", { [SELECT_KEY]: `${suffix}-bad` });
      assert.equal(calls, 3, "containerd stopped calling the plugin after the slow answer");
      assert.equal(drops, 0);
      assert.ok(bad.connected);
    });
  });
});

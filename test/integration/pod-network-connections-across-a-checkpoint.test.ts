/**
 * GPU containers as Kubernetes runs them, on the test node's CNI pod network: an inference server (the GPU
 * double's --serve, weights in its VRAM) queried in a loop by a client pod over one keep-alive connection.
 * A kubelet-shaped CheckpointContainer while requests flow fails none of them and keeps the connection; a
 * restore into a new pod (new IP) brings the established connection back closed (the server reads EOF on it),
 * listens again on the new IP and answers the same inputs byte for byte; a connection inside the container
 * (loopback) is kept even there; each choice follows the pod's annotations. Host-network pods too.
 */
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { after, before, describe, test } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { type ClientStatus, GpuNode, hasPodNetwork, podNetwork } from "../support/gpu-node.js";

const f = new GpuNode();
before(async () => {
  await f.setUp();
  await f.ensureDaemon();
});
after(() => f.tearDown());

const PORT = 8080;

/** The CRIU configuration kybernate wrote for a container. */
function criuConfig(id: string): string {
  const path = f.ociConfig(id).annotations?.["org.criu.config"] ?? assert.fail("no org.criu.config");
  return readFileSync(path, "utf8");
}

/** The kybernate log line that configured a container. */
function configured(id: string): Record<string, unknown> {
  return (
    f.kyb?.logs.find((l) => l.id === id && l.msg === "GPU container: CRIU hook configured") ??
    assert.fail(`no configuration logged for ${id}`)
  );
}

/** A GPU inference server in a pod and a client pod querying it in a loop over one connection. */
async function servedUnderLoad(name: string, hostNetwork = false) {
  const serverPod = await f.newPod(`${name}-server`, { hostNetwork });
  const port = hostNetwork ? PORT + 1 + (process.pid % 1000) : PORT;
  const server = await f.gpuContainer(serverPod, { serve: port });
  // A host-network server listens on every node address, the pod network's gateway among them.
  const ip = hostNetwork ? podNetwork().gateway : await f.podIp(serverPod);
  const clientPod = await f.newPod(`${name}-client`);
  const client = await f.inferenceClient(clientPod, `${ip}:${port}`);
  return { serverPod, server, ip, port, clientPod, client };
}

describe("pod-network GPU containers keep their connections across a checkpoint", {
  skip: !hasPodNetwork() && "the test node has no pod network",
}, () => {
  let shared: Awaited<ReturnType<typeof servedUnderLoad>> | undefined;

  for (const hostNetwork of [false, true])
    test(`${hostNetwork ? "host network" : "pod network"}: a kubelet-shaped checkpoint while the client pod's requests flow fails none, and the same connection goes on`, async (t) => {
      const s = await servedUnderLoad(hostNetwork ? "infer-host" : "infer", hostNetwork);
      if (!hostNetwork) shared = s;
      assert.match(criuConfig(s.server), /^tcp-established$/m);
      assert.match(criuConfig(s.server), /^network-lock nftables$/m, "the lock CRIU offers on this node");
      const before = await f.clientStatus(s.client);
      await f.checkpointOrShowLogs(s.server, hostNetwork ? "infer-host" : "infer");
      const later = await f.clientStatus(s.client, (c) => c.ok > before.ok + 25);
      t.diagnostic(`client: ${JSON.stringify(later)}`);
      assert.equal(later.failed, 0, `failed requests: ${later.lastError}`);
      assert.equal(later.mismatches, 0);
      assert.equal(later.connects, 1, "the client kept its one connection");
      await f.assertRunningOnGpu(s.server, { checkpoints: 1, restores: 1, verified: 1, open: 1 });
    });

  test("restored into a new pod: the connection comes back closed, the listener answers on the new IP with the same outputs, VRAM verified", async () => {
    const s = shared ?? (await servedUnderLoad("infer"));
    if (!shared) await f.checkpointOrShowLogs(s.server, "infer");
    const reference = await f.inferenceAnswers(s.client, `${s.ip}:${s.port}`);
    const [atCheckpoint] = await f.statuses(s.server);
    const pod = await f.newPod("infer-restored");
    const restored = await f.cri.restoreFromArchive(pod.podId, pod.config, f.archivePath("infer"), "cuda", {
      mounts: f.gpuMounts(),
    });
    await f.cri.startContainer(restored);
    const [status] = await f.assertRunningOnGpu(restored, { checkpoints: 1, restores: 1, verified: 1 });
    assert.match(criuConfig(restored), /^tcp-close$/m);
    assert.match(String(configured(restored).tcpReason), /connections on 10\.233\.0\.\d+, which this pod/);
    // The client's connection was open at the checkpoint: the restored server read end-of-stream on it, so every
    // connection it ever accepted is closed now (it accepts no new one before the answers below).
    assert.ok(
      status && (atCheckpoint?.open ?? 0) >= 1,
      `a connection was open at the checkpoint: ${JSON.stringify(atCheckpoint)}`,
    );
    const [closedNow] = await f.waitFor(restored, (all) => all.every((x) => x.open === 0));
    assert.ok(
      closedNow && closedNow.accepted >= 1 && closedNow.closed === closedNow.accepted,
      JSON.stringify(closedNow),
    );
    const newIp = await f.podIp(pod);
    assert.notEqual(newIp, s.ip);
    assert.deepEqual(
      await f.inferenceAnswers(s.client, `${newIp}:${s.port}`),
      reference,
      "same answers, byte for byte",
    );
    // The original server never noticed: its client still has its one connection and no failure.
    const original = await f.clientStatus(s.client);
    assert.equal(original.failed, 0);
    assert.equal(original.connects, 1);
  });

  /** A server with a client inside its own container, on loopback: both ends are in the checkpoint. */
  async function loopbackPair(name: string, annotations?: Record<string, string>) {
    const pod = await f.newPod(name, annotations ? { annotations } : {});
    const id = await f.cri.createContainer(pod.podId, pod.config, {
      name: "cuda",
      image: f.node.image,
      command: [
        "sh",
        "-c",
        `(sleep 1; exec /kyb/inference-client --server 127.0.0.1:${PORT} --status /tmp/inner.json) & exec /kyb/fake-cuda-workload --mib 16 --serve ${PORT}`,
      ],
      mounts: f.gpuMounts(),
    });
    await f.cri.startContainer(id);
    const inner = await innerClient(id, (c) => c.ok > 10);
    return { pod, id, inner };
  }

  async function innerClient(id: string, ok: (c: ClientStatus) => boolean): Promise<ClientStatus> {
    const until = Date.now() + 15_000;
    let last: ClientStatus | undefined;
    while (Date.now() < until) {
      const r = await f.cri.exec(id, ["cat", "/tmp/inner.json"], 5).catch(() => undefined);
      if (r?.exitCode === 0 && r.stdout.startsWith("{")) {
        last = JSON.parse(r.stdout) as ClientStatus;
        if (ok(last)) return last;
      }
      await sleep(100);
    }
    return assert.fail(`inner client of ${id.slice(0, 12)}: ${JSON.stringify(last)}`);
  }

  async function restoreInto(
    name: string,
    archive: string,
    annotations?: Record<string, string>,
  ): Promise<string> {
    const pod = await f.newPod(name, annotations ? { annotations } : {});
    const id = await f.cri.restoreFromArchive(pod.podId, pod.config, f.archivePath(archive), "cuda", {
      mounts: f.gpuMounts(),
    });
    await f.cri.startContainer(id);
    await f.assertRunningOnGpu(id, { verified: 1 });
    return id;
  }

  test("a connection inside the container (loopback) is kept by a restore into a new pod (auto: tcp-established)", async () => {
    const { id, inner } = await loopbackPair("loopback");
    await f.checkpointOrShowLogs(id, "loopback");
    const restored = await restoreInto("loopback-restored", "loopback");
    assert.match(criuConfig(restored), /^tcp-established$/m);
    assert.match(String(configured(restored).tcpReason), /every connection is on loopback/);
    const later = await innerClient(restored, (c) => c.ok > inner.ok + 20);
    assert.equal(later.connects, 1, `the restored client kept its connection: ${JSON.stringify(later)}`);
    assert.equal(later.mismatches, 0);
  });

  test("traits (UDP, unix sockets by path and abstract, eventfd/epoll/timerfd, POSIX shm and a semaphore in /dev/shm, 16 threads): kept by a leave-running checkpoint; a restore into a new pod is refused by CRIU (the semaphore's file is in the old pod's /dev/shm)", async () => {
    const pod = await f.newPod("traits");
    const id = await f.cri.createContainer(pod.podId, pod.config, {
      name: "cuda",
      image: f.node.image,
      command: ["/kyb/fake-cuda-workload", "--mib", "16", "--traits", "1"],
      mounts: f.gpuMounts(),
    });
    await f.cri.startContainer(id);
    const traitsOk = (all: Array<{ traits?: string; traitChecks?: number }>, after = 0) =>
      all.every((x) => x.traits === "ok" && (x.traitChecks ?? 0) > after + 5);
    const [before] = await f.waitFor(id, (all) => traitsOk(all));
    await f.checkpointOrShowLogs(id, "traits");
    const [kept] = await f.waitFor(
      id,
      (all) => traitsOk(all, before?.traitChecks) || all.some((x) => x.traits !== "ok"),
    );
    assert.equal(kept?.traits, "ok", "after the checkpoint");
    // glibc's sem_open maps a temporary file it then links under the semaphore's name and unlinks: CRIU keeps the
    // mapping with link-remap, a link in the pod's /dev/shm that the new pod has not (CRIU: "Can't link
    // dev/shm/link_remap.N -> dev/shm/sem.XXXXXX: No such file or directory"). docs/CONNECTIONS.md, Other traits.
    const other = await f.newPod("traits-restored");
    const restored = await f.cri.restoreFromArchive(
      other.podId,
      other.config,
      f.archivePath("traits"),
      "cuda",
      {
        mounts: f.gpuMounts(),
      },
    );
    await assert.rejects(f.cri.startContainer(restored), /criu failed: type RESTORE/);
    await f.assertRunningOnGpu(id);
  });

  test("annotations choose: kybernate.io/tcp=close at checkpoint, kybernate.io/tcp-restore=close on the new pod", async () => {
    const { id } = await loopbackPair("tcp-close", { "kybernate.io/tcp": "close" });
    assert.match(criuConfig(id), /^tcp-close$/m);
    assert.equal(configured(id).tcpReason, "kybernate.io/tcp=close");
    // Not dumped and not locked: the connection inside goes on as if nothing happened.
    await f.checkpointOrShowLogs(id, "tcp-close");
    const restored = await restoreInto("tcp-close-restored", "tcp-close", {
      "kybernate.io/tcp-restore": "close",
    });
    assert.match(criuConfig(restored), /^tcp-close$/m);
    assert.equal(configured(restored).tcpReason, "kybernate.io/tcp-restore=close");
    // The inner client read end-of-stream on its restored connection and dialled the restored listener again.
    const later = await innerClient(restored, (c) => c.connects >= 2 && c.ok > 0);
    assert.equal(later.mismatches, 0);
  });
});

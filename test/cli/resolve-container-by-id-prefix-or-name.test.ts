import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { initPidOf, resolveContainer, resolvePod } from "../../src/cli/resolve.js";
import { CriClient } from "../../src/cri/client.js";
import { type FakeRuntime, startFakeRuntime } from "../cri/fake-cri-runtime.js";
import { container, POD_A, POD_B, pod } from "./fixtures.js";

const C1 = "c0ffee01aaaa0000000000000000000000000000000000000000000000000001";
const C2 = "c0ffee02bbbb0000000000000000000000000000000000000000000000000002";
const C3 = "d00d0003cccc0000000000000000000000000000000000000000000000000003";
const C4 = "e0e00004dddd0000000000000000000000000000000000000000000000000004";

describe("CONTAINER and POD arguments", () => {
  let rt: FakeRuntime;
  let cri: CriClient;
  before(async () => {
    rt = await startFakeRuntime({
      ListContainers: {
        containers: [
          container(C1, "trainer", POD_A),
          container(C2, "worker", POD_A),
          container(C3, "worker", POD_B),
          container(C4, "old", POD_B, "CONTAINER_EXITED"),
        ],
      },
      ListPodSandbox: { items: [pod(POD_A, "jobs", "ml"), pod(POD_B, "jobs", "dev")] },
      ContainerStatus: (req: unknown) => {
        const id = (req as { containerId: string }).containerId;
        if (id === C4) return { status: { id, state: "CONTAINER_EXITED" }, info: {} };
        if (id === C2) return { status: { id, state: "CONTAINER_RUNNING" }, info: { info: "{}" } };
        return { status: { id, state: "CONTAINER_RUNNING" }, info: { info: JSON.stringify({ pid: 4242 }) } };
      },
    });
    cri = new CriClient(rt.socket);
  });
  after(async () => {
    cri.close();
    await rt.stop();
  });

  test("an exact id, a unique id prefix and a unique name each find the container and its pod", async () => {
    assert.equal((await resolveContainer(cri, C3)).container.id, C3);
    const byPrefix = await resolveContainer(cri, "c0ffee02");
    assert.equal(byPrefix.container.id, C2);
    assert.equal(byPrefix.pod?.metadata?.namespace, "ml");
    assert.equal((await resolveContainer(cri, "trainer")).container.id, C1);
  });

  test("an ambiguous name or prefix lists every candidate with its pod and state", async () => {
    await assert.rejects(resolveContainer(cri, "worker"), (err: Error & { exitCode?: number }) => {
      assert.equal(err.exitCode, 2);
      assert.match(err.message, /"worker" matches 2 containers; name one by a longer id prefix/);
      assert.match(err.message, /c0ffee02bbbb0 {2}worker {2}pod ml\/jobs {2}running/);
      assert.match(err.message, /d00d0003cccc0 {2}worker {2}pod dev\/jobs {2}running/);
      return true;
    });
    await assert.rejects(resolveContainer(cri, "c0ffee"), /"c0ffee" matches 2 containers/);
  });

  test("nothing matching says so and how to list containers", async () => {
    await assert.rejects(
      resolveContainer(cri, "nosuch"),
      /no container named "nosuch" and none whose id starts with it on unix:\/\/.*\(4 containers there; list them with kybernate ps --all\)/,
    );
  });

  test("pods resolve by name only when unique, else by namespace/name or id prefix", async () => {
    await assert.rejects(
      resolvePod(cri, "jobs"),
      /"jobs" matches 2 pods; name one by a longer id prefix or as namespace\/name/,
    );
    assert.equal((await resolvePod(cri, "dev/jobs")).id, POD_B);
    assert.equal((await resolvePod(cri, "aaaa")).id, POD_A);
    await assert.rejects(resolvePod(cri, "ml/nosuch"), /no pod named "ml\/nosuch"/);
  });

  test("the init pid comes from verbose ContainerStatus; a stopped container or a missing pid is explained", async () => {
    assert.equal(await initPidOf(cri, C1), 4242);
    await assert.rejects(
      initPidOf(cri, C4),
      /container e0e00004dddd0 is exited, not running: it has no processes/,
    );
    await assert.rejects(
      initPidOf(cri, C2),
      /gave no init pid .*name its processes with --pid or its cgroup with --cgroup/,
    );
  });
});

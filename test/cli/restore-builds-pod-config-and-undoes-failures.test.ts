import assert from "node:assert/strict";
import { existsSync, mkdtempSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, afterEach, before, describe, test } from "node:test";
import { status } from "@grpc/grpc-js";
import { restoreArchive, restoredPodName } from "../../src/cli/commands/restore.js";
import { podConfigFromStatus } from "../../src/cli/pod-config.js";
import { CriClient } from "../../src/cri/client.js";
import type { PodSandboxStatusResponse } from "../../src/cri/types.js";
import { type FakeRuntime, grpcError, startFakeRuntime } from "../cri/fake-cri-runtime.js";
import { buildArchive, container, POD_A, POD_B, pod } from "./fixtures.js";

const quiet = { stream: { isTTY: false, write: () => true } };
// Log folders go here, never into the host's /var/log/pods.
const LOGS = mkdtempSync(join(tmpdir(), "kyb-restore-logs-"));
const NEW_POD = "feed0000000000000000000000000000000000000000000000000000000000ff";
const NEW_CTR = "beef0000000000000000000000000000000000000000000000000000000000ee";

const podStatus = {
  status: {
    id: POD_A,
    metadata: { name: "trainer", uid: "uid-t", namespace: "ml", attempt: 1 },
    state: "SANDBOX_READY",
    createdAt: "1",
    labels: { app: "trainer" },
    annotations: { owner: "ops" },
    linux: { namespaces: { options: { network: "NODE", pid: "POD", ipc: "POD", targetId: "" } } },
    runtimeHandler: "",
  },
  info: {
    info: JSON.stringify({
      pid: 77,
      config: {
        hostname: "",
        log_directory: join(LOGS, "ml_trainer"),
        linux: { cgroup_parent: "/kubepods/pod1" },
      },
    }),
  },
  containersStatuses: [],
  timestamp: "0",
};

test("the pod config is rebuilt from PodSandboxStatus and containerd's verbose info", () => {
  const cfg = podConfigFromStatus(podStatus as unknown as PodSandboxStatusResponse);
  assert.deepEqual(cfg, {
    metadata: { name: "trainer", uid: "uid-t", namespace: "ml", attempt: 1 },
    labels: { app: "trainer" },
    annotations: { owner: "ops" },
    hostname: "",
    logDirectory: join(LOGS, "ml_trainer"),
    linux: {
      cgroupParent: "/kubepods/pod1",
      securityContext: { namespaceOptions: { network: "NODE", pid: "POD", ipc: "POD", targetId: "" } },
    },
  });
  const bare = podConfigFromStatus({ ...podStatus, info: {} } as unknown as PodSandboxStatusResponse);
  assert.equal(bare.logDirectory, "");
});

test("a new pod's name keeps the original's and adds the time", () => {
  assert.equal(
    restoredPodName("trainer", new Date("2026-03-04T05:06:07.890Z")),
    "trainer-restored-0304-050607",
  );
});

describe("restoreArchive against a fake runtime", () => {
  let rt: FakeRuntime;
  let cri: CriClient;
  let archive: string;
  let failStart: boolean;
  before(async () => {
    archive = await buildArchive();
    rt = await startFakeRuntime({
      ListPodSandbox: {
        items: [pod(POD_A, "trainer", "ml"), pod(POD_B, "stopped", "ml", "SANDBOX_NOTREADY")],
      },
      PodSandboxStatus: podStatus,
      ListContainers: (req: unknown) =>
        (req as { filter?: { podSandboxId?: string } }).filter?.podSandboxId === POD_A
          ? { containers: [container("1111", "worker", POD_A, "CONTAINER_EXITED")] }
          : { containers: [] },
      RunPodSandbox: { podSandboxId: NEW_POD },
      CreateContainer: { containerId: NEW_CTR },
      StartContainer: () => (failStart ? grpcError(status.UNKNOWN, "criu failed: type RESTORE errno 0") : {}),
      RemoveContainer: {},
      StopPodSandbox: {},
      RemovePodSandbox: {},
    });
    cri = new CriClient(rt.socket);
  });
  afterEach(() => {
    for (const k of Object.keys(rt.seen)) delete rt.seen[k];
    failStart = false;
  });
  after(async () => {
    cri.close();
    await rt.stop();
    rmSync(LOGS, { recursive: true, force: true });
  });

  test("--pod: CreateContainer gets the rebuilt pod config, the archive as image, and the original labels", async () => {
    const r = await restoreArchive({
      cri,
      logRoot: LOGS,
      archive,
      pod: "ml/trainer",
      name: "worker-2",
      progress: quiet,
    });
    assert.deepEqual([r.containerId, r.podId, r.pod, r.createdPod], [NEW_CTR, POD_A, "ml/trainer", false]);
    const req = rt.seen.CreateContainer?.[0] as {
      podSandboxId: string;
      config: { metadata: { name: string }; image: { image: string }; labels: object; annotations: object };
      sandboxConfig: {
        metadata: object;
        labels: object;
        annotations: object;
        logDirectory: string;
        linux: object;
      };
    };
    assert.equal(req.podSandboxId, POD_A);
    assert.equal(req.config.metadata.name, "worker-2");
    assert.equal(req.config.image.image, archive);
    assert.deepEqual(req.config.labels, { "io.kubernetes.container.name": "worker", tier: "gpu" });
    assert.deepEqual(req.config.annotations, { "kybernate.io/checkpoint": "true" });
    assert.deepEqual(req.sandboxConfig.metadata, {
      name: "trainer",
      uid: "uid-t",
      namespace: "ml",
      attempt: 1,
    });
    assert.deepEqual(req.sandboxConfig.annotations, { owner: "ops" });
    assert.equal(req.sandboxConfig.logDirectory, join(LOGS, "ml_trainer"));
    assert.equal((req.config as unknown as { logPath: string }).logPath, "worker-2/0.log");
    assert.ok(
      statSync(join(LOGS, "ml_trainer", "worker-2")).isDirectory(),
      "the container's log folder exists first",
    );
    assert.equal(r.logPath, join(LOGS, "ml_trainer", "worker-2", "0.log"));
    assert.deepEqual(rt.seen.StartContainer, [{ containerId: NEW_CTR }]);
    assert.equal(rt.seen.RunPodSandbox, undefined, "no pod is created with --pod");
  });

  test("--pod with the original name already taken in that pod asks for --name", async () => {
    await assert.rejects(
      restoreArchive({ cri, logRoot: LOGS, archive, pod: "trainer", progress: quiet }),
      /pod ml\/trainer already has a container named worker \(1111\): pass --name/,
    );
    assert.equal(rt.seen.CreateContainer, undefined);
  });

  test("default: a new host-network pod in the original namespace, named after the original pod", async () => {
    const now = () => new Date("2026-01-02T03:04:05Z");
    const r = await restoreArchive({ cri, logRoot: LOGS, archive, progress: quiet, now });
    assert.equal(r.createdPod, true);
    assert.equal(r.name, "worker");
    const run = rt.seen.RunPodSandbox?.[0] as {
      config: { metadata: { name: string; namespace: string }; annotations: object; linux: object };
    };
    assert.deepEqual(
      [run.config.metadata.name, run.config.metadata.namespace],
      ["trainer-restored-0102-030405", "ml"],
    );
    assert.deepEqual(run.config.annotations, { "kybernate.io/restored-from": archive });
    assert.equal(
      (run.config.linux as { securityContext: { namespaceOptions: { network: string } } }).securityContext
        .namespaceOptions.network,
      "NODE",
    );
    const create = rt.seen.CreateContainer?.[0] as { podSandboxId: string; config: { logPath: string } };
    assert.equal(create.podSandboxId, NEW_POD);
    // The kubelet's layout: <root>/<namespace>_<pod>_<uid>/<container>/0.log.
    const logDirectory = (run.config as unknown as { logDirectory: string }).logDirectory;
    const uid = (run.config.metadata as unknown as { uid: string }).uid;
    assert.equal(logDirectory, join(LOGS, `ml_trainer-restored-0102-030405_${uid}`));
    assert.equal(create.config.logPath, "worker/0.log");
    assert.ok(existsSync(join(logDirectory, "worker")));
  });

  test("a failed StartContainer removes the container and the pod it created, and says so", async () => {
    failStart = true;
    await assert.rejects(restoreArchive({ cri, logRoot: LOGS, archive, progress: quiet }), (e: Error) => {
      assert.match(
        e.message,
        /the restore of .*checkpoint\.tar into pod ml\/trainer-restored-.* failed: CRI StartContainer/,
      );
      assert.match(e.message, /criu failed: type RESTORE/);
      assert.match(
        e.message,
        /removed the container it created \(beef00000000\d\); removed the pod it created/,
      );
      return true;
    });
    assert.deepEqual(rt.seen.RemoveContainer, [{ containerId: NEW_CTR }]);
    assert.deepEqual(rt.seen.RemovePodSandbox, [{ podSandboxId: NEW_POD }]);
  });

  test("a pod that is not ready, and an archive that is not one, are refused before anything is created", async () => {
    await assert.rejects(
      restoreArchive({ cri, logRoot: LOGS, archive: `${archive}.missing`, progress: quiet }),
      /no checkpoint archive at/,
    );
    await assert.rejects(
      restoreArchive({ cri, logRoot: LOGS, archive, pod: "stopped", progress: quiet }),
      /pod ml\/stopped is not ready \(SANDBOX_NOTREADY\): restore into a running pod/,
    );
    assert.equal(rt.seen.RunPodSandbox, undefined);
    assert.equal(rt.seen.CreateContainer, undefined);
  });
});

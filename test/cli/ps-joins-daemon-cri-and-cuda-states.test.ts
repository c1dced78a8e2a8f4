import assert from "node:assert/strict";
import { mkdtempSync } from "node:fs";
import { createServer, type Server } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { psReport, renderPs } from "../../src/cli/commands/ps.js";
import { CriClient } from "../../src/cri/client.js";
import type { GpuBackend } from "../../src/gpu/backend.js";
import type { Discovery, discoverCudaProcesses } from "../../src/gpu/discovery.js";
import { ProcessState } from "../../src/gpu/types.js";
import { type FakeRuntime, startFakeRuntime } from "../cri/fake-cri-runtime.js";
import { container, POD_A, POD_B, pod } from "./fixtures.js";

const GPU = "a1a1000000000000000000000000000000000000000000000000000000000001";
const CPU = "b2b2000000000000000000000000000000000000000000000000000000000002";
const GONE = "c3c3000000000000000000000000000000000000000000000000000000000003";
const OLD = "d4d4000000000000000000000000000000000000000000000000000000000004";

const backend = { kind: "driver", description: "test", close: () => undefined } as unknown as GpuBackend;

/** CUDA processes per init pid, as discovery would report them. */
const discover = (async (o: { initPid?: number }): Promise<Discovery> => {
  if (o.initPid === 100) {
    return {
      candidates: [100, 101, 102],
      cuda: [
        { pid: 101, state: ProcessState.CHECKPOINTED },
        { pid: 102, state: ProcessState.CHECKPOINTED },
      ],
      skipped: [{ pid: 100, reason: "driver: initialization error" }],
    };
  }
  return { candidates: [200], cuda: [], skipped: [{ pid: 200, reason: "driver: initialization error" }] };
}) as typeof discoverCudaProcesses;

function fakeDaemon(path: string, data: unknown): Promise<Server> {
  const server = createServer((s) => s.once("data", () => s.end(`${JSON.stringify({ ok: true, data })}\n`)));
  return new Promise((resolve) => server.listen(path, () => resolve(server)));
}

describe("kybernate ps", () => {
  let rt: FakeRuntime;
  let cri: CriClient;
  let daemon: Server;
  let daemonSocket: string;
  before(async () => {
    rt = await startFakeRuntime({
      ListContainers: {
        containers: [
          container(GPU, "trainer", POD_A),
          container(CPU, "sidecar", POD_A),
          container(OLD, "old", POD_B, "CONTAINER_EXITED"),
        ],
      },
      ListPodSandbox: { items: [pod(POD_A, "jobs", "ml"), pod(POD_B, "misc", "dev")] },
      ContainerStatus: (req: unknown) => {
        const id = (req as { containerId: string }).containerId;
        return {
          status: { id, state: "CONTAINER_RUNNING" },
          info: { info: JSON.stringify({ pid: id === GPU ? 100 : 200 }) },
        };
      },
    });
    cri = new CriClient(rt.socket);
    daemonSocket = join(mkdtempSync(join(tmpdir(), "kybernate-cli-ps-")), "daemon.sock");
    daemon = await fakeDaemon(daemonSocket, {
      managed: [
        {
          id: GPU,
          name: "trainer",
          pod: "ml/jobs",
          reason: "NVIDIA_VISIBLE_DEVICES",
          restored: false,
          since: "2026-01-01T00:00:00Z",
        },
        {
          id: GONE,
          name: "ghost",
          pod: "ml/jobs",
          reason: "cdi",
          restored: true,
          since: "2026-01-01T00:00:00Z",
        },
      ],
      busy: [],
      last: [
        { containerId: GPU, action: "checkpoint", ok: true, at: "2026-01-01T10:11:12.345Z" },
        {
          containerId: GONE,
          action: "restore",
          ok: false,
          at: "2026-01-01T10:00:00Z",
          error: "unlock failed",
        },
      ],
    });
  });
  after(async () => {
    cri.close();
    await rt.stop();
    daemon.close();
  });

  test("with the daemon: only its containers, joined with CRI state and the CUDA states of their processes", async () => {
    const r = await psReport({ cri, daemonSocket, backend, discover });
    assert.equal(r.daemon.reachable, true);
    assert.deepEqual(
      r.rows.map((x) => [
        x.name,
        x.pod,
        x.state,
        x.managed,
        x.cuda?.map((p) => `${p.pid}:${p.state}`).join(" "),
      ]),
      [
        ["ghost", "ml/jobs", "gone", true, undefined],
        ["trainer", "ml/jobs", "running", true, "101:CHECKPOINTED 102:CHECKPOINTED"],
      ],
    );
    const text = renderPs(r);
    assert.match(text, /^CONTAINER\s+NAME\s+POD\s+STATE\s+CUDA\s+KYBERNATE\s+LAST$/m);
    assert.match(
      text,
      /a1a1000000000\s+trainer\s+ml\/jobs\s+running\s+CHECKPOINTEDx2\s+managed\s+checkpoint ok 10:11:12Z/,
    );
    assert.match(text, /c3c3000000000\s+ghost\s+ml\/jobs\s+gone\s+-\s+restored\s+restore FAILED 10:00:00Z/);
    assert.match(text, /note: c3c3000000000 last restore failed: unlock failed/);
  });

  test("--all adds what CRI lists that kybernate does not manage", async () => {
    const r = await psReport({ cri, daemonSocket, all: true, backend, discover });
    assert.deepEqual(r.rows.map((x) => x.name).sort(), ["ghost", "old", "sidecar", "trainer"]);
    assert.deepEqual(r.rows.find((x) => x.name === "sidecar")?.cuda, []);
    assert.match(renderPs(r), /b2b2000000000\s+sidecar\s+ml\/jobs\s+running\s+none\s+-\s+-/);
  });

  test("without the daemon: says so and lists every CRI container; no backend: one note for all", async () => {
    const r = await psReport({
      cri,
      daemonSocket: `${daemonSocket}.none`,
      backend: new Error("libcuda.so.1 not found"),
      discover,
    });
    assert.equal(r.daemon.reachable, false);
    assert.deepEqual(r.rows.map((x) => x.name).sort(), ["old", "sidecar", "trainer"]);
    const text = renderPs(r);
    assert.match(
      text,
      /note: kybernate daemon not reachable \(cannot reach the kybernate daemon on .*\.none.*\); listing every container CRI shows/,
    );
    assert.match(
      text,
      /note: CUDA state unknown for b2b2000000000, a1a1000000000: no GPU backend: libcuda\.so\.1 not found/,
    );
    assert.equal(text.match(/CUDA state unknown/g)?.length, 1);
    assert.doesNotThrow(() => JSON.parse(JSON.stringify(r)));
  });
});

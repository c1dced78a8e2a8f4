import assert from "node:assert/strict";
import { existsSync, mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, afterEach, before, describe, test } from "node:test";
import { status } from "@grpc/grpc-js";
import { checkpointContainer, defaultArchiveName } from "../../src/cli/commands/checkpoint.js";
import { CriClient } from "../../src/cri/client.js";
import { type FakeRuntime, grpcError, startFakeRuntime } from "../cri/fake-cri-runtime.js";
import { container, POD_A, pod } from "./fixtures.js";

const C1 = "c0ffee01aaaa0000000000000000000000000000000000000000000000000001";
const C2 = "c0ffee02bbbb0000000000000000000000000000000000000000000000000002";
const quiet = { stream: { isTTY: false, write: () => true } };

test("the default archive name is the kubelet's, with an RFC 3339 UTC time", () => {
  assert.equal(
    defaultArchiveName("jobs", "ml", "trainer", new Date("2026-02-03T04:05:06.789Z")),
    "checkpoint-jobs_ml-trainer-2026-02-03T04:05:06Z.tar",
  );
});

describe("checkpointContainer against a fake runtime", () => {
  let rt: FakeRuntime;
  let cri: CriClient;
  let dir: string;
  let reply: "write" | "nothing" | "deadline" | "criu";
  before(async () => {
    dir = mkdtempSync(join(tmpdir(), "kybernate-cli-ckpt-"));
    rt = await startFakeRuntime({
      ListContainers: {
        containers: [container(C1, "trainer", POD_A), container(C2, "done", POD_A, "CONTAINER_EXITED")],
      },
      ListPodSandbox: { items: [pod(POD_A, "jobs", "ml")] },
      CheckpointContainer: (req: unknown) => {
        const { location } = req as { location: string };
        if (reply === "deadline") return grpcError(status.DEADLINE_EXCEEDED, "context deadline exceeded");
        if (reply === "criu") {
          return grpcError(
            status.UNKNOWN,
            "checkpointing container failed: criu failed: type NOTIFY errno 0",
          );
        }
        if (reply === "write") writeFileSync(location, Buffer.alloc(3000, 1));
        return {};
      },
    });
    cri = new CriClient(rt.socket);
  });
  afterEach(() => {
    for (const k of Object.keys(rt.seen)) delete rt.seen[k];
  });
  after(async () => {
    cri.close();
    await rt.stop();
  });

  test("by name with --output: CRI CheckpointContainer with the absolute path and the timeout; reports the size", async () => {
    reply = "write";
    const output = join(dir, "a.tar");
    const r = await checkpointContainer({ cri, container: "trainer", output, timeoutS: 45, progress: quiet });
    assert.deepEqual(
      [r.containerId, r.name, r.pod, r.path, r.sizeBytes],
      [C1, "trainer", "ml/jobs", output, 3000],
    );
    assert.deepEqual(rt.seen.CheckpointContainer, [{ containerId: C1, location: output, timeout: "45" }]);
  });

  test("default output: the kubelet's name in the working directory; a file containerd did not leave is an error", async () => {
    reply = "nothing";
    const now = () => new Date("2026-02-03T04:05:06Z");
    const expected = join(process.cwd(), "checkpoint-jobs_ml-trainer-2026-02-03T04:05:06Z.tar");
    await assert.rejects(
      checkpointContainer({ cri, container: "c0ffee01", now, progress: quiet }),
      /containerd reported success but .* is not there: .*another mount namespace/,
    );
    assert.deepEqual(rt.seen.CheckpointContainer, [{ containerId: C1, location: expected, timeout: "120" }]);
  });

  test("refused before any CRI call: a stopped container, an existing output, a missing folder, a bad timeout", async () => {
    await assert.rejects(
      checkpointContainer({ cri, container: "done", output: join(dir, "b.tar"), progress: quiet }),
      /container done \(c0ffee02bbbb0\) is exited: only a running container can be checkpointed/,
    );
    const taken = join(dir, "taken.tar");
    writeFileSync(taken, "");
    await assert.rejects(
      checkpointContainer({ cri, container: "trainer", output: taken, progress: quiet }),
      /taken\.tar already exists: remove it or give another --output/,
    );
    await assert.rejects(
      checkpointContainer({ cri, container: "trainer", output: join(dir, "no", "c.tar"), progress: quiet }),
      /the folder .*\/no does not exist: create it or give another --output/,
    );
    await assert.rejects(
      checkpointContainer({
        cri,
        container: "trainer",
        output: join(dir, "d.tar"),
        timeoutS: 0,
        progress: quiet,
      }),
      /--timeout must be a positive number of seconds/,
    );
    assert.equal(rt.seen.CheckpointContainer, undefined);
  });

  test("a deadline says to raise --timeout and how to resume a container left paused", async () => {
    reply = "deadline";
    const output = join(dir, "e.tar");
    await assert.rejects(
      checkpointContainer({ cri, container: "trainer", output, timeoutS: 5, progress: quiet }),
      (e: Error) => {
        assert.match(e.message, /did not finish within --timeout 5 s: raise --timeout/);
        assert.match(e.message, new RegExp(`ctr -n k8s.io tasks resume ${C1}`));
        return true;
      },
    );
    assert.equal(existsSync(output), false);
  });

  test("a CRIU failure points to dump.log and notes a daemon that is not running", async () => {
    reply = "criu";
    const daemonSocket = join(dir, "no-daemon.sock");
    await assert.rejects(
      checkpointContainer({
        cri,
        container: "trainer",
        output: join(dir, "f.tar"),
        daemonSocket,
        progress: quiet,
      }),
      (e: Error) => {
        assert.match(
          e.message,
          /the checkpoint of trainer \(c0ffee01aaaa0\) failed: CRI CheckpointContainer .*criu failed/,
        );
        assert.match(e.message, /dump\.log/);
        assert.match(
          e.message,
          /note: cannot reach the kybernate daemon on .*no-daemon\.sock.*`kybernate run` is running/,
        );
        return true;
      },
    );
  });
});

// A failed CRI call must say which call, on which socket, with which status, and what to do about it.
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { status } from "@grpc/grpc-js";
import { CriClient, criAddress } from "../../src/cri/client.js";
import { CriError } from "../../src/cri/errors.js";
import { type FakeRuntime, grpcError, startFakeRuntime } from "./fake-cri-runtime.js";

describe("CRI call errors", () => {
  let rt: FakeRuntime;
  let cri: CriClient;
  before(async () => {
    rt = await startFakeRuntime({
      // CheckpointContainer deliberately left out: containerd 1.7 answers UNIMPLEMENTED the same way.
      StartContainer: grpcError(status.NOT_FOUND, 'container "abc" not found'),
      ExecSync: () => new Promise((resolve) => setTimeout(() => resolve({ exitCode: 0 }), 3_000)),
      Version: () => new Promise((resolve) => setTimeout(() => resolve({}), 3_000)),
    });
    cri = new CriClient(rt.socket);
  });
  after(async () => {
    cri.close();
    await rt.stop();
  });

  it("UNIMPLEMENTED checkpoint names the call, the socket and the containerd version needed", async () => {
    const err = await cri.checkpoint("abc", "/tmp/x.tar", 5).then(
      () => assert.fail("resolved"),
      (e: unknown) => e,
    );
    assert.ok(err instanceof CriError);
    assert.equal(err.call, "CheckpointContainer");
    assert.equal(err.code, status.UNIMPLEMENTED);
    assert.equal(err.address, `unix://${rt.socket}`);
    assert.match(
      err.message,
      new RegExp(
        `^CRI CheckpointContainer on unix://${rt.socket} failed: UNIMPLEMENTED: .*\\(containerd >= 2\\.0 required\\)$`,
      ),
    );
  });

  it("passes the runtime's own message through", async () => {
    await assert.rejects(cri.startContainer("abc"), {
      name: "CriError",
      message: `CRI StartContainer on unix://${rt.socket} failed: NOT_FOUND: container "abc" not found`,
    });
  });

  it("a deadline overrun names the deadline", async () => {
    const started = Date.now();
    await assert.rejects(
      cri.version({ timeoutMs: 200 }),
      /CRI Version on .* failed: DEADLINE_EXCEEDED: .*gave up after 0\.2 s/,
    );
    assert.ok(Date.now() - started < 2_000, "the deadline was not applied");
  });

  it("a missing socket is UNAVAILABLE and asks whether containerd runs there", async () => {
    const gone = new CriClient("/nonexistent/containerd.sock", { timeoutMs: 2_000 });
    try {
      await assert.rejects(
        gone.version(),
        /CRI Version on unix:\/\/\/nonexistent\/containerd\.sock failed: UNAVAILABLE: .*is containerd running and listening on unix:\/\/\/nonexistent\/containerd\.sock/,
      );
    } finally {
      gone.close();
    }
  });

  it("addresses take a bare absolute path or unix:// and refuse relative paths", () => {
    assert.equal(criAddress("/run/containerd/containerd.sock"), "unix:///run/containerd/containerd.sock");
    assert.equal(criAddress("unix:///run/x.sock"), "unix:///run/x.sock");
    assert.throws(() => criAddress("run/x.sock"), /must be an absolute path/);
  });
});

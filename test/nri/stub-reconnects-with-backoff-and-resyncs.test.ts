import assert from "node:assert/strict";
import { performance } from "node:perf_hooks";
import { describe, it } from "node:test";
import type { NriHandlers } from "../../src/nri/handlers.js";
import { FakeRuntime } from "./fake-nri-runtime.js";
import { container, pod, stubFor, within } from "./fixtures.js";

/** The least a plugin can implement: one event handler (a plugin handling none is refused). */
const minimal: NriHandlers = { removeContainer: () => undefined };

describe("NRI stub reconnection", () => {
  it("reconnects and re-syncs after the runtime closes the connection, within the first backoff step", async (t) => {
    const p = pod("p1");
    const runtime = await FakeRuntime.start({ pods: [p], containers: [container("c1", p.id)] });
    // The stub's defaults: what `kybernate run` uses against containerd.
    const synchronized: string[][] = [];
    const stub = stubFor(
      runtime,
      { ...minimal, synchronize: (_pods, containers) => void synchronized.push(containers.map((c) => c.id)) },
      { retryInitialMs: undefined, retryMaxMs: undefined },
    );
    const disconnects: string[] = [];
    stub.on("disconnected", (why) => disconnects.push(why));
    try {
      await within(3000, "registration", stub.start());
      const samples: number[] = [];
      let conn = await runtime.nextConnection();
      await conn.handshake;
      for (let round = 0; round < 5; round++) {
        synchronized.length = 0;
        const dropped = performance.now();
        conn.drop();
        const next = await runtime.nextConnection();
        const { syncedAt } = await within(2000, `re-registration ${round}`, next.handshake);
        samples.push(syncedAt - dropped);
        // The whole state of the runtime, once, on each new connection: nothing carried over from the last.
        assert.deepEqual(synchronized, [["c1"]]);
        conn = next;
      }
      t.diagnostic(`reconnect + re-sync after a drop: ${samples.map((s) => s.toFixed(0)).join(", ")} ms`);
      // Default first backoff step is 100 ms; a successful session resets it, so every round is the same.
      for (const s of samples)
        assert.ok(s >= 90 && s < 600, `re-registered ${s.toFixed(0)} ms after the drop`);
      assert.equal(disconnects.length, 5);
      assert.ok(stub.connected);
    } finally {
      await stub.stop();
      await runtime.close();
    }
  });

  it("backs off exponentially up to its cap while the runtime keeps refusing, then resets", async (t) => {
    const runtime = await FakeRuntime.start();
    const stub = stubFor(runtime, minimal, { retryInitialMs: 40, retryMaxMs: 160 });
    let refusing = true;
    // A runtime that drops every plugin at once, as containerd does when registration fails.
    const refuser = (async () => {
      while (refusing) {
        const conn = await runtime.nextConnection(5000).catch(() => undefined);
        if (conn && refusing) conn.drop();
      }
    })();
    try {
      void stub.start();
      const deadline = performance.now() + 3000;
      while (runtime.connections.length < 6 && performance.now() < deadline)
        await new Promise((r) => setTimeout(r, 10));
      refusing = false;
      const times = runtime.connections.slice(0, 6).map((c) => c.acceptedAt);
      const gaps = times.slice(1).map((at, i) => at - (times[i] ?? at));
      t.diagnostic(`gaps between attempts: ${gaps.map((g) => g.toFixed(0)).join(", ")} ms`);
      assert.equal(gaps.length, 5, "fewer than 6 attempts in 3 s");
      const expected = [40, 80, 160, 160, 160];
      gaps.forEach((gap, i) => {
        const want = expected[i] ?? 0;
        assert.ok(
          gap >= want - 5 && gap < want + 120,
          `gap ${i}: ${gap.toFixed(0)} ms, expected about ${want} ms`,
        );
      });
      await refuser;
      await within(
        2000,
        "registration once the runtime accepts",
        new Promise((r) => stub.once("registered", r)),
      );
    } finally {
      refusing = false;
      await stub.stop();
      await runtime.close();
    }
  });

  it("gives up a registration the runtime never configures, and retries on a new connection", async (t) => {
    const runtime = await FakeRuntime.start({ configure: false });
    const stub = stubFor(runtime, minimal, { registrationTimeoutMs: 300, retryInitialMs: 50 });
    try {
      void stub.start();
      const first = await runtime.nextConnection();
      await first.registered;
      const started = first.acceptedAt;
      await within(2000, "the stub closing the stalled registration", first.closed);
      const closedAfter = performance.now() - started;
      const second = await within(2000, "a second attempt", runtime.nextConnection());
      assert.deepEqual(await second.registered, { pluginName: "kybernate", pluginIdx: "10", NRIVersion: "" });
      t.diagnostic(
        `stalled registration closed after ${closedAfter.toFixed(0)} ms, retried ${(second.acceptedAt - started).toFixed(0)} ms after the first dial`,
      );
      assert.ok(closedAfter >= 280 && closedAfter < 800, `closed after ${closedAfter.toFixed(0)} ms`);
      assert.equal(stub.connected, false);
    } finally {
      await stub.stop();
      await runtime.close();
    }
  });

  it("stop() during a registration the runtime never completes returns at once", async () => {
    const runtime = await FakeRuntime.start({ configure: false });
    const stub = stubFor(runtime, minimal, { registrationTimeoutMs: 5000 });
    try {
      void stub.start();
      const conn = await runtime.nextConnection();
      await conn.registered;
      const started = performance.now();
      await within(1000, "stop() while registering", stub.stop());
      assert.ok(
        performance.now() - started < 200,
        `stop() took ${(performance.now() - started).toFixed(0)} ms`,
      );
      await within(1000, "the connection closing", conn.closed);
    } finally {
      await runtime.close();
    }
  });

  it("stop() right after the runtime accepted, before registration finished, does not hang", async () => {
    const runtime = await FakeRuntime.start();
    const stub = stubFor(runtime, minimal);
    try {
      void stub.start();
      await runtime.nextConnection();
      await within(1000, "stop() while registering", stub.stop());
      assert.equal(stub.connected, false);
    } finally {
      await runtime.close();
    }
  });

  it("retries while no runtime listens yet, and stop() ends the loop at once", async () => {
    const runtime = await FakeRuntime.start();
    const missing = `${runtime.socketPath}.absent`;
    const stub = stubFor(runtime, minimal, { socketPath: missing, retryInitialMs: 1000, retryMaxMs: 1000 });
    void stub.start();
    await new Promise((r) => setTimeout(r, 50));
    const started = performance.now();
    await stub.stop();
    const took = performance.now() - started;
    assert.ok(took < 200, `stop() took ${took.toFixed(0)} ms while waiting to retry`);
    await runtime.close();
  });
});

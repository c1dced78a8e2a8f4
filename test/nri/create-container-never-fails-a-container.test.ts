import assert from "node:assert/strict";
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { performance } from "node:perf_hooks";
import { after, before, describe, it } from "node:test";
import { DeadlineExceeded } from "../../src/base/deadline.js";
import { version } from "../../src/base/version.js";
import type { NriContext, NriHandlers } from "../../src/nri/handlers.js";
import { CRIU_CONFIG_ANNOTATION, VERSION_ANNOTATION } from "../../src/plugin/kybernate-plugin.js";
import { FakeRuntime } from "./fake-nri-runtime.js";
import { captureLog, container, kybernateFor, pod, stubFor, within } from "./fixtures.js";

describe("CreateContainer with kybernate's handlers", () => {
  let runtime: FakeRuntime;
  let plugin: ReturnType<typeof kybernateFor>;
  let stub: ReturnType<typeof stubFor>;

  before(async () => {
    runtime = await FakeRuntime.start();
    const { log } = captureLog();
    plugin = kybernateFor("kybernate.io/test=selected", log);
    stub = stubFor(runtime, plugin.handlers, { log });
    await within(3000, "registration", stub.start());
  });
  after(async () => {
    await stub.stop();
    await runtime.close();
    plugin.cleanup();
  });

  it("a selected container gets the version annotation", async () => {
    const conn = runtime.connections[0];
    assert.ok(conn);
    const p = pod("sel", { labels: { "kybernate.io/test": "selected" } });
    const response = await conn.createContainer(p, container("sel-c", p.id));
    assert.equal(response.adjust?.annotations[VERSION_ANNOTATION], version);
    const criuConfig = response.adjust?.annotations[CRIU_CONFIG_ANNOTATION];
    assert.ok(criuConfig, `no ${CRIU_CONFIG_ANNOTATION} annotation`);
    assert.ok(criuConfig.startsWith(plugin.stateDir), `${CRIU_CONFIG_ANNOTATION}=${criuConfig}`);
    assert.ok(existsSync(criuConfig), `${criuConfig} was not written`);
    assert.match(readFileSync(criuConfig, "utf8"), /^action-script /m);
    assert.deepEqual(response.update, []);
    assert.deepEqual(response.evict, []);
  });

  it("a container annotated rather than labelled is selected too", async () => {
    const conn = runtime.connections[0];
    assert.ok(conn);
    const p = pod("sel2");
    const c = container("sel2-c", p.id, { annotations: { "kybernate.io/test": "selected" } });
    const response = await conn.createContainer(p, c);
    assert.equal(response.adjust?.annotations[VERSION_ANNOTATION], version);
  });

  it("an unselected container gets an empty adjustment", async () => {
    const conn = runtime.connections[0];
    assert.ok(conn);
    for (const [name, labels] of [
      ["other-value", { "kybernate.io/test": "other" }],
      ["no-labels", {}],
    ] as const) {
      const p = pod(name, { labels });
      const response = await conn.createContainer(p, container(`${name}-c`, p.id));
      assert.equal(response.adjust, null, `${name}: ${JSON.stringify(response.adjust)}`);
      assert.equal(existsSync(join(plugin.stateDir, `${name}-c`)), false);
    }
  });
});

describe("CreateContainer when the handler misbehaves", () => {
  const REQUEST_TIMEOUT_MS = 400;
  let runtime: FakeRuntime;
  let behaviour: "throw" | "reject" | "slow" | "ok" = "ok";
  const capture = captureLog();
  let lastCtx: NriContext | undefined;
  let remainingAtStart = 0;
  const handlers: NriHandlers = {
    createContainer: async (_pod, _container, ctx) => {
      lastCtx = ctx;
      remainingAtStart = ctx.deadline.remaining();
      if (behaviour === "throw") throw new Error("handler bug");
      if (behaviour === "reject") return Promise.reject(new Error("async handler bug"));
      if (behaviour === "slow") await new Promise((r) => setTimeout(r, REQUEST_TIMEOUT_MS * 3));
      return { annotations: { late: "yes" } };
    },
  };
  let stub: ReturnType<typeof stubFor>;

  before(async () => {
    runtime = await FakeRuntime.start({ requestTimeoutMs: REQUEST_TIMEOUT_MS });
    stub = stubFor(runtime, handlers, { log: capture.log });
    await within(3000, "registration", stub.start());
  });
  after(async () => {
    await stub.stop();
    await runtime.close();
  });

  for (const b of ["throw", "reject"] as const) {
    it(`a handler that ${b === "throw" ? "throws" : "rejects"} yields an empty adjustment, never an error status`, async () => {
      behaviour = b;
      const conn = runtime.connections[0];
      assert.ok(conn);
      const p = pod(`p-${b}`);
      const response = await conn.createContainer(p, container(`c-${b}`, p.id));
      assert.equal(response.adjust, null);
      const logged = capture.lines.find((l) => l.id === `c-${b}`);
      assert.equal(logged?.msg, "CreateContainer handler failed; no adjustment");
      assert.equal(logged?.level, 50);
    });
  }

  it("a handler slower than the request timeout yields an empty adjustment in time", async () => {
    behaviour = "slow";
    const conn = runtime.connections[0];
    assert.ok(conn);
    const p = pod("p-slow");
    const started = performance.now();
    // The fake runtime calls with the request timeout as its deadline, as containerd does: a late answer
    // would reject here with DEADLINE_EXCEEDED.
    const response = await conn.createContainer(p, container("c-slow", p.id));
    const tookMs = performance.now() - started;
    assert.equal(response.adjust, null);
    assert.ok(tookMs < REQUEST_TIMEOUT_MS, `answered after ${tookMs.toFixed(0)} ms`);
    assert.ok(tookMs >= REQUEST_TIMEOUT_MS * 0.5, `answered after ${tookMs.toFixed(0)} ms: too early`);
    assert.ok(
      capture.lines.some(
        (l) => l.id === "c-slow" && l.msg === "CreateContainer handler too slow; no adjustment",
      ),
    );
    // Still registered: the runtime did not drop the plugin.
    behaviour = "ok";
    const next = await conn.createContainer(p, container("c-after", p.id));
    assert.deepEqual(next.adjust?.annotations, { late: "yes" });
    assert.ok(stub.connected);
  });

  it("the handler sees the guard's deadline, and its signal aborts when the guard gives up", async () => {
    const conn = runtime.connections[0];
    assert.ok(conn);
    const p = pod("p-ctx");
    behaviour = "ok";
    await conn.createContainer(p, container("c-ctx-ok", p.id));
    // 75 % of the request timeout, less what the call spent in transit.
    assert.ok(
      remainingAtStart > REQUEST_TIMEOUT_MS * 0.5 && remainingAtStart <= REQUEST_TIMEOUT_MS * 0.75,
      `the handler was given ${remainingAtStart} ms`,
    );
    assert.equal(lastCtx?.signal.aborted, false);
    behaviour = "slow";
    await conn.createContainer(p, container("c-ctx-slow", p.id));
    const ctx = lastCtx;
    assert.equal(ctx?.signal, ctx?.deadline.signal);
    assert.equal(ctx?.signal.aborted, true, "the guard answered, but the handler's signal did not abort");
    assert.ok(ctx?.signal.reason instanceof DeadlineExceeded, String(ctx?.signal.reason));
    behaviour = "ok";
  });
});

import assert from "node:assert/strict";
import { after, before, beforeEach, describe, it } from "node:test";
import { encode, PLUGIN_SERVICE } from "../../src/nri/codec.js";
import { EVENT_ROUTES } from "../../src/nri/events.js";
import type { NriContext, NriHandlers } from "../../src/nri/handlers.js";
import type { NriStub } from "../../src/nri/stub.js";
import { type Container, NriEvent, type PodSandbox } from "../../src/nri/types.js";
import { Code, TtrpcError } from "../../src/wire/ttrpc/status.js";
import { FakeRuntime, type PluginConnection } from "./fake-nri-runtime.js";
import { container, pod, stubFor, within } from "./fixtures.js";

/** Events NRI <= v0.11 sends as StateChange and v0.12 as an RPC of the same name (request/response types). */
const STATE_CHANGE_EVENTS: [NriEvent, string][] = [
  [NriEvent.RunPodSandbox, "RunPodSandbox"],
  [NriEvent.StopPodSandbox, "StopPodSandbox"],
  [NriEvent.RemovePodSandbox, "RemovePodSandbox"],
  [NriEvent.PostCreateContainer, "PostCreateContainer"],
  [NriEvent.StartContainer, "StartContainer"],
  [NriEvent.PostStartContainer, "PostStartContainer"],
  [NriEvent.PostUpdateContainer, "PostUpdateContainer"],
  [NriEvent.RemoveContainer, "RemoveContainer"],
];
/** Always dedicated RPCs, in every NRI version. */
const RPC_ONLY_EVENTS: [NriEvent, string][] = [
  [NriEvent.UpdateContainer, "UpdateContainer"],
  [NriEvent.StopContainer, "StopContainer"],
];
const POD_EVENTS = new Set([NriEvent.RunPodSandbox, NriEvent.StopPodSandbox, NriEvent.RemovePodSandbox]);

interface Seen {
  event: NriEvent;
  pod: PodSandbox;
  container?: Container;
  ctx: NriContext;
}

/** One handler per event, each recording what it got: implementing them all subscribes every event. */
function recordingHandlers(record: (seen: Seen) => void): NriHandlers {
  const handlers: NriHandlers = {};
  for (const route of EVENT_ROUTES) {
    if (route.kind === "pod") {
      handlers[route.handler] = (pod, ctx) => record({ event: route.event, pod, ctx });
    } else {
      handlers[route.handler] = (pod, container, ctx) => record({ event: route.event, pod, container, ctx });
    }
  }
  return handlers;
}

describe("NRI events", () => {
  let runtime: FakeRuntime;
  let stub: NriStub;
  let conn: PluginConnection;
  const seen: Seen[] = [];
  let failNext = false;
  let subscribed = 0;

  before(async () => {
    runtime = await FakeRuntime.start();
    stub = stubFor(
      runtime,
      recordingHandlers((e) => {
        seen.push(e);
        if (failNext) {
          failNext = false;
          throw new Error("handler bug");
        }
      }),
    );
    await within(3000, "registration", stub.start());
    conn = await runtime.nextConnection();
    subscribed = (await conn.handshake).events;
  });
  after(async () => {
    await stub.stop();
    await runtime.close();
  });
  beforeEach(() => {
    seen.length = 0;
  });

  async function dedicated(name: string, request: object): Promise<void> {
    await conn.call(name, `${name}Request`, request, `${name}Response`);
  }

  for (const [event, name] of STATE_CHANGE_EVENTS) {
    const isPod = POD_EVENTS.has(event);
    for (const via of ["StateChange", name] as const) {
      it(`${name} via ${via === "StateChange" ? "StateChange (NRI <= v0.11)" : "its own RPC (NRI v0.12)"}`, async () => {
        const p = pod("pe");
        const c = isPod ? undefined : container(`ce-${name}`, p.id);
        if (via === "StateChange") await conn.stateChange(event, p, c);
        else await dedicated(name, c ? { pod: p, container: c } : { pod: p });
        assert.equal(seen.length, 1);
        assert.equal(seen[0]?.event, event);
        assert.equal(seen[0]?.pod.id, p.id);
        assert.equal(seen[0]?.container?.id, c?.id);
      });
    }
  }

  for (const [event, name] of RPC_ONLY_EVENTS) {
    it(`${name} via its own RPC`, async () => {
      const p = pod("pu");
      const c = container(`cu-${name}`, p.id);
      await dedicated(name, { pod: p, container: c });
      assert.deepEqual(
        seen.map((e) => [e.event, e.pod.id, e.container?.id]),
        [[event, p.id, c.id]],
      );
    });
  }

  it("a handler for every event subscribes every event but CreateContainer, inside 0x7ff", () => {
    assert.equal(subscribed, 0x7ff & ~(1 << (NriEvent.CreateContainer - 1)));
  });

  it("each handler gets the call's context: the runtime's deadline and its signal", async () => {
    const before = Date.now();
    await conn.stateChange(NriEvent.StartContainer, pod("pc"), container("cc", "pc"));
    await dedicated("StopContainer", { pod: pod("pc"), container: container("cc", "pc") });
    assert.equal(seen.length, 2);
    for (const { ctx } of seen) {
      // The fake runtime calls with its 2 s request timeout, as containerd does.
      const at = ctx.deadline.at;
      assert.ok(at > before && at <= Date.now() + 2000, `deadline ${at - before} ms after the call`);
      assert.equal(ctx.signal, ctx.deadline.signal);
      // Done once the call is answered: the deadline's timer is gone, its signal never fired.
      assert.equal(ctx.signal.aborted, false);
    }
  });

  it("a throwing event handler still answers OK (an error would only get the plugin dropped)", async () => {
    failNext = true;
    await conn.stateChange(NriEvent.StartContainer, pod("pf"), container("cf", "pf"));
    await dedicated("PostStartContainer", { pod: pod("pf"), container: container("cf", "pf") });
    assert.equal(seen.length, 2);
  });

  it("answers UNIMPLEMENTED to methods and services it does not serve", async () => {
    const cases: [string, string][] = [
      [PLUGIN_SERVICE, "ValidateContainerAdjustment"],
      [PLUGIN_SERVICE, "UpdatePodSandbox"],
      [PLUGIN_SERVICE, "NoSuchMethod"],
      ["nri.pkg.api.v1alpha1.NoSuchService", "Configure"],
    ];
    for (const [service, method] of cases) {
      await assert.rejects(conn.callRaw(method, encode("Empty", {}), service), (error: unknown) => {
        assert.ok(error instanceof TtrpcError, String(error));
        assert.equal(error.code, Code.UNIMPLEMENTED, `${service}/${method}: ${error.message}`);
        return true;
      });
    }
    // The connection survives: v0.12 falls back to StateChange right after an UNIMPLEMENTED.
    await conn.stateChange(NriEvent.RunPodSandbox, pod("after"));
    assert.equal(seen.at(-1)?.pod.id, "after");
    assert.ok(stub.connected);
  });
});

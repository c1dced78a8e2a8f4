import assert from "node:assert/strict";
import { after, before, beforeEach, describe, it } from "node:test";
import { encode, PLUGIN_SERVICE } from "../../src/nri/codec.js";
import type { NriStub } from "../../src/nri/stub.js";
import type { LifecycleEvent } from "../../src/nri/types.js";
import { NriEvent } from "../../src/nri/types.js";
import { Code, TtrpcError } from "../../src/wire/index.js";
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

describe("NRI events", () => {
  let runtime: FakeRuntime;
  let stub: NriStub;
  let conn: PluginConnection;
  const seen: LifecycleEvent[] = [];
  let failNext = false;

  before(async () => {
    runtime = await FakeRuntime.start();
    stub = stubFor(runtime, {
      events: [],
      event: (e) => {
        seen.push(e);
        if (failNext) {
          failNext = false;
          throw new Error("handler bug");
        }
      },
    });
    await within(3000, "registration", stub.start());
    conn = await runtime.nextConnection();
    await conn.handshake;
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

  it("keeps the inventory: pods and containers come and go with the events", async () => {
    const p = pod("inv");
    const other = pod("inv-other");
    const c1 = container("inv-c1", p.id);
    const c2 = container("inv-c2", p.id);
    const c3 = container("inv-c3", other.id);
    await conn.stateChange(NriEvent.RunPodSandbox, p);
    await dedicated("RunPodSandbox", { pod: other });
    await conn.createContainer(p, c1);
    await conn.createContainer(p, c2);
    await conn.createContainer(other, c3);
    assert.ok(stub.inventory.pods.has(p.id) && stub.inventory.pods.has(other.id));
    assert.deepEqual(
      ["inv-c1", "inv-c2", "inv-c3"].map((id) => stub.inventory.containers.has(id)),
      [true, true, true],
    );
    await dedicated("RemoveContainer", { pod: p, container: c1 });
    assert.equal(stub.inventory.containers.has("inv-c1"), false);
    await conn.stateChange(NriEvent.RemovePodSandbox, p);
    assert.equal(stub.inventory.pods.has(p.id), false);
    assert.equal(stub.inventory.containers.has("inv-c2"), false, "a removed pod's containers go with it");
    assert.equal(stub.inventory.containers.has("inv-c3"), true);
    await dedicated("RemovePodSandbox", { pod: other });
    assert.equal(stub.inventory.containers.has("inv-c3"), false);
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

import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { eventMask } from "../../src/nri/events.js";
import { NriStub } from "../../src/nri/stub.js";
import { NriEvent } from "../../src/nri/types.js";
import { FakeRuntime } from "./fake-nri-runtime.js";
import { captureLog, kybernateFor, stubFor, within } from "./fixtures.js";

/** containerd 2.0/2.1 (NRI v0.8) fail Configure for any bit above REMOVE_CONTAINER. */
const VALID_ON_ALL_RUNTIMES = 0x7ff;

describe("NRI stub registration", () => {
  let runtime: FakeRuntime;

  before(async () => {
    runtime = await FakeRuntime.start({ runtimeName: "containerd", runtimeVersion: "v2.1.9" });
  });
  after(() => runtime.close());

  it("registers as kybernate with its index, then answers Configure with kybernate's event mask", async () => {
    const { log, lines } = captureLog();
    const plugin = kybernateFor("a=b", log);
    const stub = stubFor(runtime, plugin.handlers, { pluginIndex: "42", log });
    try {
      const registered = new Promise<string>((resolve) => stub.once("registered", resolve));
      await within(3000, "first registration", stub.start());
      const conn = await runtime.nextConnection();
      assert.deepEqual(await conn.registered, { pluginName: "kybernate", pluginIdx: "42", NRIVersion: "" });
      const { events } = await conn.handshake;
      // What kybernate implements, nothing more: pod events would be two more calls per pod under the NRI lock.
      const expected = (1 << (NriEvent.CreateContainer - 1)) | (1 << (NriEvent.RemoveContainer - 1));
      assert.equal(events, expected, `mask 0x${events.toString(16)}`);
      assert.equal(events & ~VALID_ON_ALL_RUNTIMES, 0);
      assert.equal(await registered, "containerd v2.1.9");
      assert.ok(stub.connected);
      assert.ok(lines.some((l) => l.msg === "registered with runtime"));
    } finally {
      await stub.stop();
      plugin.cleanup();
    }
  });

  it("subscribes to CreateContainer alone when a plugin only sets createContainer", async () => {
    const stub = stubFor(runtime, { createContainer: () => undefined });
    try {
      await within(3000, "registration", stub.start());
      const conn = await runtime.nextConnection();
      assert.equal((await conn.handshake).events, 1 << (NriEvent.CreateContainer - 1));
    } finally {
      await stub.stop();
    }
  });

  it("subscribes exactly the events whose handler is implemented", async () => {
    const stub = stubFor(runtime, {
      removePodSandbox: () => undefined,
      startContainer: () => undefined,
      stopContainer: () => undefined,
      synchronize: () => undefined,
    });
    try {
      await within(3000, "registration", stub.start());
      const conn = await runtime.nextConnection();
      const expected =
        (1 << (NriEvent.RemovePodSandbox - 1)) |
        (1 << (NriEvent.StartContainer - 1)) |
        (1 << (NriEvent.StopContainer - 1));
      assert.equal((await conn.handshake).events, expected);
    } finally {
      await stub.stop();
    }
  });

  it("refuses handlers that handle no event: containerd would read the empty mask 0 as every event", () => {
    assert.throws(
      () => stubFor(runtime, { synchronize: () => undefined, configure: () => undefined }),
      /subscribe to no event \(a mask of 0 would make containerd send every event\)/,
    );
  });

  it("keeps every possible subscription inside 0x7ff and refuses events the oldest runtime rejects", () => {
    const all = Object.values(NriEvent).filter(
      (e): e is NriEvent => typeof e === "number" && e !== NriEvent.Unknown,
    );
    assert.equal(eventMask(all), VALID_ON_ALL_RUNTIMES);
    for (const bad of [0, 12, 14]) {
      assert.throws(
        () => eventMask([bad]),
        /NRI event \d+ cannot be subscribed: containerd 2\.0\/2\.1 accept events 1\.\.11/,
      );
    }
  });

  it("refuses a plugin index that is not two digits, naming the value", () => {
    for (const index of ["1", "100", "ab", ""]) {
      assert.throws(
        () =>
          new NriStub(
            { removeContainer: () => undefined },
            {
              socketPath: runtime.socketPath,
              pluginName: "kybernate",
              pluginIndex: index,
              log: captureLog().log,
            },
          ),
        new RegExp(`plugin index must be two digits "00"–"99", got "${index}"`),
      );
    }
  });
});

import assert from "node:assert/strict";
import type { Socket } from "node:net";
import { afterEach, beforeEach, describe, it } from "node:test";
import { Multiplexer } from "../../src/wire/mux/multiplexer.js";
import { TtrpcClient } from "../../src/wire/ttrpc/client.js";
import { TtrpcServer } from "../../src/wire/ttrpc/server.js";
import { Code, TtrpcError } from "../../src/wire/ttrpc/status.js";
import { str, text, unixSocketPair, within } from "./helpers.js";

type Pair = Awaited<ReturnType<typeof unixSocketPair>>;

/**
 * Checks the bytes one side sent as a Go NRI peer would read them: per connection, a frame that starts a
 * ttrpc message is at most 4096 bytes, and no frame holds bytes of two messages.
 */
function recordFrames(socket: Socket): () => string[] {
  const chunks: Buffer[] = [];
  socket.on("data", (c: Buffer) => chunks.push(c));
  return () => {
    const wire = Buffer.concat(chunks);
    const problems: string[] = [];
    const remaining = new Map<number, number>(); // connID → bytes left of the current message
    let at = 0;
    while (at + 8 <= wire.length) {
      const connId = wire.readUInt32BE(at);
      const length = wire.readUInt32BE(at + 4);
      const payload = wire.subarray(at + 8, at + 8 + length);
      at += 8 + length;
      const left = remaining.get(connId) ?? 0;
      if (left === 0) {
        if (length > 4096) problems.push(`conn ${connId}: first frame of a message is ${length} bytes`);
        const messageLength = 10 + payload.readUInt32BE(0);
        if (length > messageLength)
          problems.push(`conn ${connId}: frame of ${length} bytes holds two messages`);
        remaining.set(connId, messageLength - length);
      } else {
        if (length > left)
          problems.push(`conn ${connId}: frame of ${length} bytes runs past its message (${left} left)`);
        remaining.set(connId, left - length);
      }
    }
    if (at !== wire.length) problems.push(`${wire.length - at} trailing bytes`);
    return problems;
  };
}

describe("ttrpc over the NRI multiplexer over a real unix socket", () => {
  let pair: Pair;
  let pluginMux: Multiplexer;
  let runtimeMux: Multiplexer;
  let fromPlugin: () => string[];
  let fromRuntime: () => string[];
  let runtimeClient: TtrpcClient; // containerd calling the plugin (conn 1)
  let pluginClient: TtrpcClient; // the plugin calling containerd (conn 2)
  let markHung: () => void;
  let hung: Promise<void>;

  beforeEach(async () => {
    pair = await unixSocketPair();
    hung = new Promise((resolve) => {
      markHung = resolve;
    });
    fromRuntime = recordFrames(pair.a); // what the plugin side (a) received
    fromPlugin = recordFrames(pair.b);
    pluginMux = new Multiplexer(pair.a);
    runtimeMux = new Multiplexer(pair.b);

    new TtrpcServer()
      .register("nri.pkg.api.v1alpha1.Plugin", {
        Echo: (payload) => payload,
        Sized: (payload) => new Uint8Array(Number(str(payload))).fill(0x5a),
      })
      .serve(pluginMux.open(1));
    pluginClient = new TtrpcClient(pluginMux.open(2));

    new TtrpcServer()
      .register("nri.pkg.api.v1alpha1.Runtime", {
        RegisterPlugin: (payload) => text(`registered ${str(payload)}`),
        Hang: () => {
          markHung();
          return new Promise<Uint8Array>(() => {});
        },
        Fail: () => {
          throw new TtrpcError(Code.FAILED_PRECONDITION, "plugin index 42 already in use");
        },
      })
      .serve(runtimeMux.open(2));
    runtimeClient = new TtrpcClient(runtimeMux.open(1));
  });
  afterEach(() => {
    pluginMux.close();
    runtimeMux.close();
    pair.close();
  });

  it("calls both ways on one socket", async () => {
    const registered = await within(
      3000,
      "RegisterPlugin",
      pluginClient.call("nri.pkg.api.v1alpha1.Runtime", "RegisterPlugin", text("kybernate"), {
        timeoutMs: 5000,
      }),
    );
    assert.equal(str(registered), "registered kybernate");
    const echoed = await within(
      3000,
      "Echo",
      runtimeClient.call("nri.pkg.api.v1alpha1.Plugin", "Echo", text("configure")),
    );
    assert.equal(str(echoed), "configure");
    await assert.rejects(
      pluginClient.call("nri.pkg.api.v1alpha1.Runtime", "Fail", text("")),
      (err: unknown) =>
        err instanceof TtrpcError && err.code === Code.FAILED_PRECONDITION && /index 42/.test(err.message),
    );
    await assert.rejects(
      runtimeClient.call("nri.pkg.api.v1alpha1.Plugin", "StopContainer", text("")),
      (err: unknown) => err instanceof TtrpcError && err.code === Code.UNIMPLEMENTED,
    );
  });

  const sizes = [0, 1, 4000, 4070, 4071, 4072, 4096, 100_000, 1 << 20, (4 << 20) - 64];
  it(`carries payloads of ${sizes.join(", ")} bytes both ways, every frame readable by the Go peer`, async () => {
    const results = await within(
      20_000,
      "sized calls",
      Promise.all(
        sizes.flatMap((size) => [
          runtimeClient.call("nri.pkg.api.v1alpha1.Plugin", "Echo", new Uint8Array(size).fill(size % 255)),
          runtimeClient.call("nri.pkg.api.v1alpha1.Plugin", "Sized", text(String(size))),
        ]),
      ),
    );
    sizes.forEach((size, i) => {
      const echoed = results[2 * i] as Uint8Array;
      const sized = results[2 * i + 1] as Uint8Array;
      assert.equal(echoed.length, size);
      assert.ok(echoed.every((b) => b === size % 255));
      assert.equal(sized.length, size);
    });
    assert.deepEqual(fromPlugin(), []);
    assert.deepEqual(fromRuntime(), []);
  });

  for (const how of ["end", "destroy"] as const) {
    it(`fails pending calls with a clear reason when the runtime's socket goes away (${how})`, async () => {
      const pending = pluginClient.call("nri.pkg.api.v1alpha1.Runtime", "Hang", text(""), {
        timeoutMs: 5000,
      });
      await within(3000, "the request to reach the runtime", hung);
      pair.b[how]();
      await assert.rejects(within(3000, "the pending call to fail", pending), (err: unknown) => {
        assert.ok(err instanceof TtrpcError && err.code === Code.UNAVAILABLE, String(err));
        assert.match(
          err.message,
          /NRI multiplexer: the peer closed the socket.*while waiting for nri\.pkg\.api\.v1alpha1\.Runtime\/Hang/,
        );
        return true;
      });
      const reason = await within(3000, "the plugin mux to close", pluginMux.closed);
      assert.match(reason.message, /NRI multiplexer: the peer closed the socket/);
      await assert.rejects(
        pluginClient.call("nri.pkg.api.v1alpha1.Runtime", "RegisterPlugin", text("")),
        (err: unknown) =>
          err instanceof TtrpcError &&
          err.code === Code.UNAVAILABLE &&
          /cannot call .*NRI multiplexer: the peer closed the socket/.test(err.message),
      );
    });
  }
});

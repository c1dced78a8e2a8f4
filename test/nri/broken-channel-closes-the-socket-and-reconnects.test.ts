// Each NRI mux connection carries one ttrpc channel. When either channel closes (here: a header no ttrpc peer
// sends), the plugin must give up the whole socket and reconnect; left up, it would stay registered with
// containerd while answering nothing, and every container would wait out containerd's request timeout.
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { FakeRuntime } from "./fake-nri-runtime.js";
import { container, pod, stubFor, within } from "./fixtures.js";

/** A ttrpc header of unknown type announcing 4 GiB: the receiving channel closes instead of skipping it. */
function notTtrpcHeader(): Buffer {
  const header = Buffer.alloc(10);
  header.writeUInt32BE(0xffff_ffff, 0);
  header.writeUInt32BE(1, 4);
  header.writeUInt8(0xff, 8);
  return header;
}

describe("a broken ttrpc channel on the NRI socket", () => {
  const sides = [
    { connId: 1, what: "the Plugin service's connection (requests from the runtime)" },
    { connId: 2, what: "the Runtime service's connection (answers to the plugin)" },
  ] as const;
  for (const { connId, what } of sides) {
    it(`on ${what}: the plugin closes the socket, reconnects and registers again`, async () => {
      const runtime = await FakeRuntime.start();
      const stub = stubFor(runtime, {
        createContainer: () => ({ annotations: { "kybernate.io/answered": "yes" } }),
      });
      const disconnects: string[] = [];
      stub.on("disconnected", (why) => disconnects.push(why));
      try {
        await within(3000, "registration", stub.start());
        const first = await runtime.nextConnection();
        await first.handshake;
        first.writeRaw(connId, notTtrpcHeader());
        await within(2000, "the plugin closing the socket", first.closed);
        const second = await within(2000, "a new connection", runtime.nextConnection());
        await within(2000, "re-registration", second.handshake);
        const p = pod("after");
        const response = await second.createContainer(p, container("after-c", p.id));
        assert.deepEqual(response.adjust?.annotations, { "kybernate.io/answered": "yes" });
        assert.equal(disconnects.length, 1);
        assert.match(disconnects[0] ?? "", /header that is not ttrpc/);
        assert.ok(stub.connected);
      } finally {
        await stub.stop();
        await runtime.close();
      }
    });
  }
});

import assert from "node:assert/strict";
import { once } from "node:events";
import { afterEach, beforeEach, describe, it } from "node:test";
import { encodeFrame, frameMessage } from "../../src/wire/mux/frame.js";
import { Multiplexer, type MuxConnection } from "../../src/wire/mux/multiplexer.js";
import { sleep, unixSocketPair, within } from "./helpers.js";

type Pair = Awaited<ReturnType<typeof unixSocketPair>>;

function collect(conn: MuxConnection): { bytes(): Buffer } {
  const chunks: Buffer[] = [];
  conn.on("data", (c: Buffer) => chunks.push(c));
  return { bytes: () => Buffer.concat(chunks) };
}

async function waitFor(what: string, cond: () => boolean): Promise<void> {
  await within(
    3000,
    what,
    (async () => {
      while (!cond()) await sleep(2);
    })(),
  );
}

describe("Multiplexer over a unix socket", () => {
  let pair: Pair;
  let mux: Multiplexer;
  beforeEach(async () => {
    pair = await unixSocketPair();
    mux = new Multiplexer(pair.a);
  });
  afterEach(() => {
    mux.close();
    pair.close();
  });

  it("reassembles each connection's byte stream from interleaved frames", async () => {
    const one = collect(mux.open(1));
    const two = collect(mux.open(2));
    pair.b.write(
      Buffer.concat([
        encodeFrame(1, Buffer.from("hel")),
        encodeFrame(2, Buffer.from("wor")),
        encodeFrame(1, Buffer.from("lo")),
        encodeFrame(2, Buffer.from("ld")),
      ]),
    );
    await waitFor(
      "both connections to receive their bytes",
      () => one.bytes().length === 5 && two.bytes().length === 5,
    );
    assert.equal(one.bytes().toString(), "hello");
    assert.equal(two.bytes().toString(), "world");
  });

  it("drops frames for connection ids not open here and keeps going", async () => {
    const one = collect(mux.open(1));
    pair.b.write(
      Buffer.concat([
        encodeFrame(0, Buffer.from("reserved")),
        encodeFrame(3, Buffer.alloc(10_000, 1)),
        encodeFrame(1, Buffer.from("kept")),
      ]),
    );
    await waitFor("connection 1 data", () => one.bytes().length === 4);
    assert.equal(one.bytes().toString(), "kept");
    assert.equal(mux.isClosed, false);
  });

  it("writes each write() as one message under the first-frame rule, byte for byte", async () => {
    const received: Buffer[] = [];
    pair.b.on("data", (c: Buffer) => received.push(c));
    const conn = mux.open(2);
    const small = Buffer.alloc(100, 7);
    const big = Buffer.alloc(10_000, 9);
    conn.write(small);
    conn.write(big);
    const expected = Buffer.concat([frameMessage(2, small), frameMessage(2, big)]);
    await waitFor("the frames on the socket", () => Buffer.concat(received).length >= expected.length);
    const wire = Buffer.concat(received);
    assert.ok(wire.equals(expected));
    // Spelled out: [2|100|small] [2|4096|big[0..4096)] [2|5904|big[4096..)]
    assert.equal(wire.readUInt32BE(8 + 100 + 4), 4096);
    assert.equal(wire.readUInt32BE(8 + 100 + 8 + 4096 + 4), 10_000 - 4096);
  });

  it("ends every connection with a clear reason when the peer closes the socket", async () => {
    const conns = [mux.open(1), mux.open(2)];
    for (const c of conns) c.resume();
    pair.b.end();
    const reason = await within(3000, "mux close", mux.closed);
    assert.match(reason.message, /NRI multiplexer: the peer closed the socket/);
    await within(
      3000,
      "connections to close",
      Promise.all(conns.map((c) => (c.closed ? null : once(c, "close")))),
    );
    for (const c of conns) assert.equal(c.closeReason, reason);
  });

  it("says when the peer closed in the middle of a frame", async () => {
    mux.open(1).resume();
    pair.b.end(encodeFrame(1, Buffer.alloc(100)).subarray(0, 30));
    const reason = await within(3000, "mux close", mux.closed);
    assert.match(reason.message, /in the middle of a frame \(30 bytes of it received\)/);
  });

  it("closes with a clear reason when the peer is not an NRI multiplexer", async () => {
    mux.open(1).resume();
    pair.b.write("HTTP/1.1 400 Bad Request\r\n\r\n");
    const reason = await within(3000, "mux close", mux.closed);
    assert.match(reason.message, /not an NRI multiplexer/);
  });

  it("fails writes after the socket closed, naming the connection", async () => {
    const conn = mux.open(2);
    conn.on("error", () => {});
    pair.b.destroy();
    await within(3000, "mux close", mux.closed);
    const err = await within(
      3000,
      "write callback",
      new Promise<Error | null | undefined>((resolve) => conn.write(Buffer.from("x"), resolve)),
    );
    assert.ok(err instanceof Error);
    assert.match(err.message, /connection 2|write after end|destroyed/);
  });

  it("refuses connection id 0 (reserved) and ids beyond 32 bits", () => {
    assert.throws(() => mux.open(0), /connection id 0 is invalid; use 1\.\.4294967295 \(0 is reserved\)/);
    assert.throws(() => mux.open(2 ** 32), /is invalid/);
  });

  it("returns the same connection for the same id while it is open", () => {
    assert.equal(mux.open(5), mux.open(5));
  });

  it("drops frames for a connection destroyed locally", async () => {
    const conn = mux.open(4);
    conn.destroy();
    const other = collect(mux.open(1));
    pair.b.write(Buffer.concat([encodeFrame(4, Buffer.from("gone")), encodeFrame(1, Buffer.from("ok"))]));
    await waitFor("connection 1 data", () => other.bytes().length === 2);
    assert.equal(mux.isClosed, false);
  });
});

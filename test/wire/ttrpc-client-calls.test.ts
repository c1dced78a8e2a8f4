import assert from "node:assert/strict";
import { afterEach, beforeEach, describe, it } from "node:test";
import { TtrpcClient } from "../../src/wire/ttrpc/client.js";
import { Code, TtrpcError } from "../../src/wire/ttrpc/status.js";
import {
  decodeRequest,
  RawReader,
  rawMessage,
  rawResponse,
  sleep,
  str,
  text,
  unixSocketPair,
  within,
} from "./helpers.js";

type Pair = Awaited<ReturnType<typeof unixSocketPair>>;

function rejectsWith(code: number, message: RegExp): (err: unknown) => boolean {
  return (err) => {
    assert.ok(err instanceof TtrpcError, `expected a TtrpcError, got ${String(err)}`);
    assert.equal(err.codeName, new TtrpcError(code, "").codeName, err.message);
    assert.match(err.message, message);
    return true;
  };
}

describe("TtrpcClient against a raw peer", () => {
  let pair: Pair;
  let client: TtrpcClient;
  let peer: RawReader;
  beforeEach(async () => {
    pair = await unixSocketPair();
    client = new TtrpcClient(pair.a);
    peer = new RawReader(pair.b);
  });
  afterEach(() => {
    client.close();
    pair.close();
  });

  it("uses odd stream ids increasing by 2 from 1, and encodes the request", async () => {
    const calls = [0, 1, 2].map((i) =>
      client.call("svc.S", `M${i}`, text(`p${i}`), { metadata: { a: ["x", "y"], b: "z" } }),
    );
    for (const [i, id] of [1, 3, 5].entries()) {
      const { header, data } = await peer.next();
      assert.equal(header.streamId, id);
      assert.equal(header.type, 1);
      assert.equal(header.flags, 0);
      const request = decodeRequest(data);
      assert.equal(request.service, "svc.S");
      assert.equal(request.method, `M${i}`);
      assert.equal(str(request.payload), `p${i}`);
      assert.equal(request.timeoutNano, 0);
      assert.deepEqual(request.metadata, [
        { key: "a", value: "x" },
        { key: "a", value: "y" },
        { key: "b", value: "z" },
      ]);
    }
    // Answer out of order: each call gets its own answer.
    pair.b.write(
      Buffer.concat([rawResponse(5, text("r2")), rawResponse(1, text("r0")), rawResponse(3, text("r1"))]),
    );
    assert.deepEqual((await within(3000, "answers", Promise.all(calls))).map(str), ["r0", "r1", "r2"]);
  });

  it("sends timeout_nano from timeoutMs", async () => {
    void client.call("svc.S", "M", text(""), { timeoutMs: 1500 }).catch(() => {});
    const { data } = await peer.next();
    assert.equal(decodeRequest(data).timeoutNano, 1_500_000_000);
  });

  it("rejects with the server's status code and message", async () => {
    const call = client.call("svc.S", "M", text(""));
    await peer.next();
    pair.b.write(rawResponse(1, new Uint8Array(0), Code.UNIMPLEMENTED, "method M"));
    await assert.rejects(call, rejectsWith(Code.UNIMPLEMENTED, /^method M$/));
  });

  it("rejects with DEADLINE_EXCEEDED when its own deadline passes, and drops the late answer", async () => {
    const started = Date.now();
    const call = client.call("svc.S", "Slow", text(""), { timeoutMs: 40 });
    await peer.next();
    await assert.rejects(
      call,
      rejectsWith(
        Code.DEADLINE_EXCEEDED,
        /svc\.S\/Slow \(stream 1\) got no answer within its 40 ms deadline/,
      ),
    );
    assert.ok(Date.now() - started < 1500);
    pair.b.write(rawResponse(1, text("late")));
    const next = client.call("svc.S", "M", text(""));
    await peer.next();
    pair.b.write(rawResponse(3, text("fresh")));
    assert.equal(str(await within(3000, "next call", next)), "fresh");
  });

  it("rejects every pending call with UNAVAILABLE when the peer closes, and later calls at once", async () => {
    const calls = [client.call("svc.S", "A", text("")), client.call("svc.S", "B", text(""))];
    await peer.next();
    await peer.next();
    pair.b.end();
    for (const [i, call] of calls.entries()) {
      await assert.rejects(
        within(3000, "pending call to fail", call),
        rejectsWith(
          Code.UNAVAILABLE,
          new RegExp(`peer closed the connection \\(while waiting for svc\\.S/${"AB"[i]}\\)`),
        ),
      );
    }
    assert.equal(client.isClosed, true);
    assert.match((await client.closed).message, /peer closed/);
    await assert.rejects(
      client.call("svc.S", "C", text("")),
      rejectsWith(Code.UNAVAILABLE, /cannot call svc\.S\/C: the connection is closed .*reconnect first/),
    );
  });

  it("says the peer closed in the middle of an answer", async () => {
    const call = client.call("svc.S", "A", text(""));
    await peer.next();
    pair.b.end(rawResponse(1, text("a long answer")).subarray(0, 15));
    await assert.rejects(
      within(3000, "call to fail", call),
      rejectsWith(
        Code.UNAVAILABLE,
        /in the middle of a response message on stream 1 \(got 5 of \d+ data bytes\)/,
      ),
    );
  });

  it("refuses to send a request above 4 MiB with RESOURCE_EXHAUSTED and stays usable", async () => {
    await assert.rejects(
      client.call("svc.S", "Big", new Uint8Array((4 << 20) + 1)),
      rejectsWith(Code.RESOURCE_EXHAUSTED, /exceeds the maximum message size of 4194304 bytes/),
    );
    const call = client.call("svc.S", "Small", text("s"));
    const { header } = await peer.next();
    assert.equal(header.streamId, 1, "the refused request used no stream id");
    pair.b.write(rawResponse(1, text("ok")));
    assert.equal(str(await call), "ok");
  });

  it("rejects a call whose answer is above 4 MiB with RESOURCE_EXHAUSTED, skipping it to stay in sync", async () => {
    const big = client.call("svc.S", "Big", text(""));
    const small = client.call("svc.S", "Small", text(""));
    await peer.next();
    await peer.next();
    const tooBig = (4 << 20) + 100;
    pair.b.write(rawMessage(1, 2, Buffer.alloc(tooBig, 0x41)));
    pair.b.write(rawResponse(3, text("after")));
    await assert.rejects(
      big,
      rejectsWith(Code.RESOURCE_EXHAUSTED, /answer to svc\.S\/Big was 4194404 bytes/),
    );
    assert.equal(str(await within(3000, "the call after the oversized answer", small)), "after");
  });

  it("rejects with CANCELLED when the caller aborts", async () => {
    const controller = new AbortController();
    const call = client.call("svc.S", "M", text(""), { signal: controller.signal });
    await peer.next();
    controller.abort();
    await assert.rejects(call, rejectsWith(Code.CANCELLED, /svc\.S\/M \(stream 1\) was cancelled/));
  });

  it("rejects a streaming DATA answer to a unary call as a protocol error", async () => {
    const call = client.call("svc.S", "M", text(""));
    await peer.next();
    pair.b.write(rawMessage(1, 3, text("chunk")));
    await assert.rejects(call, rejectsWith(Code.INTERNAL, /protocol error: the server sent a data message/));
  });

  it("closes with a clear reason on a garbage header", async () => {
    const call = client.call("svc.S", "M", text(""));
    await peer.next();
    pair.b.write(Buffer.alloc(10, 0xff));
    await assert.rejects(
      within(3000, "call to fail", call),
      rejectsWith(
        Code.UNAVAILABLE,
        /header that is not ttrpc \(type unknown\(0xff\), data length 4294967295 > 4194304\); the peer does not speak ttrpc/,
      ),
    );
  });

  it("reads answers arriving one byte at a time, and several answers in one read", async () => {
    const first = client.call("svc.S", "A", text(""));
    const second = client.call("svc.S", "B", text(""));
    const third = client.call("svc.S", "C", text(""));
    for (let i = 0; i < 3; i++) await peer.next();
    const one = rawResponse(1, text("trickled"));
    for (const byte of one) {
      pair.b.write(Buffer.from([byte]));
      await sleep(0);
    }
    assert.equal(str(await within(3000, "trickled answer", first)), "trickled");
    pair.b.write(Buffer.concat([rawResponse(3, text("b")), rawResponse(5, text("c"))]));
    assert.deepEqual((await within(3000, "batched answers", Promise.all([second, third]))).map(str), [
      "b",
      "c",
    ]);
  });
});

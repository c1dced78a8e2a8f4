import assert from "node:assert/strict";
import { afterEach, beforeEach, describe, it } from "node:test";
import { type CallContext, TtrpcServer } from "../../src/wire/ttrpc/server.js";
import { Code, TtrpcError } from "../../src/wire/ttrpc/status.js";
import {
  decodeResponse,
  encodeRequest,
  RawReader,
  rawMessage,
  rawRequest,
  sleep,
  str,
  text,
  unixSocketPair,
  within,
} from "./helpers.js";

type Pair = Awaited<ReturnType<typeof unixSocketPair>>;

describe("TtrpcServer answers raw requests like containerd/ttrpc", () => {
  let pair: Pair;
  let reader: RawReader;
  let lastCtx: CallContext | undefined;
  let aborted: unknown;
  beforeEach(async () => {
    pair = await unixSocketPair();
    const server = new TtrpcServer().register("test.Echo", {
      Echo: (payload, ctx) => {
        lastCtx = ctx;
        return payload;
      },
      Fail: () => {
        throw new TtrpcError(Code.NOT_FOUND, "no such container abc");
      },
      Crash: () => {
        throw new Error("handler bug");
      },
      Hang: (_payload, ctx) =>
        new Promise((_, reject) => {
          ctx.signal.addEventListener("abort", () => {
            aborted = ctx.signal.reason;
            reject(new Error("too late"));
          });
        }),
      NotBytes: () => "oops" as unknown as Uint8Array,
    });
    server.serve(pair.b);
    reader = new RawReader(pair.a);
    lastCtx = undefined;
    aborted = undefined;
  });
  afterEach(() => pair.close());

  async function expectStatus(streamId: number, code: number, message: RegExp): Promise<void> {
    const { header, data } = await reader.next(`the answer on stream ${streamId}`);
    assert.equal(header.streamId, streamId);
    assert.equal(header.type, 2, "a response message");
    const response = decodeResponse(data);
    assert.equal(response.status?.code, code, `status ${response.status?.code}: ${response.status?.message}`);
    assert.match(response.status?.message ?? "", message);
  }

  const statusCases = [
    {
      name: "an unknown service → UNIMPLEMENTED",
      service: "nope.Svc",
      method: "Echo",
      code: Code.UNIMPLEMENTED,
      message: /service nope\.Svc: not served here \(services: test\.Echo\)/,
    },
    {
      name: "an unknown method → UNIMPLEMENTED",
      service: "test.Echo",
      method: "Nope",
      code: Code.UNIMPLEMENTED,
      message: /method Nope: not implemented by service test\.Echo/,
    },
    {
      name: "an inherited property name is not a method",
      service: "test.Echo",
      method: "toString",
      code: Code.UNIMPLEMENTED,
      message: /method toString/,
    },
    {
      name: "a handler's TtrpcError → its code and message",
      service: "test.Echo",
      method: "Fail",
      code: Code.NOT_FOUND,
      message: /^no such container abc$/,
    },
    {
      name: "a handler's plain exception → UNKNOWN with its message",
      service: "test.Echo",
      method: "Crash",
      code: Code.UNKNOWN,
      message: /^handler bug$/,
    },
    {
      name: "a handler returning no bytes → INTERNAL",
      service: "test.Echo",
      method: "NotBytes",
      code: Code.INTERNAL,
      message: /returned string, expected an encoded message/,
    },
  ];
  for (const c of statusCases) {
    it(c.name, async () => {
      pair.a.write(rawRequest(1, c.service, c.method));
      await expectStatus(1, c.code, c.message);
    });
  }

  it("echoes the payload with an OK status and passes metadata, no deadline without timeout_nano", async () => {
    pair.a.write(
      rawMessage(
        1,
        1,
        encodeRequest({
          service: "test.Echo",
          method: "Echo",
          payload: text("hi"),
          timeoutNano: 0,
          metadata: [
            { key: "traceparent", value: "00-abc-def-01" },
            { key: "k", value: "1" },
            { key: "k", value: "2" },
          ],
        }),
      ),
    );
    const { header, data } = await reader.next();
    assert.equal(header.streamId, 1);
    const response = decodeResponse(data);
    assert.equal(response.status?.code ?? 0, Code.OK);
    assert.equal(str(response.payload), "hi");
    assert.deepEqual({ ...lastCtx?.metadata }, { traceparent: ["00-abc-def-01"], k: ["1", "2"] });
    assert.equal(lastCtx?.deadline, undefined);
  });

  it("answers an even stream id with INVALID_ARGUMENT and keeps serving", async () => {
    pair.a.write(rawRequest(2, "test.Echo", "Echo", text("x")));
    await expectStatus(2, Code.INVALID_ARGUMENT, /StreamID must be odd/);
    pair.a.write(rawRequest(3, "test.Echo", "Echo", text("y")));
    await expectStatus(3, Code.OK, /^$/);
  });

  it("answers a reused or decreasing stream id with INVALID_ARGUMENT and keeps serving", async () => {
    pair.a.write(rawRequest(5, "test.Echo", "Echo"));
    await expectStatus(5, Code.OK, /^$/);
    pair.a.write(rawRequest(5, "test.Echo", "Echo"));
    await expectStatus(5, Code.INVALID_ARGUMENT, /StreamID cannot be re-used and must increment/);
    pair.a.write(rawRequest(3, "test.Echo", "Echo"));
    await expectStatus(3, Code.INVALID_ARGUMENT, /cannot be re-used/);
    pair.a.write(rawRequest(7, "test.Echo", "Echo"));
    await expectStatus(7, Code.OK, /^$/);
  });

  it("answers a streaming DATA message with INVALID_ARGUMENT", async () => {
    pair.a.write(rawMessage(9, 3, text("data")));
    await expectStatus(9, Code.INVALID_ARGUMENT, /no streaming methods/);
  });

  it("answers an undecodable request with INVALID_ARGUMENT", async () => {
    pair.a.write(rawMessage(1, 1, Buffer.from([0xff, 0xff, 0xff])));
    await expectStatus(1, Code.INVALID_ARGUMENT, /unmarshal request error/);
  });

  it("ignores messages of unknown type (forward compatibility) and keeps serving", async () => {
    pair.a.write(rawMessage(1, 0x7f, text("future")));
    pair.a.write(rawRequest(3, "test.Echo", "Echo", text("after")));
    const { header, data } = await reader.next();
    assert.equal(header.streamId, 3);
    assert.equal(str(decodeResponse(data).payload), "after");
  });

  it("answers a request above 4 MiB with RESOURCE_EXHAUSTED after skipping it, and keeps serving", async () => {
    const tooBig = (4 << 20) + 1;
    pair.a.write(rawMessage(1, 1, Buffer.alloc(tooBig, 0x42)));
    pair.a.write(rawRequest(3, "test.Echo", "Echo", text("after")));
    await expectStatus(
      1,
      Code.RESOURCE_EXHAUSTED,
      /message length 4194305 exceed maximum message size of 4194304/,
    );
    const { header, data } = await reader.next();
    assert.equal(header.streamId, 3);
    assert.equal(str(decodeResponse(data).payload), "after");
  });

  it("serves a request trickled one byte at a time and several requests in one write", async () => {
    for (const byte of rawRequest(1, "test.Echo", "Echo", text("slow"))) {
      pair.a.write(Buffer.from([byte]));
      await sleep(0);
    }
    const first = await reader.next();
    assert.equal(str(decodeResponse(first.data).payload), "slow");
    pair.a.write(
      Buffer.concat([
        rawRequest(3, "test.Echo", "Echo", text("b")),
        rawRequest(5, "test.Echo", "Echo", text("c")),
      ]),
    );
    const answers = [await reader.next(), await reader.next()].sort(
      (x, y) => x.header.streamId - y.header.streamId,
    );
    assert.deepEqual(
      answers.map((a) => str(decodeResponse(a.data).payload)),
      ["b", "c"],
    );
  });

  it("closes the connection on a garbage header, with a reason that names the problem", async () => {
    const server = new TtrpcServer();
    const other = await unixSocketPair();
    try {
      const served = server.serve(other.b);
      other.a.write(Buffer.from("GET / HTTP/1.1\r\n\r\n"));
      const reason = await within(3000, "the server to close", served.closed);
      assert.match(reason.message, /header that is not ttrpc .*check the socket path/);
    } finally {
      other.close();
    }
  });

  it("honours timeout_nano: aborts the handler's signal and answers DEADLINE_EXCEEDED", async () => {
    const started = Date.now();
    pair.a.write(rawRequest(1, "test.Echo", "Hang", new Uint8Array(0), 50_000_000));
    await expectStatus(
      1,
      Code.DEADLINE_EXCEEDED,
      /test\.Echo\/Hang did not finish within the caller's deadline of 50 ms/,
    );
    const elapsed = Date.now() - started;
    assert.ok(elapsed >= 45 && elapsed < 1500, `answered after ${elapsed} ms`);
    assert.ok(aborted instanceof TtrpcError && aborted.code === Code.DEADLINE_EXCEEDED);
    // The handler's own late rejection must not produce a second answer.
    pair.a.write(rawRequest(3, "test.Echo", "Echo", text("next")));
    const { header } = await reader.next();
    assert.equal(header.streamId, 3);
  });

  it("gives the handler its absolute deadline", async () => {
    const before = Date.now();
    pair.a.write(rawRequest(1, "test.Echo", "Echo", text("x"), 2_000_000_000));
    await expectStatus(1, Code.OK, /^$/);
    const deadline = lastCtx?.deadline ?? 0;
    assert.ok(
      deadline >= before + 2000 && deadline <= Date.now() + 2000,
      `deadline ${deadline - before} ms ahead`,
    );
  });

  it("answers an already expired timeout_nano at once without running the handler", async () => {
    pair.a.write(rawRequest(1, "test.Echo", "Echo", text("x"), -1));
    await expectStatus(1, Code.DEADLINE_EXCEEDED, /deadline/);
    assert.equal(lastCtx, undefined);
  });

  it("aborts running handlers when the client goes away", async () => {
    pair.a.write(rawRequest(1, "test.Echo", "Hang"));
    await sleep(20);
    pair.a.destroy();
    await within(
      3000,
      "the handler's signal to abort",
      (async () => {
        while (aborted === undefined) await sleep(2);
      })(),
    );
    assert.match(String((aborted as Error).message), /peer closed the connection/);
  });
});

describe("TtrpcServer.register", () => {
  it("refuses a service registered twice", () => {
    const server = new TtrpcServer().register("a.B", {});
    assert.throws(() => server.register("a.B", {}), /service a\.B is already registered/);
  });
});

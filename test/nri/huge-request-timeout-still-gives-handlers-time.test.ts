// containerd's plugin_request_timeout is user configuration: a value past a Node timer's 2^31-1 ms used to
// fire the CreateContainer guard after 1 ms, and every GPU container went without its CRIU configuration.
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { FakeRuntime } from "./fake-nri-runtime.js";
import { captureLog, container, pod, stubFor, within } from "./fixtures.js";

const HANDLER_MS = 50;

describe("CreateContainer under a request timeout beyond a timer's range", () => {
  it("request_timeout = 2^32 ms: a handler taking 50 ms still gets its adjustment through", async () => {
    const runtime = await FakeRuntime.start({ requestTimeoutMs: 2 ** 32 });
    const capture = captureLog();
    let handlerDeadlineMs = 0;
    const stub = stubFor(
      runtime,
      {
        createContainer: async (_pod, _container, ctx) => {
          handlerDeadlineMs = ctx.deadline.remaining();
          await new Promise((resolve) => setTimeout(resolve, HANDLER_MS));
          return { annotations: { "kybernate.io/slow": "but in time" } };
        },
      },
      { log: capture.log },
    );
    try {
      await within(3000, "registration", stub.start());
      const conn = await runtime.nextConnection();
      await conn.handshake;
      const p = pod("huge");
      const response = await within(3000, "the answer", conn.createContainer(p, container("huge-c", p.id)));
      assert.deepEqual(response.adjust?.annotations, { "kybernate.io/slow": "but in time" });
      const tooSlow = capture.lines.filter((l) => String(l.msg).includes("too slow"));
      assert.deepEqual(tooSlow, [], "the guard gave up on a 50 ms handler");
      // 75 % of 2^32 ms, far past what one Node timer holds.
      assert.ok(handlerDeadlineMs > 2 ** 31, `the handler was given ${handlerDeadlineMs} ms`);
    } finally {
      await stub.stop();
      await runtime.close();
    }
  });
});

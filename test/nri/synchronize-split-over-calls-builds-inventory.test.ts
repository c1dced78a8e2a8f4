import assert from "node:assert/strict";
import { describe, it } from "node:test";
import type { NriHandlers } from "../../src/nri/handlers.js";
import type { Container, PodSandbox } from "../../src/nri/types.js";
import { FakeRuntime } from "./fake-nri-runtime.js";
import { container, pod, stubFor, within } from "./fixtures.js";

function state(podCount: number, perPod: number): { pods: PodSandbox[]; containers: Container[] } {
  const pods = Array.from({ length: podCount }, (_, i) => pod(`p${i}`));
  const containers = pods.flatMap((p) =>
    Array.from({ length: perPod }, (_, j) => container(`${p.id}-c${j}`, p.id)),
  );
  return { pods, containers };
}

describe("NRI Synchronize", () => {
  const cases = [
    { name: "in one message", pods: 3, perPod: 2, chunk: 1000, messages: 1 },
    { name: "split over 4 messages with more=true", pods: 4, perPod: 3, chunk: 3, messages: 4 },
    { name: "split one object per message", pods: 5, perPod: 1, chunk: 1, messages: 5 },
    { name: "of an empty node", pods: 0, perPod: 0, chunk: 1, messages: 1 },
  ];
  for (const c of cases) {
    it(`${c.name}: answers {more:true} to each part, acts once on the whole state`, async () => {
      const { pods, containers } = state(c.pods, c.perPod);
      const runtime = await FakeRuntime.start({ pods, containers, syncChunk: c.chunk });
      const seen: { pods: PodSandbox[]; containers: Container[] }[] = [];
      const handlers: NriHandlers = {
        removeContainer: () => undefined,
        synchronize: (p, ctrs) => {
          seen.push({ pods: p, containers: ctrs });
        },
      };
      const stub = stubFor(runtime, handlers);
      try {
        await within(3000, "registration", stub.start());
        const { sync } = await (await runtime.nextConnection()).handshake;
        assert.equal(sync.length, c.messages);
        assert.deepEqual(
          sync.map((r) => r.more),
          [...Array(c.messages - 1).fill(true), false],
        );
        assert.ok(sync.every((r) => r.update.length === 0));
        // Acted on once, with every pod and container of every part, in the runtime's order.
        assert.equal(seen.length, 1);
        const [whole] = seen;
        assert.deepEqual(
          whole?.pods.map((p) => p.id),
          pods.map((p) => p.id),
        );
        assert.deepEqual(
          whole?.containers.map((x) => x.id),
          containers.map((x) => x.id),
        );
        // Whole objects, not ids: a container's pod can be looked up among the pods handed over.
        const first = whole?.containers[0];
        if (first) {
          const podOf = whole?.pods.find((p) => p.id === first.podSandboxId);
          assert.equal(podOf?.name, `pod-${first.podSandboxId}`);
        }
      } finally {
        await stub.stop();
        await runtime.close();
      }
    });
  }

  it("a failing synchronize handler still completes registration", async () => {
    const { pods, containers } = state(2, 1);
    const runtime = await FakeRuntime.start({ pods, containers, syncChunk: 1 });
    const given: number[] = [];
    const stub = stubFor(runtime, {
      removeContainer: () => undefined,
      synchronize: (_pods, ctrs) => {
        given.push(ctrs.length);
        throw new Error("handler bug");
      },
    });
    try {
      await within(3000, "registration", stub.start());
      assert.equal((await (await runtime.nextConnection()).handshake).sync.length, 2);
      assert.deepEqual(given, [2], "called once, with both containers of the split state");
    } finally {
      await stub.stop();
      await runtime.close();
    }
  });
});

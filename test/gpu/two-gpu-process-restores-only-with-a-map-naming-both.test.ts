/**
 * A process holding two GPUs, through both backends: a restore map naming only one of them is refused by the
 * "driver" (as on the two-GPU H200: CUDA_ERROR_INVALID_VALUE) and the engine's rollback brings the process back
 * onto its own two GPUs; a map naming both (a swap) moves both; no map keeps them.
 */
import assert from "node:assert/strict";
import { after, describe, test } from "node:test";
import { GpuEngine } from "../../src/gpu/engine.js";
import { ProcessState } from "../../src/gpu/types.js";
import { backends } from "./double/backends.js";
import { cleanupScratch, startWorkload, type Workload } from "./double/harness.js";

const A = "GPU-aaaaaaaa-1111-2222-3333-444444444444";
const B = "GPU-bbbbbbbb-1111-2222-3333-444444444444";
const started: Workload[] = [];
after(async () => {
  await Promise.all(started.map((w) => w.stop()));
  cleanupScratch();
});

for (const { name, make } of backends) {
  describe(`a two-GPU process through the ${name} backend`, () => {
    test("no map: back on A and B; a swap map: on B and A; a map naming one: refused, rolled back onto A and B", async () => {
      const backend = make();
      const engine = new GpuEngine({ backend });
      const w = await startWorkload({ gpus: [A, B] });
      started.push(w);
      const [pid = 0] = w.pids;
      try {
        assert.deepEqual(w.status(pid).gpus, [A, B]);
        assert.equal((await engine.checkpoint([pid])).ok, true);
        assert.equal((await engine.restore([pid])).ok, true);
        assert.deepEqual(w.status(pid).gpus, [A, B], "no map: the GPUs it was checkpointed on");

        assert.equal((await engine.checkpoint([pid])).ok, true);
        const partial = await engine.restore([pid], [{ from: A, to: B }]);
        assert.equal(partial.ok, false);
        assert.equal(partial.failure?.code, "CUDA_ERROR_INVALID_VALUE");
        assert.equal(partial.rollback?.ok, true, JSON.stringify(partial.rollback));
        assert.equal(await backend.getState(pid), ProcessState.RUNNING);
        assert.deepEqual(w.status(pid).gpus, [A, B], "rolled back onto its own GPUs");

        assert.equal((await engine.checkpoint([pid])).ok, true);
        const swap = await engine.restore(
          [pid],
          [
            { from: A, to: B },
            { from: B, to: A },
          ],
        );
        assert.equal(swap.ok, true, JSON.stringify(swap.failure));
        const now = w.status(pid);
        assert.deepEqual(now.gpus, [B, A]);
        assert.equal(now.lastDevicePairs, 2);
        assert.equal(now.verifyFailures, 0);
        await w.waitCounter(pid, now.counter);
      } finally {
        backend.close();
      }
    });
  });
}

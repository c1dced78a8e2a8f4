import assert from "node:assert/strict";
import { test } from "node:test";
import { withByteProgress } from "../../src/cli/progress.js";

function recorder(isTTY: boolean) {
  const out: string[] = [];
  return { out, stream: { isTTY, write: (t: string) => out.push(t) } };
}

test("a terminal: bytes of the total, percent and rate, redrawn in place; then the outcome", async () => {
  const { out, stream } = recorder(true);
  await withByteProgress(
    "building x",
    async (update) => {
      update(2 ** 30, 4 * 2 ** 30);
      update(4 * 2 ** 30, 4 * 2 ** 30);
    },
    { stream, tickMs: 0 },
  );
  const clear = "\r\x1b[2K";
  assert.ok(out[0]?.startsWith(clear), "each redraw clears the line");
  assert.match(
    out[0]?.slice(clear.length) ?? "",
    /^building x… 1\.0 GiB of 4\.0 GiB \(25 %\), [\d.]+ [KMGT]?i?B\/s$/,
  );
  assert.match(out[1] ?? "", /4\.0 GiB of 4\.0 GiB \(100 %\)/);
  assert.ok(out.at(-1)?.startsWith(clear));
  assert.match(out.at(-1)?.slice(clear.length) ?? "", /^building x: done after \d+\.\d s\n$/);
});

test("a terminal: updates come at most every tick, the last one always", async () => {
  const { out, stream } = recorder(true);
  await withByteProgress(
    "b",
    async (update) => {
      for (let i = 1; i <= 1000; i++) update(i, 1000);
    },
    { stream, tickMs: 60_000 },
  );
  // The first update, the final 100 %, and the outcome.
  assert.equal(out.length, 3);
});

test("not a terminal: a line at the start and one at the end, no byte counts", async () => {
  const { out, stream } = recorder(false);
  await assert.rejects(
    withByteProgress(
      "pushing y",
      async (update) => {
        update(1, 2);
        throw new Error("registry gone");
      },
      { stream },
    ),
    /registry gone/,
  );
  assert.deepEqual(out[0], "pushing y…\n");
  assert.match(out[1] ?? "", /^pushing y: failed after \d+\.\d s\n$/);
  assert.equal(out.length, 2);
});

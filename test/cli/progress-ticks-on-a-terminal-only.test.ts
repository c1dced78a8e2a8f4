import assert from "node:assert/strict";
import { test } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { humanBytes, withProgress } from "../../src/cli/progress.js";

function recorder(isTTY: boolean) {
  const out: string[] = [];
  return { out, stream: { isTTY, write: (t: string) => out.push(t) } };
}

test("not a terminal: one line when the step starts and one when it ends", async () => {
  const { out, stream } = recorder(false);
  assert.equal(await withProgress("checkpointing x", async () => 42, { stream }), 42);
  assert.equal(out.length, 2);
  assert.equal(out[0], "checkpointing x…\n");
  assert.match(out[1] ?? "", /^checkpointing x: done after \d+\.\d s\n$/);
});

test("a terminal: silent for a quick step", async () => {
  const { out, stream } = recorder(true);
  await withProgress("quick", async () => undefined, { stream, quietMs: 200 });
  assert.deepEqual(out, []);
});

test("a terminal: a slow step ticks with the elapsed time, then the outcome replaces the line", async () => {
  const { out, stream } = recorder(true);
  await assert.rejects(
    withProgress(
      "restoring y",
      async () => {
        await sleep(130);
        throw new Error("boom");
      },
      { stream, quietMs: 20, tickMs: 25 },
    ),
    /boom/,
  );
  // Each redraw goes back to the line's start and clears it.
  const clear = "\r\x1b[2K";
  assert.ok(
    out.every((l) => l.startsWith(clear)),
    JSON.stringify(out),
  );
  const ticks = out.filter((l) => /^restoring y… \d+ s$/.test(l.slice(clear.length)));
  assert.ok(ticks.length >= 3, `expected several ticks, got ${JSON.stringify(out)}`);
  assert.match(out.at(-1)?.slice(clear.length) ?? "", /^restoring y: failed after \d+\.\d s\n$/);
});

test("sizes in binary units", () => {
  assert.deepEqual(
    [humanBytes(512), humanBytes(3000), humanBytes(5 * 2 ** 20), humanBytes(2.5 * 2 ** 30)],
    ["512 B", "2.9 KiB", "5.0 MiB", "2.5 GiB"],
  );
});

import assert from "node:assert/strict";
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, test } from "node:test";
import { describeHalt, haltOf } from "../../src/host/proc.js";

const root = mkdtempSync(join(tmpdir(), "kyb-proc-"));
after(() => rmSync(root, { recursive: true, force: true }));

const cases = [
  { state: "S (sleeping)", tracer: 0, halt: undefined },
  { state: "R (running)", tracer: 0, halt: undefined },
  { state: "D (disk sleep)", tracer: 0, halt: undefined },
  { state: "T (stopped)", tracer: 0, halt: "stopped (state T)" },
  { state: "t (tracing stop)", tracer: 812, halt: "traced by pid 812 (state t)" },
  // A debugger attached to a running process: the driver's calls wait on it as well.
  { state: "S (sleeping)", tracer: 813, halt: "traced by pid 813 (state S)" },
];

for (const [i, c] of cases.entries()) {
  test(`State "${c.state}", TracerPid ${c.tracer} → ${c.halt ?? "runs"}`, async () => {
    const pid = 100 + i;
    mkdirSync(join(root, String(pid)));
    writeFileSync(
      join(root, String(pid), "status"),
      `Name:\tworker\nUmask:\t0022\nState:\t${c.state}\nTgid:\t${pid}\nPid:\t${pid}\nPPid:\t1\nTracerPid:\t${c.tracer}\n`,
    );
    const halt = await haltOf(pid, root);
    assert.equal(halt ? describeHalt(halt) : undefined, c.halt);
  });
}

test("a process that is gone has no halt", async () => {
  assert.equal(await haltOf(99_999, root), undefined);
});

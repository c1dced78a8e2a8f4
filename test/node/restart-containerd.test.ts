import assert from "node:assert/strict";
import { existsSync } from "node:fs";
import { describe, it } from "node:test";
import { loadTestNode, restartContainerd, testNodeEnvPath } from "../support/testnode.js";

// Needs a running test node (npm run testnode:up, root); skipped elsewhere so unit runs stay portable.
const up = process.getuid?.() === 0 && existsSync(testNodeEnvPath());

describe("restartContainerd", {
  skip: up ? false : "the test node is not up (npm run testnode:up as root)",
}, () => {
  it("replaces containerd's process, records the new pid and answers on the same socket", async () => {
    const before = loadTestNode();
    await restartContainerd();
    const after = loadTestNode();
    assert.notEqual(after.containerdPid, before.containerdPid);
    assert.equal(after.criSocket, before.criSocket);
    assert.ok(existsSync(`/proc/${after.containerdPid}`), "the new containerd pid is alive");
    assert.ok(!existsSync(`/proc/${before.containerdPid}`), "the old containerd is gone");
    assert.ok(existsSync(after.nriSocket), "NRI listens again after the restart");
  });
});

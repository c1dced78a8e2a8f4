/**
 * A second kybernate on a node must refuse to start, not take over the first one's hook socket: two kybernate
 * NRI plugins on one containerd would make containerd fail every GPU container's creation.
 */
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { join } from "node:path";
import { after, test } from "node:test";
import { packageRoot } from "../../src/base/paths.js";
import { type KybernateProcess, startKybernate } from "../support/kybernate-process.js";
import { loadTestNode } from "../support/testnode.js";

let first: KybernateProcess | undefined;
after(async () => {
  await first?.stop();
});

test("a second kybernate on the same socket refuses to start and the first keeps serving", async () => {
  const node = loadTestNode();
  first = await startKybernate({ nriSocket: node.nriSocket });
  const second = spawnSync(
    process.execPath,
    [
      join(packageRoot, "dist/src/cli/main.js"),
      "run",
      "--nri-socket",
      node.nriSocket,
      "--socket",
      first.socket,
      "--state-dir",
      first.stateDir,
    ],
    { encoding: "utf8", timeout: 20_000 },
  );
  assert.notEqual(second.status, 0, "the second kybernate started");
  assert.match(second.stderr, /another kybernate daemon is already serving .*daemon\.sock: stop it first/);
  const reply = spawnSync(
    process.execPath,
    [
      "--input-type=module",
      "-e",
      `const { askDaemon } = await import(${JSON.stringify(join(packageRoot, "dist/src/daemon/client.js"))});
       const r = await askDaemon(${JSON.stringify(first.socket)}, { kind: "status" }, 5000);
       console.log(JSON.stringify(r));`,
    ],
    { encoding: "utf8", timeout: 10_000 },
  );
  assert.equal((JSON.parse(reply.stdout) as { ok: boolean }).ok, true, "the first daemon still answers");
});

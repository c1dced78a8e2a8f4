/**
 * When the stub's guard has already answered "no adjustment", the container runs without the CRIU hook:
 * kybernate's handler must then not count it as managed, nor leave its CRIU files behind.
 */
import assert from "node:assert/strict";
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, test } from "node:test";
import { silentLogger } from "../../src/base/log.js";
import { kybernateHandlers } from "../../src/plugin/kybernate-plugin.js";
import { callContext, container, pod, testCriuOptions } from "../nri/fixtures.js";

const stateDir = mkdtempSync(join(tmpdir(), "kybernate-late-"));
after(() => rmSync(stateDir, { recursive: true, force: true }));

test("a GPU container whose answer comes after the guard gave up is neither managed nor left with files", async () => {
  const managed: string[] = [];
  const handlers = kybernateHandlers({
    criu: testCriuOptions(stateDir),
    log: silentLogger,
    onManaged: (_pod, c) => managed.push(c.id),
  });
  const p = pod("pod1");
  const gpu = (id: string) => container(id, "pod1", { env: ["NVIDIA_VISIBLE_DEVICES=0"] });

  assert.equal(await handlers.createContainer?.(p, gpu("late"), callContext(0)), undefined);
  assert.deepEqual(managed, []);
  assert.equal(existsSync(join(stateDir, "late")), false);

  assert.ok(await handlers.createContainer?.(p, gpu("in-time"), callContext()));
  assert.deepEqual(managed, ["in-time"]);
  assert.ok(existsSync(join(stateDir, "in-time", "criu.conf")));
});

/**
 * After kybernate restarts, the runtime's Synchronize tells it which containers exist: the GPU containers it
 * configured earlier are managed again, and the CRIU files of containers removed meanwhile are deleted.
 */
import assert from "node:assert/strict";
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, test } from "node:test";
import { silentLogger } from "../../src/base/log.js";
import { kybernateHandlers } from "../../src/plugin/kybernate-plugin.js";
import { callContext, container, pod, testCriuOptions } from "../nri/fixtures.js";

const stateDir = mkdtempSync(join(tmpdir(), "kybernate-resync-"));
after(() => rmSync(stateDir, { recursive: true, force: true }));

test("resync re-manages surviving GPU containers and deletes the files of removed ones", async () => {
  const managed: string[] = [];
  const handlers = kybernateHandlers({
    criu: testCriuOptions(stateDir),
    log: silentLogger,
    onManaged: (_pod, c) => managed.push(c.id),
  });
  const p = pod("pod1");
  const gpu = (id: string) => container(id, "pod1", { env: ["NVIDIA_VISIBLE_DEVICES=0"] });
  for (const id of ["kept", "gone"]) assert.ok(await handlers.createContainer?.(p, gpu(id), callContext()));
  await handlers.createContainer?.(p, container("plain", "pod1"), callContext());
  assert.deepEqual(managed.sort(), ["gone", "kept"]);

  managed.length = 0;
  await handlers.synchronize?.([p], [gpu("kept"), container("plain", "pod1")], callContext());
  assert.deepEqual(
    managed,
    ["kept"],
    "the surviving GPU container is managed again; the plain one never was",
  );
  assert.ok(existsSync(join(stateDir, "kept", "criu.conf")));
  assert.equal(
    existsSync(join(stateDir, "gone")),
    false,
    "files of a container removed meanwhile are deleted",
  );
});

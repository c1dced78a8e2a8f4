/**
 * Container ids from the runtime become directory names under kybernate's state dir. An id like "..", "." or
 * "a/b" is never adjusted (the container's creation still succeeds, without the hook) and is logged; removing a
 * container by such an id deletes nothing (".." would have been the state dir itself, journal included).
 */
import assert from "node:assert/strict";
import { existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, test } from "node:test";
import { kybernateHandlers } from "../../src/plugin/kybernate-plugin.js";
import { callContext, captureLog, container, pod, testCriuOptions } from "../nri/fixtures.js";

const root = mkdtempSync(join(tmpdir(), "kybernate-ids-"));
after(() => rmSync(root, { recursive: true, force: true }));

const UNUSABLE = ["..", ".", "", "a/b", "../../etc", `${"x".repeat(129)}`, "-rf"];

function plugin() {
  // The state dir as kybernate run lays it out: containers/ for CRIU files beside the journal.
  const stateDir = mkdtempSync(join(root, "state-"));
  const containers = join(stateDir, "containers");
  mkdirSync(join(stateDir, "journal"), { recursive: true });
  writeFileSync(join(stateDir, "journal", "op.json"), "{}");
  const capture = captureLog();
  const handlers = kybernateHandlers({
    criu: testCriuOptions(containers),
    log: capture.log,
  });
  return { handlers, stateDir, containers, lines: capture.lines };
}

const p = pod("pod1");
const gpu = (id: string) => container(id, "pod1", { env: ["NVIDIA_VISIBLE_DEVICES=0"] });

for (const id of UNUSABLE) {
  test(`GPU container id ${JSON.stringify(id.slice(0, 20))}: no adjustment, logged, nothing written; its removal deletes nothing`, async () => {
    const k = plugin();
    assert.ok(await k.handlers.createContainer?.(p, gpu("good1"), callContext()), "a good id is configured");
    const adjustment = await k.handlers.createContainer?.(p, gpu(id), callContext());
    assert.equal(adjustment, undefined);
    assert.ok(
      k.lines.some((l) => l.msg === "GPU container not configured: its id is unusable"),
      JSON.stringify(k.lines),
    );
    await k.handlers.removeContainer?.(p, gpu(id), callContext());
    assert.ok(existsSync(join(k.stateDir, "journal", "op.json")), "the journal survives");
    assert.ok(existsSync(join(k.containers, "good1", "criu.conf")), "another container's CRIU files survive");
    assert.deepEqual(readdirSync(k.containers), ["good1"]);
  });
}

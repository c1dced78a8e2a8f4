import assert from "node:assert/strict";
import { mkdtempSync, readdirSync, rmSync, utimesSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, test } from "node:test";
import { PlanStore } from "../../src/daemon/plan-store.js";

const root = mkdtempSync(join(tmpdir(), "kyb-plans-"));
after(() => rmSync(root, { recursive: true, force: true }));
const map = [
  { from: "GPU-aaaaaaaa-0000-0000-0000-000000000000", to: "GPU-bbbbbbbb-0000-0000-0000-000000000000" },
];

test("a saved map is loaded back until removed; none saved reads as none", async () => {
  const store = new PlanStore(join(root, "a"));
  assert.equal(await store.load("c1"), undefined);
  await store.save("c1", map);
  assert.deepEqual(await store.load("c1"), map);
  await store.remove("c1");
  assert.equal(await store.load("c1"), undefined);
  await store.remove("c1");
});

test("a damaged file reads as no plan (restore onto the original GPUs), never as a wrong map", async () => {
  const dir = join(root, "b");
  const store = new PlanStore(dir);
  await store.save("c1", map);
  for (const text of ["{", '{"deviceMap": 3}', '{"deviceMap": [{"from": 1}]}']) {
    writeFileSync(join(dir, "c1.json"), text);
    assert.equal(await store.load("c1"), undefined, text);
  }
});

test("a container id that could escape the directory is refused", async () => {
  const store = new PlanStore(join(root, "c"));
  await assert.rejects(store.save("../x", map), /not a container id/);
});

test("prune drops plans of containers gone while away, but not plans written since the synchronize", async () => {
  const dir = join(root, "d");
  const store = new PlanStore(dir);
  for (const id of ["alive", "gone", "new"]) await store.save(id, map);
  const old = new Date(Date.now() - 60_000);
  for (const id of ["alive", "gone"]) utimesSync(join(dir, `${id}.json`), old, old);
  await store.prune(new Set(["alive"]), new Date(Date.now() - 30_000));
  assert.deepEqual(readdirSync(dir).sort(), ["alive.json", "new.json"]);
});

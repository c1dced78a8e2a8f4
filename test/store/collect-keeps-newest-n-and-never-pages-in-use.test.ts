/**
 * The page store's collection: the newest N checkpoints of each container stay, older ones go, so do those whose
 * archive is gone and those a crash left incomplete; a checkpoint a restore uses, or one being written, never goes.
 */
import assert from "node:assert/strict";
import { copyFileSync, mkdirSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterEach, test } from "node:test";
import { TarWriter } from "../../src/host/tar.js";
import { decideCollection } from "../../src/store/collect.js";
import { PAGES_MANIFEST } from "../../src/store/manifest.js";
import { newCheckpointId, type PageStore } from "../../src/store/page-store.js";
import { type Scratch, scratch } from "./fixtures.js";

let s: Scratch;
afterEach(() => s?.cleanup());

async function checkpoints(store: PageStore, containerId: string, n: number): Promise<string[]> {
  const ids: string[] = [];
  for (let i = 0; i < n; i++) {
    const images = s.imageDir(`${containerId}-${i}`, { "pages-1.img": 4096 });
    const id = newCheckpointId(containerId, new Date(Date.UTC(2026, 0, 1, 0, 0, i)));
    await store.stash({ imageDir: images.dir, checkpointId: id, containerId, node: "node-a" });
    ids.push(id);
  }
  return ids;
}

const remaining = async (store: PageStore) => (await store.entries()).map((e) => e.id);

test("keeps the newest N per container, whatever other containers have", async () => {
  s = scratch();
  const store = await s.store();
  const a = await checkpoints(store, "aaaa", 3);
  const b = await checkpoints(store, "bbbb", 1);
  const result = await store.collect({ keep: 2 });
  assert.deepEqual(result.remove, [{ id: a[0], reason: "beyond keep" }]);
  assert.equal(result.freedBytes, 4096);
  assert.deepEqual((await remaining(store)).sort(), [a[1], a[2], b[0]].sort());
});

test("a checkpoint a restore uses is never collected, and goes once the restore released it", async () => {
  s = scratch();
  const store = await s.store();
  const [old] = await checkpoints(store, "aaaa", 2);
  await store.markInUse(old as string, "restoring1");
  const held = await store.collect({ keep: 0 });
  assert.deepEqual(
    held.protected.map((p) => p.id),
    [old],
  );
  assert.ok(
    (await remaining(store)).includes(old as string),
    "pages in use survive a collection with keep 0",
  );
  assert.equal(await store.remove(old as string), "in use");
  await store.releaseContainer("restoring1");
  await store.collect({ keep: 0 });
  assert.deepEqual(await remaining(store), []);
});

test("a checkpoint being written (post-dump in flight) is never collected", () => {
  const decision = decideCollection(
    [{ id: "x", containerId: "c", createdAt: "", complete: false, startedMs: 0 }],
    { keep: 1, inUse: new Set(), inFlight: new Set(["x"]), now: 10 ** 13, incompleteAfterMs: 0 },
  );
  assert.deepEqual(decision.remove, []);
});

test("an incomplete checkpoint (no record: a crash mid post-dump) goes, once old enough", async () => {
  s = scratch();
  const store = await s.store();
  const id = newCheckpointId("cccc");
  mkdirSync(store.checkpointDir(id));
  writeFileSync(join(store.checkpointDir(id), "pages-1.img"), "partial");
  assert.deepEqual((await store.collect({ keep: 2 })).remove, [], "a young one may still be written");
  assert.deepEqual((await store.collect({ keep: 2, incompleteAfterMs: 0 })).remove, [
    { id, reason: "incomplete" },
  ]);
});

test("a checkpoint whose archive is gone (or now names another checkpoint) goes; one whose archive is there stays", async () => {
  s = scratch();
  const store = await s.store();
  const [gone, kept, replaced] = (await checkpoints(store, "dddd", 3)) as [string, string, string];
  const archive = async (name: string, id: string) => {
    const path = join(s.dir, name);
    const w = await TarWriter.create(path);
    const h = { mode: 0o644, uid: 0, gid: 0, mtime: 0, uname: "", gname: "" };
    await w.file(
      { ...h, name: `checkpoint/${PAGES_MANIFEST}` },
      Buffer.from(JSON.stringify({ ...(await store.record(id)) })),
    );
    await w.finish();
    await w.close();
    return path;
  };
  await store.setArchive(gone, await archive("gone.tar", gone));
  await store.setArchive(kept, await archive("kept.tar", kept));
  await store.setArchive(replaced, await archive("replaced.tar", replaced));
  rmSync(join(s.dir, "gone.tar"));
  copyFileSync(join(s.dir, "kept.tar"), join(s.dir, "replaced.tar"));
  const result = await store.collect({ keep: 5 });
  assert.deepEqual(
    result.remove.sort((x, y) => x.id.localeCompare(y.id)),
    [
      { id: gone, reason: "archive gone" },
      { id: replaced, reason: "archive gone" },
    ].sort((x, y) => x.id.localeCompare(y.id)),
  );
  assert.deepEqual(await remaining(store), [kept]);
});

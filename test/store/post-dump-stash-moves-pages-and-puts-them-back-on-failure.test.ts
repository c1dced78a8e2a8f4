/**
 * The page store's stash (what post-dump does): the page images leave CRIU's image directory by a rename, the
 * store hashes and keeps them with a record, a manifest takes their place; every failure puts the directory
 * back as CRIU wrote it and leaves nothing in the store.
 */
import assert from "node:assert/strict";
import { existsSync, mkdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { afterEach, test } from "node:test";
import { PAGES_MANIFEST, readManifest } from "../../src/store/manifest.js";
import { newCheckpointId } from "../../src/store/page-store.js";
import { listing, type Scratch, scratch, sha256 } from "./fixtures.js";

let s: Scratch;
afterEach(() => s?.cleanup());

const stashInput = (imageDir: string, checkpointId = newCheckpointId("c0ffee")) => ({
  imageDir,
  checkpointId,
  containerId: "c0ffee",
  pod: "ns/pod",
  container: "cuda",
  node: "node-a",
});

test("the page images move into the store; the image directory keeps the rest and the manifest", async () => {
  s = scratch();
  const images = s.imageDir();
  const store = await s.store();
  const id = newCheckpointId("c0ffee");
  const result = await store.stash(stashInput(images.dir, id));
  assert.ok(result);
  assert.deepEqual(listing(images.dir), ["core-1.img", PAGES_MANIFEST, "kybernate.json", "pagemap-1.img"]);
  const manifest = await readManifest(images.dir);
  assert.equal(manifest?.checkpointId, id);
  assert.equal(manifest?.node, "node-a");
  assert.deepEqual(
    manifest?.files,
    Object.entries(images.pages).map(([name, data]) => ({ name, size: data.length, sha256: sha256(data) })),
  );
  for (const [name, data] of Object.entries(images.pages))
    assert.ok(readFileSync(join(store.checkpointDir(id), name)).equals(data), `${name} in the store`);
  const record = await store.record(id);
  assert.equal(record?.containerId, "c0ffee");
  assert.deepEqual(
    (await store.entries()).map((e) => [e.id, e.complete]),
    [[id, true]],
  );
});

test("an image directory without page images: nothing stored, nothing written", async () => {
  s = scratch();
  const images = s.imageDir("empty", {});
  const store = await s.store();
  assert.equal(await store.stash(stashInput(images.dir)), undefined);
  assert.deepEqual(await store.entries(), []);
  assert.ok(!existsSync(join(images.dir, PAGES_MANIFEST)));
});

test("a failure after the pages moved (the manifest cannot be written): everything is put back", async () => {
  s = scratch();
  const images = s.imageDir();
  const before = listing(images.dir);
  // A directory where the manifest goes: writing it fails after every page image has been moved and hashed.
  mkdirSync(join(images.dir, PAGES_MANIFEST));
  const store = await s.store();
  await assert.rejects(
    store.stash(stashInput(images.dir)),
    /EISDIR.*the page images were put back into CRIU's image directory/,
  );
  assert.deepEqual(listing(images.dir), [...before, PAGES_MANIFEST].sort());
  for (const [name, data] of Object.entries(images.pages))
    assert.ok(readFileSync(join(images.dir, name)).equals(data), `${name} back in place, unchanged`);
  assert.deepEqual(await store.entries(), [], "nothing left in the store");
});

test("the caller gives up (containerd abandoned the checkpoint): stopped, everything put back", async () => {
  s = scratch();
  const images = s.imageDir();
  const before = listing(images.dir);
  const store = await s.store();
  const controller = new AbortController();
  const stashing = store.stash({ ...stashInput(images.dir), signal: controller.signal });
  controller.abort(new Error("containerd abandoned the checkpoint"));
  await assert.rejects(stashing, /containerd abandoned the checkpoint; the page images were put back/);
  assert.deepEqual(listing(images.dir), before);
  assert.deepEqual(await store.entries(), []);
});

test("an image directory on another filesystem than the store: refused with the fix, nothing moved", async (t) => {
  if (!existsSync("/dev/shm")) return t.skip("no /dev/shm (tmpfs) on this machine");
  s = scratch();
  const other = scratch("/dev/shm");
  try {
    const images = other.imageDir();
    const before = listing(images.dir);
    const store = await s.store();
    await assert.rejects(
      store.stash(stashInput(images.dir)),
      /on another filesystem than CRIU's image directory .*put --page-store on that filesystem/,
    );
    assert.deepEqual(listing(images.dir), before);
    assert.deepEqual(await store.entries(), []);
  } finally {
    other.cleanup();
  }
});

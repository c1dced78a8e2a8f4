/**
 * What pre-restore asks of the page store: the pages a manifest names, verified against the store's record and
 * linked into the restore's image directory (a hard link on one filesystem, a symbolic link across; never a copy),
 * with the restore journalled as using them; a refusal naming the checkpoint and the node otherwise, with nothing
 * linked.
 */
import assert from "node:assert/strict";
import {
  existsSync,
  lstatSync,
  mkdirSync,
  readFileSync,
  statSync,
  truncateSync,
  writeFileSync,
} from "node:fs";
import { join } from "node:path";
import { afterEach, test } from "node:test";
import { type PagesManifest, readManifest } from "../../src/store/manifest.js";
import { newCheckpointId, type PageStore, StoreRefusal } from "../../src/store/page-store.js";
import { listing, type Scratch, scratch } from "./fixtures.js";

let s: Scratch;
afterEach(() => s?.cleanup());

/** A checkpoint stashed into a fresh store, and a restore's image directory holding what the archive carried. */
async function stashed(
  base?: string,
): Promise<{ store: PageStore; manifest: PagesManifest; restoreDir: string }> {
  s = scratch();
  const images = s.imageDir("dump");
  const store = await s.store();
  await store.stash({
    imageDir: images.dir,
    checkpointId: newCheckpointId("c0ffee"),
    containerId: "c0ffee",
    node: "node-a",
  });
  const manifest = (await readManifest(images.dir)) as PagesManifest;
  const restoreDir = join(base ?? s.dir, `restore-${process.pid}-${Math.random().toString(16).slice(2)}`);
  mkdirSync(restoreDir, { recursive: true });
  writeFileSync(join(restoreDir, "pagemap-1.img"), "pagemap");
  return { store, manifest, restoreDir };
}

test("same filesystem: hard links, the store's inode itself, and the restore journalled as using them", async () => {
  const { store, manifest, restoreDir } = await stashed();
  const linked = await store.link(manifest, restoreDir, "restored1", "node-a");
  assert.equal(linked.method, "hard link");
  assert.equal(linked.files, 2);
  for (const f of manifest.files) {
    const inStore = statSync(join(store.checkpointDir(manifest.checkpointId), f.name));
    const inRestore = lstatSync(join(restoreDir, f.name));
    assert.equal(inRestore.ino, inStore.ino, `${f.name} is a link, not a copy`);
  }
  assert.deepEqual(
    (await store.inUse()).map((u) => [u.checkpointId, u.containerId]),
    [[manifest.checkpointId, "restored1"]],
  );
  assert.deepEqual(await store.releaseContainer("restored1"), [manifest.checkpointId]);
  assert.deepEqual(await store.inUse(), []);
});

test("another filesystem: symbolic links into the store", async (t) => {
  if (!existsSync("/dev/shm")) return t.skip("no /dev/shm (tmpfs) on this machine");
  const other = scratch("/dev/shm");
  try {
    const { store, manifest, restoreDir } = await stashed(other.dir);
    const linked = await store.link(manifest, restoreDir, "restored1", "node-a");
    assert.equal(linked.method, "symbolic link");
    for (const f of manifest.files) assert.ok(lstatSync(join(restoreDir, f.name)).isSymbolicLink());
    const first = manifest.files[0]?.name ?? "";
    assert.ok(
      readFileSync(join(restoreDir, first)).equals(
        readFileSync(join(store.checkpointDir(manifest.checkpointId), first)),
      ),
    );
  } finally {
    other.cleanup();
  }
});

const refusals: Array<{
  name: string;
  arrange: (x: {
    store: PageStore;
    manifest: PagesManifest;
    restoreDir: string;
  }) => PagesManifest | undefined;
  error: RegExp;
}> = [
  {
    name: "a checkpoint this store does not hold",
    arrange: ({ manifest }) => ({
      ...manifest,
      checkpointId: "20260101T000000Z-other-abcdef",
      node: "node-b",
    }),
    error:
      /checkpoint 20260101T000000Z-other-abcdef keeps its page images in the page store of node node-b, and the page store .* of this node \(node-a\) does not have them/,
  },
  {
    name: "a manifest whose sha256 differs from the store's record",
    arrange: ({ manifest }) => ({
      ...manifest,
      files: manifest.files.map((f, i) => (i === 0 ? { ...f, sha256: "0".repeat(64) } : f)),
    }),
    error: /the archive's page manifest does not match .*pages-1\.img: the sha256 differs/,
  },
  {
    name: "a page image in the store cut short",
    arrange: ({ store, manifest }) => {
      truncateSync(join(store.checkpointDir(manifest.checkpointId), "pages-1.img"), 100);
      return undefined;
    },
    error: /pages-1\.img in the page store .* of node node-a is 100 bytes, not \d+/,
  },
  {
    name: "an image directory that already holds a page image",
    arrange: ({ restoreDir }) => {
      writeFileSync(join(restoreDir, "pages-2.img"), "sneaked in");
      return undefined;
    },
    error: /already holds pages-2\.img beside the page manifest/,
  },
];

for (const r of refusals) {
  test(`refused, nothing linked and nothing in use: ${r.name}`, async () => {
    const x = await stashed();
    const before = listing(x.restoreDir);
    const manifest = r.arrange(x) ?? x.manifest;
    const after = listing(x.restoreDir);
    await assert.rejects(x.store.link(manifest, x.restoreDir, "restored1", "node-a"), (error: Error) => {
      assert.ok(error instanceof StoreRefusal, `a StoreRefusal, not ${error.name}`);
      assert.match(error.message, r.error);
      return true;
    });
    assert.deepEqual(listing(x.restoreDir), after, "nothing linked");
    assert.ok(before.length <= after.length);
    assert.deepEqual(await x.store.inUse(), []);
  });
}

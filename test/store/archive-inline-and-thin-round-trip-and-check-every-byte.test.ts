/**
 * `kybernate archive thin` and `inline` over a CRI-shaped archive: thin takes the page images into the store and
 * leaves a manifest, inline puts them back byte for byte (GNU tar reads both); inline checks each image's sha256
 * as it streams and leaves no output when the store's copy is damaged; each refuses the archive it cannot use.
 */
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { existsSync, mkdirSync, readFileSync, statSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterEach, test } from "node:test";
import { readTarMember, TarReader } from "../../src/host/tar.js";
import { ArchiveRefused, inlineArchive, thinArchive } from "../../src/store/archive-rewrite.js";
import { PAGES_MANIFEST, parseManifest } from "../../src/store/manifest.js";
import { StoreRefusal } from "../../src/store/page-store.js";
import { type Scratch, scratch, sha256 } from "./fixtures.js";

let s: Scratch;
afterEach(() => s?.cleanup());

/** An archive laid out as containerd's CheckpointContainer writes it (GNU tar, like Go's archive/tar). */
function criArchive(): { path: string; pages: Record<string, Buffer>; tree: string } {
  const tree = join(s.dir, "tree");
  mkdirSync(join(tree, "checkpoint"), { recursive: true });
  const pages = { "pages-1.img": randomBytes(5 * 1024 * 1024 + 123), "pages-2.img": randomBytes(512) };
  for (const [name, data] of Object.entries(pages)) writeFileSync(join(tree, "checkpoint", name), data);
  writeFileSync(join(tree, "checkpoint", "pagemap-1.img"), "pagemap");
  writeFileSync(
    join(tree, "checkpoint", "kybernate.json"),
    JSON.stringify({ gpus: [], pod: "ns/p", container: "cuda" }),
  );
  writeFileSync(join(tree, "config.dump"), JSON.stringify({ id: "0123456789abcdef", name: "cuda" }));
  writeFileSync(join(tree, "spec.dump"), "{}");
  writeFileSync(join(tree, "rootfs-diff.tar"), randomBytes(10_000));
  const path = join(s.dir, "full.tar");
  execFileSync("tar", ["-C", tree, "-cf", path, "checkpoint", "config.dump", "rootfs-diff.tar", "spec.dump"]);
  return { path, pages, tree };
}

const members = (tar: string): string[] =>
  execFileSync("tar", ["-tf", tar], { encoding: "utf8" }).split("\n").filter(Boolean).sort();

test("thin moves the page images into the store and leaves a manifest; inline puts back every byte", async () => {
  s = scratch();
  const full = criArchive();
  const store = await s.store();
  const thin = join(s.dir, "thin.tar");
  const t = await thinArchive({ input: full.path, output: thin, store, node: "node-a" });
  assert.equal(t.pageFiles, 2);
  assert.ok(statSync(thin).size < statSync(full.path).size / 2, "the thin archive is small");
  const thinMembers = members(thin);
  assert.ok(
    !thinMembers.some((m) => /pages-\d+\.img$/.test(m)),
    `no page image in ${thinMembers.join(", ")}`,
  );
  assert.ok(thinMembers.includes(`checkpoint/${PAGES_MANIFEST}`));
  const manifest = parseManifest(
    (await readTarMember(thin, `checkpoint/${PAGES_MANIFEST}`, { maxBytes: 1 << 20 })) as Buffer,
    "thin",
  );
  assert.equal(manifest.containerId, "0123456789abcdef");
  assert.equal(manifest.node, "node-a");
  assert.equal(
    (await store.record(manifest.checkpointId))?.archive,
    thin,
    "the store knows the thin archive",
  );

  const back = join(s.dir, "back.tar");
  const i = await inlineArchive({ input: thin, output: back, store, node: "node-a" });
  assert.equal(i.checkpointId, manifest.checkpointId);
  assert.deepEqual(members(back), members(full.path));
  const out = join(s.dir, "out");
  mkdirSync(out);
  execFileSync("tar", ["-C", out, "-xf", back]);
  for (const [name, data] of Object.entries(full.pages))
    assert.equal(sha256(readFileSync(join(out, "checkpoint", name))), sha256(data), name);
  for (const f of ["config.dump", "rootfs-diff.tar", "checkpoint/pagemap-1.img"])
    assert.ok(readFileSync(join(out, f)).equals(readFileSync(join(full.tree, f))), f);
});

test("inline finds a page image in the store damaged: fails naming it, no output left", async () => {
  s = scratch();
  const full = criArchive();
  const store = await s.store();
  const thin = join(s.dir, "thin.tar");
  const { checkpointId } = await thinArchive({ input: full.path, output: thin, store, node: "node-a" });
  const damaged = join(store.checkpointDir(checkpointId), "pages-1.img");
  const bytes = readFileSync(damaged);
  bytes[1000] = (bytes[1000] ?? 0) ^ 0xff;
  writeFileSync(damaged, bytes);
  const back = join(s.dir, "back.tar");
  await assert.rejects(
    inlineArchive({ input: thin, output: back, store, node: "node-a" }),
    /pages-1\.img does not hold what checkpoint .* stored: its sha256 is .*the store's copy is damaged/,
  );
  assert.ok(!existsSync(back), "no partial archive");
});

test("inline on a node whose store lacks the pages: refused naming the checkpoint and the node", async () => {
  s = scratch();
  const full = criArchive();
  const thin = join(s.dir, "thin.tar");
  await thinArchive({ input: full.path, output: thin, store: await s.store(), node: "node-a" });
  const elsewhere = scratch();
  try {
    const back = join(s.dir, "back.tar");
    await assert.rejects(
      inlineArchive({ input: thin, output: back, store: await elsewhere.store(), node: "node-b" }),
      (e: Error) =>
        e instanceof StoreRefusal && /page store of node node-a.*this node \(node-b\)/.test(e.message),
    );
    assert.ok(!existsSync(back));
  } finally {
    elsewhere.cleanup();
  }
});

test("each refuses the archive it cannot use, leaving nothing behind", async () => {
  s = scratch();
  const full = criArchive();
  const store = await s.store();
  await assert.rejects(
    inlineArchive({ input: full.path, output: join(s.dir, "x.tar"), store, node: "n" }),
    (e: Error) => e instanceof ArchiveRefused && /self-contained already/.test(e.message),
  );
  const thin = join(s.dir, "thin.tar");
  await thinArchive({ input: full.path, output: thin, store, node: "n" });
  await assert.rejects(
    thinArchive({ input: thin, output: join(s.dir, "y.tar"), store, node: "n" }),
    (e: Error) => e instanceof ArchiveRefused && /thin already/.test(e.message),
  );
  assert.ok(!existsSync(join(s.dir, "x.tar")) && !existsSync(join(s.dir, "y.tar")));
  assert.equal((await store.entries()).length, 1, "only the one thin checkpoint");
});

test("the tar writer's long names and sizes past ustar's 8 GiB go in pax headers the reader takes back", async () => {
  s = scratch();
  const { TarWriter } = await import("../../src/host/tar.js");
  const long = `checkpoint/${"d".repeat(120)}/pages-1.img`;
  const h = { mode: 0o600, uid: 0, gid: 0, mtime: 1_700_000_000, uname: "root", gname: "root", linkname: "" };
  const named = join(s.dir, "long.tar");
  const w = await TarWriter.create(named);
  await w.file({ ...h, name: long }, Buffer.from("hello"));
  await w.finish();
  await w.close();
  assert.deepEqual(members(named), [long], "GNU tar reads the pax path");
  const r = await TarReader.open(named);
  assert.equal((await r.next())?.name, long);
  assert.equal((await r.readSmall()).toString(), "hello");
  await r.close();
  // Only the header of a 9 GiB member: the reader must take its size from the pax record.
  const big = join(s.dir, "big.tar");
  const wb = await TarWriter.create(big);
  await wb.header({ ...h, name: "checkpoint/pages-2.img", type: "0", size: 9 * 2 ** 30 });
  await wb.close();
  const rb = await TarReader.open(big);
  assert.equal((await rb.next())?.size, 9 * 2 ** 30);
  await rb.close();
});

test("thin refuses an archive whose kybernate.json cannot describe the pages (hostile), leaving nothing behind", async () => {
  s = scratch();
  const full = criArchive();
  // A pod name no manifest takes (far too long): the archive's metadata is input, never trusted.
  writeFileSync(
    join(full.tree, "checkpoint", "kybernate.json"),
    JSON.stringify({ gpus: [], pod: `ns/${"p".repeat(100_000)}`, container: "cuda" }),
  );
  execFileSync("tar", [
    "-C",
    full.tree,
    "-cf",
    full.path,
    "checkpoint",
    "config.dump",
    "rootfs-diff.tar",
    "spec.dump",
  ]);
  const store = await s.store();
  const out = join(s.dir, "thin.tar");
  await assert.rejects(
    thinArchive({ input: full.path, output: out, store, node: "n" }),
    (e: Error) =>
      e instanceof ArchiveRefused && /kybernate\.json cannot describe the pages: field pod/.test(e.message),
  );
  assert.ok(!existsSync(out), "no output left");
  assert.deepEqual(await store.entries(), [], "nothing left in the store");
});

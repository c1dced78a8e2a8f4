/**
 * The page store's hashes follow CRIU's writes: a page image that grows while it is followed gets the digest of
 * all its bytes once CRIU is done; one that appeared too late, or was rewritten rather than appended to, is left
 * out (the store then hashes it whole).
 */
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { appendFileSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, test } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { FollowingHasher } from "../../src/store/follow-hash.js";
import { sha256 } from "./fixtures.js";

let dir: string;
afterEach(() => rmSync(dir, { recursive: true, force: true }));

test("an image written in pieces while followed: the digest of every byte, the size it ended at", async () => {
  dir = mkdtempSync(join(tmpdir(), "kyb-follow-"));
  const hasher = new FollowingHasher(dir, 5).start();
  const pieces: Buffer[] = [];
  writeFileSync(join(dir, "pages-1.img"), "");
  for (let i = 0; i < 20; i++) {
    const piece = randomBytes(100_000 + i);
    pieces.push(piece);
    appendFileSync(join(dir, "pages-1.img"), piece);
    await sleep(3);
  }
  writeFileSync(join(dir, "pagemap-1.img"), "not a page image");
  const all = Buffer.concat(pieces);
  const digests = await hasher.finish(["pages-1.img", "pages-9.img"]);
  assert.deepEqual(digests.get("pages-1.img"), { sha256: sha256(all), size: all.length });
  assert.equal(digests.has("pages-9.img"), false, "never there: left to the store");
  assert.equal(digests.size, 1);
});

test("an image rewritten shorter while followed is left out, not given a wrong digest", async () => {
  dir = mkdtempSync(join(tmpdir(), "kyb-follow-"));
  writeFileSync(join(dir, "pages-1.img"), randomBytes(300_000));
  const hasher = new FollowingHasher(dir, 5).start();
  await sleep(100);
  writeFileSync(join(dir, "pages-1.img"), randomBytes(1000));
  const digests = await hasher.finish(["pages-1.img"]);
  assert.equal(digests.has("pages-1.img"), false);
});

/**
 * The page manifest comes from an archive that may come from anywhere: names that could leave the image directory,
 * ids that could leave the store, bad sizes or digests, links and oversized files are refused, naming the field and
 * never quoting the content.
 */
import assert from "node:assert/strict";
import { mkdtempSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import { manifestProblem, PAGES_MANIFEST, readManifest } from "../../src/store/manifest.js";

const good = {
  schema: 1,
  checkpointId: "20260101T000000Z-c0ffee-abcdef",
  node: "node-a",
  createdAt: "2026-01-01T00:00:00Z",
  containerId: "c0ffee",
  files: [{ name: "pages-1.img", size: 4096, sha256: "a".repeat(64) }],
};

const bad: Array<[string, unknown, RegExp]> = [
  [
    "a page name with a path",
    { ...good, files: [{ ...good.files[0], name: "../../etc/shadow" }] },
    /files\[0\]\.name/,
  ],
  [
    "a page name that is not a page image",
    { ...good, files: [{ ...good.files[0], name: "core-1.img" }] },
    /files\[0\]\.name/,
  ],
  ["an id that climbs out of the store", { ...good, checkpointId: "../x" }, /checkpointId/],
  ["a negative size", { ...good, files: [{ ...good.files[0], size: -1 }] }, /files\[0\]\.size/],
  [
    "a digest that is not sha256",
    { ...good, files: [{ ...good.files[0], sha256: "xyz" }] },
    /files\[0\]\.sha256/,
  ],
  ["the same page twice", { ...good, files: [good.files[0], good.files[0]] }, /repeats pages-1\.img/],
  ["no page at all", { ...good, files: [] }, /files must have 1/],
  ["a newer schema", { ...good, schema: 2 }, /schema must be 1/],
];

for (const [name, value, problem] of bad)
  test(`refused: ${name}`, () => assert.match(manifestProblem(value) ?? "accepted", problem));

test("a good manifest passes", () => assert.equal(manifestProblem(good), undefined));

test("a link, a huge file or garbage in its place: refused without quoting it; none at all: a self-contained checkpoint", async () => {
  const dir = mkdtempSync(join(tmpdir(), "kyb-manifest-"));
  try {
    assert.equal(await readManifest(dir), undefined);
    symlinkSync("/etc/passwd", join(dir, PAGES_MANIFEST));
    await assert.rejects(readManifest(dir), /symbolic link/);
    rmSync(join(dir, PAGES_MANIFEST));
    writeFileSync(join(dir, PAGES_MANIFEST), "secret-token{");
    await assert.rejects(
      readManifest(dir),
      (e: Error) => /is not JSON/.test(e.message) && !/secret/.test(e.message),
    );
    writeFileSync(join(dir, PAGES_MANIFEST), Buffer.alloc(2 * 1024 * 1024, 32));
    await assert.rejects(readManifest(dir), /cannot be used/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

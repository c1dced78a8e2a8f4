// The build reads the archive once and never holds it: with a 256 MiB archive the process's resident memory grows by
// far less than the archive (what a 16 GiB checkpoint needs to be buildable at all).
import assert from "node:assert/strict";
import { closeSync, mkdirSync, mkdtempSync, openSync, rmSync, writeFileSync, writeSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import { c as createTar } from "tar";
import { describeArchive } from "../../src/cli/checkpoint-image.js";
import { buildCheckpointImage } from "../../src/image/build.js";
import { parseReference } from "../../src/image/reference.js";
import { defaultArchiveFiles } from "../cli/fixtures.js";

const MiB = 2 ** 20;

test("a 256 MiB archive becomes an image while resident memory grows by under 96 MiB", async () => {
  const dir = mkdtempSync(join(tmpdir(), "kyb-big-"));
  try {
    const src = join(dir, "src");
    mkdirSync(join(src, "checkpoint"), { recursive: true });
    for (const [f, t] of Object.entries(defaultArchiveFiles())) writeFileSync(join(src, f), t);
    const pages = openSync(join(src, "checkpoint", "pages-1.img"), "w");
    const chunk = Buffer.alloc(MiB, 0x5a);
    for (let i = 0; i < 256; i++) writeSync(pages, chunk);
    closeSync(pages);
    const archive = join(dir, "big.tar");
    await createTar({ file: archive, cwd: src }, ["checkpoint", "config.dump", "spec.dump", "status.dump"]);
    rmSync(src, { recursive: true });
    global.gc?.();
    const base = process.memoryUsage().rss;
    let peak = base;
    const built = await buildCheckpointImage({
      archive,
      reference: parseReference("localhost:5555/k/big:1"),
      compression: "gzip",
      output: join(dir, "layout"),
      describe: (scan) => describeArchive(archive, 256 * MiB, scan),
      onProgress: () => {
        peak = Math.max(peak, process.memoryUsage().rss);
      },
    });
    assert.ok(built.archiveBytes > 256 * MiB);
    assert.ok(peak - base < 96 * MiB, `resident memory grew by ${Math.round((peak - base) / MiB)} MiB`);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

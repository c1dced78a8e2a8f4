/** CRIU image directories and page stores in temporary folders, for the page store's tests. */
import { createHash, randomBytes } from "node:crypto";
import { mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { PageStore } from "../../src/store/page-store.js";

export interface Scratch {
  dir: string;
  /** A directory made like CRIU's image directory: page images, pagemaps, a core image, kybernate.json. */
  imageDir(name?: string, pages?: Record<string, number>): { dir: string; pages: Record<string, Buffer> };
  store(): Promise<PageStore>;
  cleanup(): void;
}

export function scratch(base = tmpdir()): Scratch {
  const dir = mkdtempSync(join(base, "kyb-store-"));
  let n = 0;
  return {
    dir,
    imageDir(name = `images-${n++}`, pages = { "pages-1.img": 3 * 1024 * 1024 + 17, "pages-2.img": 4096 }) {
      const d = join(dir, name);
      mkdirSync(d, { recursive: true });
      const content: Record<string, Buffer> = {};
      for (const [file, size] of Object.entries(pages)) {
        content[file] = randomBytes(size);
        writeFileSync(join(d, file), content[file]);
      }
      writeFileSync(join(d, "pagemap-1.img"), "pagemap");
      writeFileSync(join(d, "core-1.img"), "core");
      writeFileSync(
        join(d, "kybernate.json"),
        JSON.stringify({
          schema: 1,
          kybernateVersion: "test",
          createdAt: new Date().toISOString(),
          containerId: "c0ffee",
          gpus: [{ uuid: "GPU-aaaaaaaa-1111-2222-3333-444444444444", name: "Fake GPU", memoryMiB: 1024 }],
          processes: [],
          vramBytesMoved: 32 * 1024 * 1024,
        }),
      );
      return { dir: d, pages: content };
    },
    store: () => PageStore.open(join(dir, "store")),
    cleanup: () => rmSync(dir, { recursive: true, force: true }),
  };
}

export const sha256 = (b: Buffer): string => createHash("sha256").update(b).digest("hex");

export const listing = (dir: string): string[] => readdirSync(dir).sort();

/**
 * One look at every entry of a CRI checkpoint archive while its bytes stream past: the small metadata files a
 * restore and the annotations need, the CRIU page images, and a refusal of what containerd would not restore
 * from an image (links, devices, paths outside the layer).
 */
import { Parser, type ReadEntry } from "tar";

/** The files read into memory; the rest of the archive only streams through. */
export const METADATA_ENTRIES = [
  "config.dump",
  "spec.dump",
  "status.dump",
  "checkpoint/kybernate.json",
] as const;
/** containerd's dump files are a few KiB; a bigger one means the archive is not what it claims to be. */
export const MAX_METADATA_BYTES = 8 * 2 ** 20;
/** containerd's checkpoint import keeps regular files and folders only (checkpointArchiveEntryAllowed). */
const ALLOWED = new Set(["File", "OldFile", "ContiguousFile", "Directory"]);

export interface ArchiveScan {
  files: Map<string, Buffer>;
  entries: number;
  /** CRIU's pages-N.img (the memory) and pagemap-N.img (which pages there are). */
  pageImages: number;
  pagemaps: number;
}

export class ArchiveRefused extends Error {
  override readonly name = "ArchiveRefused";
}

const entryName = (p: string): string => p.replace(/^(\.\/)+/, "").replace(/\/+$/, "");
const shown = (p: string): string => JSON.stringify(p.length > 120 ? `${p.slice(0, 120)}…` : p);

/** A sink for the archive's bytes that scans them; `done` settles once the tar's end is seen. */
export function archiveScanner(): { parser: Parser; done: Promise<ArchiveScan> } {
  const scan: ArchiveScan = { files: new Map(), entries: 0, pageImages: 0, pagemaps: 0 };
  const parser = new Parser({ strict: true });
  const done = new Promise<ArchiveScan>((resolve, reject) => {
    let failed = false;
    const fail = (err: Error) => {
      if (failed) return;
      failed = true;
      reject(err);
    };
    parser.on("entry", (entry: ReadEntry) => {
      scan.entries++;
      const name = entryName(entry.path);
      const problem = entryProblem(entry.type, name);
      if (problem) {
        fail(new ArchiveRefused(problem));
        entry.resume();
        return;
      }
      if (/^checkpoint\/pages-\d+\.img$/.test(name)) scan.pageImages++;
      if (/^checkpoint\/pagemap-\d+\.img$/.test(name)) scan.pagemaps++;
      if ((METADATA_ENTRIES as readonly string[]).includes(name) && entry.type !== "Directory") {
        if ((entry.size ?? 0) > MAX_METADATA_BYTES) {
          fail(new ArchiveRefused(`${name} is ${entry.size} bytes, far too large for checkpoint metadata`));
          entry.resume();
          return;
        }
        const chunks: Buffer[] = [];
        entry.on("data", (c: Buffer) => chunks.push(c));
        entry.on("end", () => scan.files.set(name, Buffer.concat(chunks)));
        return;
      }
      entry.resume();
    });
    parser.on("error", (err: Error) =>
      fail(
        new ArchiveRefused(
          `it is not a complete tar archive (${err.message}); give the .tar that kybernate checkpoint, crictl checkpoint or the kubelet wrote`,
        ),
      ),
    );
    parser.on("end", () => {
      if (scan.entries === 0) fail(new ArchiveRefused("it is empty or not a tar archive"));
      else if (!failed) resolve(scan);
    });
  });
  done.catch(() => undefined);
  return { parser, done };
}

function entryProblem(type: string, name: string): string | undefined {
  if (!ALLOWED.has(type))
    return `it holds a ${type} entry ${shown(name)}: a checkpoint archive has only regular files and folders, and containerd refuses any other entry in a checkpoint image`;
  if (!name || name.startsWith("/") || name.split("/").some((part) => part === ".."))
    return `it holds the entry ${shown(name)}, whose path leaves the archive`;
  return undefined;
}

import { writeFile } from "node:fs/promises";
import { join } from "node:path";
import { FileRefused, readSmallRegularFile } from "../host/files.js";

/**
 * The file kybernate leaves in CRIU's image directory in place of the page images it moved to the node's page
 * store. It travels in the archive's `checkpoint/` folder; a restore on the same node finds the pages by it.
 */
export const PAGES_MANIFEST = "kybernate-pages.json";

/** A few KiB for any container; anything near this is not kybernate's file. */
const MAX_MANIFEST_BYTES = 1024 * 1024;

/** CRIU's page images: the only files kybernate moves (pagemap and the rest stay, they are small). */
export const PAGE_IMAGE = /^pages-\d{1,10}\.img$/;

/** Checkpoint ids become directory names in the store: letters, digits, dash and underscore only. */
export const CHECKPOINT_ID = /^[0-9A-Za-z][0-9A-Za-z_-]{0,127}$/;

export interface PageFile {
  name: string;
  size: number;
  sha256: string;
}

export interface PagesManifest {
  schema: 1;
  checkpointId: string;
  /** The node whose page store holds the pages (its hostname). */
  node: string;
  createdAt: string;
  containerId: string;
  pod?: string;
  container?: string;
  files: PageFile[];
  /** What kybernate.json says of the GPUs, so that an operator can tell a thin archive's GPU by it alone. */
  gpu?: { driverVersion?: string; gpus: Array<{ uuid: string; name: string }>; vramBytesMoved?: number };
}

export const totalBytes = (m: Pick<PagesManifest, "files">): number =>
  m.files.reduce((sum, f) => sum + f.size, 0);

export async function writeManifest(imageDir: string, manifest: PagesManifest): Promise<string> {
  const path = join(imageDir, PAGES_MANIFEST);
  await writeFile(path, `${JSON.stringify(manifest, null, 2)}\n`, { mode: 0o644 });
  return path;
}

export function parseManifest(bytes: Buffer, where: string): PagesManifest {
  let value: unknown;
  try {
    value = JSON.parse(bytes.toString("utf8"));
  } catch {
    // V8's message quotes the text around the error: never put an archive's bytes into an error.
    throw new Error(`${where} is not JSON`);
  }
  const problem = manifestProblem(value);
  if (problem) throw new Error(`${where}: ${problem}`);
  return value as PagesManifest;
}

/**
 * The manifest in an image directory, or undefined when there is none (a self-contained checkpoint). It comes
 * from an archive that may come from anywhere: read as untrusted (no link followed, bounded, every field checked,
 * names that could leave the directory refused), and an error never quotes the content.
 */
export async function readManifest(imageDir: string): Promise<PagesManifest | undefined> {
  const path = join(imageDir, PAGES_MANIFEST);
  let bytes: Buffer;
  try {
    bytes = await readSmallRegularFile(path, MAX_MANIFEST_BYTES);
  } catch (error) {
    if (error instanceof FileRefused && error.problem === "missing") return undefined;
    throw new Error(`the checkpoint's page manifest cannot be used: ${(error as Error).message}`);
  }
  try {
    return parseManifest(bytes, path);
  } catch (error) {
    throw new Error(`the checkpoint's page manifest cannot be used: ${(error as Error).message}`);
  }
}

const MAX_TEXT = 256;
const MAX_FILES = 4096;

function textProblem(v: unknown, field: string): string | undefined {
  if (typeof v !== "string") return `field ${field} must be a string`;
  return v.length > MAX_TEXT ? `field ${field} must be at most ${MAX_TEXT} characters` : undefined;
}

/** The first problem of a parsed manifest (the whole sentence, naming the field), or undefined. */
export function manifestProblem(value: unknown): string | undefined {
  if (typeof value !== "object" || value === null || Array.isArray(value)) return "it is not a JSON object";
  const m = value as Record<string, unknown>;
  if (m.schema !== 1)
    return "field schema must be 1 (written by a newer kybernate? Upgrade kybernate on this node)";
  if (typeof m.checkpointId !== "string" || !CHECKPOINT_ID.test(m.checkpointId))
    return "field checkpointId must be letters, digits, - and _ (at most 128)";
  for (const field of ["node", "createdAt", "containerId"] as const) {
    const problem = textProblem(m[field], field);
    if (problem) return problem;
  }
  for (const field of ["pod", "container"] as const) {
    if (m[field] === undefined) continue;
    const problem = textProblem(m[field], field);
    if (problem) return problem;
  }
  if (!Array.isArray(m.files)) return "field files must be a list";
  if (m.files.length === 0 || m.files.length > MAX_FILES)
    return `field files must have 1 to ${MAX_FILES} entries`;
  const names = new Set<string>();
  for (const [i, f] of m.files.entries()) {
    if (typeof f !== "object" || f === null) return `field files[${i}] must be an object`;
    const file = f as Record<string, unknown>;
    if (typeof file.name !== "string" || !PAGE_IMAGE.test(file.name))
      return `field files[${i}].name must name a CRIU page image (pages-N.img)`;
    if (names.has(file.name)) return `field files[${i}].name repeats ${file.name}`;
    names.add(file.name);
    if (typeof file.size !== "number" || !Number.isSafeInteger(file.size) || file.size < 0)
      return `field files[${i}].size must be a whole number >= 0`;
    if (typeof file.sha256 !== "string" || !/^[0-9a-f]{64}$/.test(file.sha256))
      return `field files[${i}].sha256 must be 64 lowercase hex digits`;
  }
  if (m.gpu !== undefined && (typeof m.gpu !== "object" || m.gpu === null || Array.isArray(m.gpu)))
    return "field gpu must be an object";
  return undefined;
}

import { open } from "node:fs/promises";

/**
 * One small member of a tar archive, found by reading headers only and seeking over every other member's data:
 * a checkpoint archive holds gigabytes of page images, and NRI's CreateContainer has about two seconds. ustar
 * names (prefix + name), GNU long names and pax `path` records are understood. Returns undefined when the
 * member is not there, is larger than `maxBytes`, or more than `maxEntries` headers come first.
 */
export async function readTarMember(
  archive: string,
  member: string,
  { maxBytes = 1024 * 1024, maxEntries = 100_000 }: { maxBytes?: number; maxEntries?: number } = {},
): Promise<Buffer | undefined> {
  const want = normalize(member);
  const file = await open(archive, "r");
  try {
    const header = Buffer.alloc(512);
    let offset = 0;
    let longName: string | undefined;
    for (let entries = 0; entries < maxEntries; entries++) {
      const { bytesRead } = await file.read(header, 0, 512, offset);
      if (bytesRead < 512 || header.every((b) => b === 0)) return undefined;
      const size = parseSize(header.subarray(124, 136));
      if (size === undefined) return undefined;
      const type = String.fromCharCode(header[156] ?? 0);
      const data = offset + 512;
      offset = data + Math.ceil(size / 512) * 512;
      if (type === "L" || type === "x") {
        // The next header's name, from a GNU long-name member or a pax extended header.
        if (size > 64 * 1024) return undefined;
        const body = Buffer.alloc(size);
        await file.read(body, 0, size, data);
        longName = type === "L" ? cString(body) : paxPath(body.toString("utf8"));
        continue;
      }
      const name = longName ?? ustarName(header);
      longName = undefined;
      if (normalize(name) !== want || (type !== "0" && type !== "\0")) continue;
      if (size > maxBytes) return undefined;
      const body = Buffer.alloc(size);
      const read = await file.read(body, 0, size, data);
      return read.bytesRead === size ? body : undefined;
    }
    return undefined;
  } finally {
    await file.close();
  }
}

const normalize = (name: string): string => name.replace(/^(\.\/)+/, "").replace(/^\/+/, "");

function cString(bytes: Buffer): string {
  const nul = bytes.indexOf(0);
  return bytes.subarray(0, nul < 0 ? bytes.length : nul).toString("utf8");
}

function ustarName(header: Buffer): string {
  const name = cString(header.subarray(0, 100));
  const magic = header.subarray(257, 262).toString("latin1");
  const prefix = magic === "ustar" ? cString(header.subarray(345, 500)) : "";
  return prefix ? `${prefix}/${name}` : name;
}

/** Octal, or GNU base-256 for large sizes (high bit of the first byte set). */
function parseSize(field: Buffer): number | undefined {
  if (((field[0] ?? 0) & 0x80) !== 0) {
    let n = 0;
    for (let i = 1; i < field.length; i++) n = n * 256 + (field[i] ?? 0);
    return Number.isSafeInteger(n) ? n : undefined;
  }
  const text = cString(field).trim();
  if (text === "") return 0;
  const n = Number.parseInt(text, 8);
  return Number.isSafeInteger(n) && n >= 0 ? n : undefined;
}

function paxPath(records: string): string | undefined {
  for (const line of records.split("\n")) {
    const match = /^\d+ path=(.*)$/.exec(line);
    if (match) return match[1];
  }
  return undefined;
}

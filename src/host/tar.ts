// A tar reader and writer for CRI checkpoint archives: pull-based over a file handle, so a 100 GiB member streams
// through a bounded buffer, and small enough that the daemon and the NRI plugin can look into an archive without a
// tar library (the one place tar headers are parsed).
// Reads ustar, pax ('x' path, size, mtime) and GNU long names ('L'); writes ustar, with a pax header where a name
// or size does not fit: what Go's archive/tar (containerd, checkpointctl) reads.

import { constants } from "node:fs";
import type { FileHandle } from "node:fs/promises";
import { open } from "node:fs/promises";

export interface TarHeader {
  name: string;
  /** '0' file, '5' directory, …; ustar's typeflag. */
  type: string;
  size: number;
  mode: number;
  uid: number;
  gid: number;
  /** Seconds since the epoch. */
  mtime: number;
  uname: string;
  gname: string;
  linkname: string;
}

const BLOCK = 512;
const COPY_CHUNK = 8 * 1024 * 1024;
/** ustar's 11 octal digits of size: a member this large or larger needs a pax size record. */
const USTAR_MAX_SIZE = 0o77777777777;

export const normaliseName = (p: string): string => p.replace(/^(\.\/)+/, "").replace(/\/+$/, "");

/** Sequential reader: next() gives a member's header, then its data must be read (or skipped) before the next. */
export class TarReader {
  private offset = 0;
  private pendingData = 0;
  private readonly header = Buffer.alloc(BLOCK);

  private constructor(private readonly handle: FileHandle) {}

  /** Opens without blocking on a FIFO and refuses anything but a regular file (an archive path is input). */
  static async open(path: string): Promise<TarReader> {
    const handle = await open(path, constants.O_RDONLY | constants.O_NONBLOCK);
    try {
      if (!(await handle.stat()).isFile()) throw new Error(`${path} is not a regular file`);
    } catch (err) {
      await handle.close();
      throw err;
    }
    return new TarReader(handle);
  }

  /** Bytes consumed so far (for progress). */
  get position(): number {
    return this.offset;
  }

  async close(): Promise<void> {
    await this.handle.close();
  }

  async next(): Promise<TarHeader | undefined> {
    await this.skip();
    let pax: Record<string, string> = {};
    let longName: string | undefined;
    for (;;) {
      const { bytesRead } = await this.handle.read(this.header, 0, BLOCK, this.offset);
      if (bytesRead === 0 || this.header.every((b) => b === 0)) return undefined;
      if (bytesRead < BLOCK) throw new Error(`truncated tar header at byte ${this.offset}`);
      if (!checksumOk(this.header)) throw new Error(`bad tar header checksum at byte ${this.offset}`);
      this.offset += BLOCK;
      const h = this.header;
      const type = String.fromCharCode(h[156] || 48);
      const size = pax.size !== undefined ? Number(pax.size) : number(h.subarray(124, 136));
      if (type === "x" || type === "g" || type === "L") {
        if (size > 1024 * 1024) throw new Error(`a tar extended header of ${size} bytes at ${this.offset}`);
        const data = await this.readSmall(size);
        if (type === "L") longName = data.toString("utf8").replace(/\0+$/, "");
        if (type === "x") pax = { ...pax, ...parsePax(data) };
        continue;
      }
      const header: TarHeader = {
        name: pax.path ?? longName ?? ustarName(h),
        type,
        size,
        mode: number(h.subarray(100, 108)),
        uid: pax.uid !== undefined ? Number(pax.uid) : number(h.subarray(108, 116)),
        gid: pax.gid !== undefined ? Number(pax.gid) : number(h.subarray(116, 124)),
        mtime: pax.mtime !== undefined ? Math.floor(Number(pax.mtime)) : number(h.subarray(136, 148)),
        uname: pax.uname ?? text(h.subarray(265, 297)),
        gname: pax.gname ?? text(h.subarray(297, 329)),
        linkname: pax.linkpath ?? text(h.subarray(157, 257)),
      };
      // Links, devices, FIFOs and directories carry no data, whatever their size field says.
      this.pendingData = "123456".includes(type) ? 0 : size;
      return header;
    }
  }

  /** The current member's data, whole (for small members). */
  async readSmall(size = this.pendingData): Promise<Buffer> {
    const data = Buffer.alloc(size);
    let done = 0;
    while (done < size) {
      const { bytesRead } = await this.handle.read(data, done, size - done, this.offset + done);
      if (bytesRead === 0) throw new Error(`tar member truncated at byte ${this.offset + done}`);
      done += bytesRead;
    }
    this.offset += padded(size);
    if (size === this.pendingData) this.pendingData = 0;
    return data;
  }

  /** Streams the current member's data to `sink` in chunks (the same buffer is reused: copy what you keep). */
  async pipe(sink: (chunk: Buffer) => Promise<void> | void): Promise<void> {
    const size = this.pendingData;
    const buffer = Buffer.allocUnsafe(Math.min(COPY_CHUNK, Math.max(size, 1)));
    let done = 0;
    while (done < size) {
      const want = Math.min(buffer.length, size - done);
      const { bytesRead } = await this.handle.read(buffer, 0, want, this.offset + done);
      if (bytesRead === 0) throw new Error(`tar member truncated at byte ${this.offset + done}`);
      await sink(buffer.subarray(0, bytesRead));
      done += bytesRead;
    }
    this.offset += padded(size);
    this.pendingData = 0;
  }

  private async skip(): Promise<void> {
    this.offset += padded(this.pendingData);
    this.pendingData = 0;
  }
}

/** Sequential writer; finish() writes the two zero blocks that end a tar. */
export class TarWriter {
  private written = 0;

  private constructor(private readonly handle: FileHandle) {}

  /** Creates `path`, refusing one that exists. */
  static async create(path: string): Promise<TarWriter> {
    return new TarWriter(await open(path, "wx", 0o600));
  }

  get position(): number {
    return this.written;
  }

  async close(): Promise<void> {
    await this.handle.close();
  }

  /** A member's header; its data follows with write() and ends with endData(size). */
  async header(h: TarHeader): Promise<void> {
    const needsPax = h.size > USTAR_MAX_SIZE || !splitName(h.name) || Buffer.byteLength(h.linkname) > 100;
    if (needsPax) {
      const records: string[] = [];
      if (!splitName(h.name)) records.push(paxRecord("path", h.name));
      if (h.size > USTAR_MAX_SIZE) records.push(paxRecord("size", String(h.size)));
      if (Buffer.byteLength(h.linkname) > 100) records.push(paxRecord("linkpath", h.linkname));
      const body = Buffer.from(records.join(""), "utf8");
      await this.raw(
        ustarHeader({
          ...h,
          name: `PaxHeaders/${shortName(h.name)}`,
          type: "x",
          size: body.length,
          linkname: "",
        }),
      );
      await this.raw(body);
      await this.pad(body.length);
    }
    await this.raw(ustarHeader(h));
  }

  async write(chunk: Buffer): Promise<void> {
    await this.raw(chunk);
  }

  async endData(size: number): Promise<void> {
    await this.pad(size);
  }

  /** A whole small member. */
  async file(h: Omit<TarHeader, "size" | "type" | "linkname">, data: Buffer): Promise<void> {
    await this.header({ ...h, type: "0", size: data.length, linkname: "" });
    await this.write(data);
    await this.endData(data.length);
  }

  async finish(sync = true): Promise<void> {
    await this.raw(Buffer.alloc(BLOCK * 2));
    if (sync) await this.handle.sync();
  }

  private async raw(data: Buffer): Promise<void> {
    let done = 0;
    while (done < data.length) {
      const { bytesWritten } = await this.handle.write(data, done, data.length - done, null);
      done += bytesWritten;
    }
    this.written += data.length;
  }

  private async pad(size: number): Promise<void> {
    const rest = padded(size) - size;
    if (rest > 0) await this.raw(Buffer.alloc(rest));
  }
}

const padded = (size: number): number => Math.ceil(size / BLOCK) * BLOCK;

function number(field: Buffer): number {
  // GNU base-256 (sizes past 8 GiB from GNU tar): the first byte's high bit set, then big-endian bytes.
  if ((field[0] ?? 0) & 0x80) {
    let n = (field[0] ?? 0) & 0x7f;
    for (let i = 1; i < field.length; i++) n = n * 256 + (field[i] ?? 0);
    return n;
  }
  const t = text(field).trim();
  return t ? Number.parseInt(t, 8) : 0;
}

const text = (b: Buffer): string => {
  const end = b.indexOf(0);
  return b.subarray(0, end < 0 ? b.length : end).toString("utf8");
};

function ustarName(h: Buffer): string {
  const name = text(h.subarray(0, 100));
  const prefix = h.subarray(257, 262).toString("ascii") === "ustar" ? text(h.subarray(345, 500)) : "";
  return prefix ? `${prefix}/${name}` : name;
}

function checksumOk(h: Buffer): boolean {
  const stored = number(h.subarray(148, 156));
  let sum = 0;
  for (let i = 0; i < BLOCK; i++) sum += i >= 148 && i < 156 ? 32 : (h[i] ?? 0);
  return sum === stored;
}

/** pax records: "<len> <key>=<value>\n". */
function parsePax(data: Buffer): Record<string, string> {
  const out: Record<string, string> = {};
  let at = 0;
  while (at < data.length) {
    const space = data.indexOf(0x20, at);
    if (space < 0) break;
    const len = Number(data.subarray(at, space).toString("ascii"));
    if (!(len > 0)) break;
    const record = data.subarray(space + 1, at + len - 1).toString("utf8");
    const eq = record.indexOf("=");
    if (eq > 0) out[record.slice(0, eq)] = record.slice(eq + 1);
    at += len;
  }
  return out;
}

function paxRecord(key: string, value: string): string {
  const body = ` ${key}=${value}\n`;
  const bodyBytes = Buffer.byteLength(body);
  // The length field counts its own digits.
  let digits = 1;
  while (String(bodyBytes + digits).length !== digits) digits++;
  return `${bodyBytes + digits}${body}`;
}

/** ustar's name (100) and prefix (155), split at a slash; undefined when the name does not fit. */
function splitName(name: string): { name: string; prefix: string } | undefined {
  if (Buffer.byteLength(name) <= 100) return { name, prefix: "" };
  for (let i = name.lastIndexOf("/"); i > 0; i = name.lastIndexOf("/", i - 1)) {
    const prefix = name.slice(0, i);
    const rest = name.slice(i + 1);
    if (Buffer.byteLength(prefix) <= 155 && Buffer.byteLength(rest) <= 100 && rest)
      return { name: rest, prefix };
  }
  return undefined;
}

const shortName = (name: string): string => {
  const base = name.split("/").filter(Boolean).pop() ?? "member";
  return Buffer.byteLength(base) > 80 ? base.slice(0, 80) : base;
};

function octalField(value: number, width: number): string {
  return `${value.toString(8).padStart(width - 1, "0")}\0`;
}

function ustarHeader(h: TarHeader): Buffer {
  const b = Buffer.alloc(BLOCK);
  const parts = splitName(h.name) ?? { name: shortName(h.name), prefix: "" };
  b.write(parts.name, 0, 100, "utf8");
  b.write(octalField(h.mode & 0o7777, 8), 100, "ascii");
  b.write(octalField(Math.min(h.uid, 0o7777777), 8), 108, "ascii");
  b.write(octalField(Math.min(h.gid, 0o7777777), 8), 116, "ascii");
  b.write(octalField(Math.min(h.size, USTAR_MAX_SIZE), 12), 124, "ascii");
  b.write(octalField(Math.max(0, Math.min(h.mtime, 0o77777777777)), 12), 136, "ascii");
  b.write("        ", 148, "ascii");
  b.write(h.type, 156, "ascii");
  b.write(h.linkname.slice(0, 100), 157, 100, "utf8");
  b.write("ustar\0", 257, "ascii");
  b.write("00", 263, "ascii");
  b.write(h.uname.slice(0, 31), 265, 32, "utf8");
  b.write(h.gname.slice(0, 31), 297, 32, "utf8");
  b.write(parts.prefix, 345, 155, "utf8");
  let sum = 0;
  for (let i = 0; i < BLOCK; i++) sum += b[i] ?? 0;
  b.write(`${sum.toString(8).padStart(6, "0")}\0 `, 148, "ascii");
  return b;
}

export interface MemberLimits {
  /** A wanted member larger than this is reported in tooLarge, not read. */
  maxBytes?: number;
  /** Headers read at most (a hostile archive of tiny members must not keep the caller). */
  maxEntries?: number;
}

/**
 * Small regular members of a tar file, found by reading headers only and seeking over every other member's data: a
 * checkpoint archive holds gigabytes of page images, and NRI's CreateContainer has about two seconds. Stops once
 * every wanted member was seen. Throws when the file is not a readable tar.
 */
export async function readTarMembers(
  file: string,
  members: readonly string[],
  { maxBytes = 1024 * 1024, maxEntries = 100_000 }: MemberLimits = {},
): Promise<{ found: Map<string, Buffer>; tooLarge: Map<string, number> }> {
  const wanted = new Set(members.map(normaliseName));
  const found = new Map<string, Buffer>();
  const tooLarge = new Map<string, number>();
  const reader = await TarReader.open(file);
  try {
    for (let entries = 0; entries < maxEntries && found.size + tooLarge.size < wanted.size; entries++) {
      const h = await reader.next();
      if (!h) break;
      const name = normaliseName(h.name);
      if (h.type !== "0" || !wanted.has(name) || found.has(name)) continue;
      if (h.size > maxBytes) tooLarge.set(name, h.size);
      else found.set(name, await reader.readSmall());
    }
    return { found, tooLarge };
  } finally {
    await reader.close();
  }
}

/** One small regular member, or undefined when it is not there, is too large, or the file is no readable tar. */
export async function readTarMember(
  file: string,
  member: string,
  limits: MemberLimits = {},
): Promise<Buffer | undefined> {
  try {
    return (await readTarMembers(file, [member], limits)).found.get(normaliseName(member));
  } catch {
    return undefined;
  }
}

import { mkdtempSync, rmSync } from "node:fs";
import { connect, createServer, type Socket } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { HEADER_LENGTH, type MessageHeader } from "../../src/wire/ttrpc/header.js";
import {
  decodeRequest,
  decodeResponse,
  encodeRequest,
  encodeResponse,
} from "../../src/wire/ttrpc/messages.js";

export { decodeRequest, decodeResponse, encodeRequest, encodeResponse };

/** Two ends of a real unix socket (net.createServer on a temp path); close() removes everything. */
export async function unixSocketPair(): Promise<{ a: Socket; b: Socket; close(): void }> {
  const dir = mkdtempSync(join(tmpdir(), "kybernate-wire-"));
  const path = join(dir, "s.sock");
  const server = createServer();
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(path, resolve);
  });
  const accepted = new Promise<Socket>((resolve) => server.once("connection", resolve));
  const a = connect(path);
  await new Promise<void>((resolve, reject) => {
    a.once("connect", resolve);
    a.once("error", reject);
  });
  const b = await accepted;
  return {
    a,
    b,
    close() {
      a.destroy();
      b.destroy();
      server.close();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** Rejects with a message naming `what` if `promise` takes longer than `ms`: a test must never hang. */
export function within<T>(ms: number, what: string, promise: Promise<T>): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`test timeout: ${what} did not happen within ${ms} ms`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

/** A whole raw ttrpc message (header + data), for peers that misbehave on purpose. */
export function rawMessage(
  streamId: number,
  type: number,
  data: Uint8Array,
  flags = 0,
  dataLength = data.length,
): Buffer {
  const out = Buffer.alloc(HEADER_LENGTH + data.length);
  out.writeUInt32BE(dataLength, 0);
  out.writeUInt32BE(streamId, 4);
  out.writeUInt8(type, 8);
  out.writeUInt8(flags, 9);
  out.set(data, HEADER_LENGTH);
  return out;
}

export function rawRequest(
  streamId: number,
  service: string,
  method: string,
  payload: Uint8Array = new Uint8Array(0),
  timeoutNano = 0,
): Buffer {
  return rawMessage(streamId, 1, encodeRequest({ service, method, payload, timeoutNano, metadata: [] }));
}

export function rawResponse(streamId: number, payload: Uint8Array, code = 0, message = ""): Buffer {
  return rawMessage(streamId, 2, encodeResponse({ status: { code, message }, payload }));
}

/** Reads ttrpc messages off a socket with its own tiny parser, independent of the code under test. */
export class RawReader {
  private buffered = Buffer.alloc(0);
  private waiters: Array<() => void> = [];
  ended = false;

  constructor(socket: Socket) {
    socket.on("data", (chunk: Buffer) => {
      this.buffered = Buffer.concat([this.buffered, chunk]);
      this.wake();
    });
    socket.on("close", () => {
      this.ended = true;
      this.wake();
    });
  }

  async next(what = "a ttrpc message"): Promise<{ header: MessageHeader; data: Buffer }> {
    for (;;) {
      if (this.buffered.length >= HEADER_LENGTH) {
        const dataLength = this.buffered.readUInt32BE(0);
        if (this.buffered.length >= HEADER_LENGTH + dataLength) {
          const header = {
            dataLength,
            streamId: this.buffered.readUInt32BE(4),
            type: this.buffered.readUInt8(8),
            flags: this.buffered.readUInt8(9),
          };
          const data = this.buffered.subarray(HEADER_LENGTH, HEADER_LENGTH + dataLength);
          this.buffered = this.buffered.subarray(HEADER_LENGTH + dataLength);
          return { header, data };
        }
      }
      if (this.ended) throw new Error(`socket closed before ${what} arrived`);
      await within(3000, what, new Promise<void>((resolve) => this.waiters.push(resolve)));
    }
  }

  private wake(): void {
    const waiters = this.waiters;
    this.waiters = [];
    for (const w of waiters) w();
  }
}

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

export const text = (s: string): Uint8Array => new TextEncoder().encode(s);
export const str = (b: Uint8Array): string => new TextDecoder().decode(b);

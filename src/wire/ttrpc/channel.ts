import type { Duplex } from "node:stream";
import {
  decodeHeader,
  HEADER_LENGTH,
  isKnownMessageType,
  MAX_DATA_LENGTH,
  type MessageHeader,
  messageTypeName,
  writeHeader,
} from "./header.js";
import { Code, TtrpcError } from "./status.js";

/** One ttrpc message as read off the stream. */
export type IncomingMessage =
  | { header: MessageHeader; oversized: false; data: Buffer }
  /** Data above 4 MiB: skipped as it went by (like Go's ttrpc), so the stream stays in sync. */
  | { header: MessageHeader; oversized: true };

/** A transport that can say why it closed (the multiplexer's logical connections do). */
export interface HasCloseReason {
  readonly closeReason?: Error | undefined;
}

export interface ChannelEvents {
  onMessage(message: IncomingMessage): void;
  /** Called once, with the reason: peer closed, transport error, protocol violation or local close. */
  onClose(reason: Error): void;
}

/**
 * Reads and writes whole ttrpc messages over any Duplex (a plain socket or a multiplexer connection).
 * Each message is written with ONE write() call: the multiplexer relies on that to frame messages.
 */
export class MessageChannel {
  private readonly header = Buffer.alloc(HEADER_LENGTH);
  private headerFilled = 0;
  private current: MessageHeader | undefined;
  private chunks: Buffer[] = [];
  private received = 0;
  private closedReason: Error | undefined;

  constructor(
    private readonly conn: Duplex,
    private readonly events: ChannelEvents,
  ) {
    conn.on("data", (chunk: Buffer) => this.consume(chunk));
    conn.on("end", () => this.shutdown(this.peerClosedError()));
    conn.on("error", (err: Error) =>
      this.shutdown(new Error(`ttrpc: connection failed: ${err.message}`, { cause: err })),
    );
    conn.on("close", () => this.shutdown(this.peerClosedError()));
    if (conn.destroyed) queueMicrotask(() => this.shutdown(this.peerClosedError()));
  }

  get closed(): boolean {
    return this.closedReason !== undefined;
  }

  /** Why the channel closed, once it has. */
  get reason(): Error | undefined {
    return this.closedReason;
  }

  /**
   * Sends one message. Throws TtrpcError(RESOURCE_EXHAUSTED) for data above 4 MiB, as Go's ttrpc refuses
   * to send those, and TtrpcError(UNAVAILABLE) once the channel is closed.
   */
  send(streamId: number, type: number, flags: number, data: Uint8Array): void {
    if (data.length > MAX_DATA_LENGTH) {
      throw new TtrpcError(
        Code.RESOURCE_EXHAUSTED,
        `ttrpc: message length ${data.length} exceeds the maximum message size of ${MAX_DATA_LENGTH} bytes; send less data per call`,
      );
    }
    if (this.closedReason) {
      throw new TtrpcError(Code.UNAVAILABLE, this.closedReason.message, { cause: this.closedReason });
    }
    const message = Buffer.allocUnsafe(HEADER_LENGTH + data.length);
    writeHeader(message, { dataLength: data.length, streamId, type, flags });
    message.set(data, HEADER_LENGTH);
    this.conn.write(message);
  }

  /** Closes the transport; `reason` is what onClose reports. */
  close(reason = new Error("ttrpc: connection closed locally")): void {
    this.shutdown(reason);
    this.conn.destroy();
  }

  private peerClosedError(): Error {
    const transportReason = (this.conn as Duplex & HasCloseReason).closeReason;
    const where = this.current
      ? ` in the middle of a ${messageTypeName(this.current.type)} message on stream ${this.current.streamId} (got ${this.received} of ${this.current.dataLength} data bytes)`
      : this.headerFilled > 0
        ? ` in the middle of a message header (got ${this.headerFilled} of ${HEADER_LENGTH} bytes)`
        : "";
    return transportReason
      ? new Error(`ttrpc: connection closed${where}: ${transportReason.message}`, { cause: transportReason })
      : new Error(`ttrpc: the peer closed the connection${where}`);
  }

  private shutdown(reason: Error): void {
    if (this.closedReason) return;
    this.closedReason = reason;
    this.chunks = [];
    this.events.onClose(reason);
  }

  private consume(chunk: Buffer): void {
    let offset = 0;
    while (offset < chunk.length && !this.closedReason) {
      if (!this.current) {
        const take = Math.min(HEADER_LENGTH - this.headerFilled, chunk.length - offset);
        chunk.copy(this.header, this.headerFilled, offset, offset + take);
        this.headerFilled += take;
        offset += take;
        if (this.headerFilled < HEADER_LENGTH) return;
        this.headerFilled = 0;
        if (!this.startMessage(decodeHeader(this.header))) return;
        continue;
      }
      const header = this.current;
      const take = Math.min(header.dataLength - this.received, chunk.length - offset);
      if (header.dataLength <= MAX_DATA_LENGTH) this.chunks.push(chunk.subarray(offset, offset + take));
      this.received += take;
      offset += take;
      if (this.received === header.dataLength) this.finishMessage();
    }
  }

  /** Returns false when the header is unusable and the channel was closed. */
  private startMessage(header: MessageHeader): boolean {
    if (header.dataLength > MAX_DATA_LENGTH && !isKnownMessageType(header.type)) {
      // An unknown type with an absurd length is not a ttrpc peer: skipping gigabytes would only hang.
      this.close(
        new Error(
          `ttrpc: received a header that is not ttrpc (type ${messageTypeName(header.type)}, data length ${header.dataLength} > ${MAX_DATA_LENGTH}); the peer does not speak ttrpc — check the socket path`,
        ),
      );
      return false;
    }
    this.current = header;
    this.received = 0;
    this.chunks = [];
    if (header.dataLength === 0) this.finishMessage();
    return true;
  }

  private finishMessage(): void {
    const header = this.current;
    if (!header) return;
    this.current = undefined;
    const chunks = this.chunks;
    this.chunks = [];
    if (header.dataLength > MAX_DATA_LENGTH) {
      this.events.onMessage({ header, oversized: true });
      return;
    }
    const data = chunks.length === 1 ? (chunks[0] as Buffer) : Buffer.concat(chunks, header.dataLength);
    this.events.onMessage({ header, oversized: false, data });
  }
}

import type { Duplex } from "node:stream";
import { LengthPrefixedDecoder, type LengthPrefixedFormat } from "../length-prefixed.js";
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
  private readonly decoder: LengthPrefixedDecoder<MessageHeader>;
  private closedReason: Error | undefined;

  constructor(
    private readonly conn: Duplex,
    private readonly events: ChannelEvents,
  ) {
    this.decoder = new LengthPrefixedDecoder(MESSAGE_FORMAT, (header, data) =>
      events.onMessage(data ? { header, oversized: false, data } : { header, oversized: true }),
    );
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
    const partial = this.decoder.partial;
    const where = !partial
      ? ""
      : partial.header
        ? ` in the middle of a ${messageTypeName(partial.header.type)} message on stream ${partial.header.streamId} (got ${partial.bodyBytes} of ${partial.bodyLength} data bytes)`
        : ` in the middle of a message header (got ${partial.headerBytes} of ${HEADER_LENGTH} bytes)`;
    return transportReason
      ? new Error(`ttrpc: connection closed${where}: ${transportReason.message}`, { cause: transportReason })
      : new Error(`ttrpc: the peer closed the connection${where}`);
  }

  private shutdown(reason: Error): void {
    if (this.closedReason) return;
    this.closedReason = reason;
    this.decoder.stop();
    this.events.onClose(reason);
  }

  private consume(chunk: Buffer): void {
    try {
      this.decoder.push(chunk);
    } catch (error) {
      if (!(error instanceof NotTtrpcError)) throw error;
      this.close(error);
    }
  }
}

class NotTtrpcError extends Error {}

/**
 * ttrpc's framing. Data above 4 MiB of a known type is skipped as Go does (the stream stays in sync); an
 * unknown type announcing that much is not a ttrpc peer at all, and skipping gigabytes would only hang.
 */
const MESSAGE_FORMAT: LengthPrefixedFormat<MessageHeader> = {
  headerLength: HEADER_LENGTH,
  readHeader(bytes) {
    const header = decodeHeader(bytes);
    if (header.dataLength > MAX_DATA_LENGTH && !isKnownMessageType(header.type)) {
      throw new NotTtrpcError(
        `ttrpc: received a header that is not ttrpc (type ${messageTypeName(header.type)}, data length ${header.dataLength} > ${MAX_DATA_LENGTH}); the peer does not speak ttrpc — check the socket path`,
      );
    }
    return header;
  },
  lengthOf: (header) => header.dataLength,
  keepBody: (header) => header.dataLength <= MAX_DATA_LENGTH,
};

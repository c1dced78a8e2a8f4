/** How one length-prefixed format lays out its header: NRI's multiplexer frames and ttrpc messages. */
export interface LengthPrefixedFormat<H> {
  /** Fixed size of every header, in bytes. */
  readonly headerLength: number;
  /**
   * Decodes a complete header. Throwing refuses the stream: push() rethrows and the decoder stops, because
   * after a header that cannot be trusted no later byte can be placed.
   */
  readHeader(bytes: Buffer): H;
  /** Body length the header announces. */
  lengthOf(header: H): number;
  /**
   * false: the body is counted past without being kept (Go's ttrpc discards oversized messages that way, so
   * the stream stays in sync without holding megabytes). Default: every body is kept.
   */
  keepBody?(header: H): boolean;
}

/** Where the decoder stands inside an incomplete message; undefined between messages. */
export type PartialMessage<H> =
  | { header: undefined; headerBytes: number }
  | { header: H; bodyBytes: number; bodyLength: number };

/**
 * Cuts a byte stream into header + body messages whatever the chunking (one byte at a time or many messages
 * per chunk). A body that arrives in one chunk is handed out as a slice of it, without a copy.
 */
export class LengthPrefixedDecoder<H> {
  private readonly headerBuffer: Buffer;
  private headerFilled = 0;
  private header: H | undefined;
  private length = 0;
  private keep = true;
  private chunks: Buffer[] = [];
  private received = 0;
  private stopped = false;

  constructor(
    private readonly format: LengthPrefixedFormat<H>,
    /** `body` is undefined for a body keepBody() declined. */
    private readonly onMessage: (header: H, body: Buffer | undefined) => void,
  ) {
    this.headerBuffer = Buffer.alloc(format.headerLength);
  }

  /** Bytes of an incomplete message held or skipped so far; 0 between messages. */
  get partialBytes(): number {
    return this.header === undefined ? this.headerFilled : this.format.headerLength + this.received;
  }

  get partial(): PartialMessage<H> | undefined {
    if (this.header !== undefined) {
      return { header: this.header, bodyBytes: this.received, bodyLength: this.length };
    }
    return this.headerFilled > 0 ? { header: undefined, headerBytes: this.headerFilled } : undefined;
  }

  /** Drops what is held and ignores every later byte: the consumer closed, or a header was refused. */
  stop(): void {
    this.stopped = true;
    this.chunks = [];
  }

  push(chunk: Buffer): void {
    let offset = 0;
    while (offset < chunk.length && !this.stopped) {
      if (this.header === undefined) {
        const { headerLength } = this.format;
        const take = Math.min(headerLength - this.headerFilled, chunk.length - offset);
        chunk.copy(this.headerBuffer, this.headerFilled, offset, offset + take);
        this.headerFilled += take;
        offset += take;
        if (this.headerFilled < headerLength) return;
        this.headerFilled = 0;
        this.start();
        continue;
      }
      const take = Math.min(this.length - this.received, chunk.length - offset);
      if (this.keep) this.chunks.push(chunk.subarray(offset, offset + take));
      this.received += take;
      offset += take;
      if (this.received === this.length) this.finish(this.header);
    }
  }

  private start(): void {
    let header: H;
    try {
      header = this.format.readHeader(this.headerBuffer);
    } catch (error) {
      this.stop();
      throw error;
    }
    this.header = header;
    this.length = this.format.lengthOf(header);
    this.keep = this.format.keepBody?.(header) ?? true;
    this.received = 0;
    this.chunks = [];
    if (this.length === 0) this.finish(header);
  }

  private finish(header: H): void {
    const chunks = this.chunks;
    const body = !this.keep
      ? undefined
      : chunks.length === 1
        ? (chunks[0] as Buffer)
        : Buffer.concat(chunks, this.length);
    this.header = undefined;
    this.chunks = [];
    this.received = 0;
    this.onMessage(header, body);
  }
}

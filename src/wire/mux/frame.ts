import { LengthPrefixedDecoder, type LengthPrefixedFormat } from "../length-prefixed.js";

/** NRI multiplexer frames: `u32 connID | u32 payloadLength | payload`, big-endian (containerd/nri pkg/net/multiplex). */
const FRAME_HEADER_LENGTH = 8;

/** Largest payload the Go multiplexer writes: one whole ttrpc message (10-byte header + 4 MiB). */
export const MAX_FRAME_PAYLOAD = 10 + (4 << 20);

/**
 * The Go peer hands each frame to ttrpc's 4096-byte bufio.Reader as one Read: a frame that starts a message
 * must fit that buffer, while the rest of the message is read straight into a buffer of exactly its size.
 */
const PEER_READ_BUFFER = 4096;

export class FrameError extends Error {
  override readonly name = "FrameError";
}

export function encodeFrame(connId: number, payload: Uint8Array): Buffer {
  const frame = Buffer.allocUnsafe(FRAME_HEADER_LENGTH + payload.length);
  frame.writeUInt32BE(connId, 0);
  frame.writeUInt32BE(payload.length, 4);
  frame.set(payload, FRAME_HEADER_LENGTH);
  return frame;
}

/**
 * Frames one whole ttrpc message the way Go's ttrpc writes it through a 4096-byte bufio.Writer: frame 1 holds
 * the first min(4096, n) bytes, frame 2 the rest. Returns both frames in one buffer for a single socket write.
 */
export function frameMessage(connId: number, message: Uint8Array): Buffer {
  if (message.length > MAX_FRAME_PAYLOAD) {
    throw new FrameError(
      `NRI multiplexer: message of ${message.length} bytes exceeds the ${MAX_FRAME_PAYLOAD}-byte limit of the Go peer; send smaller messages`,
    );
  }
  const first = Math.min(PEER_READ_BUFFER, message.length);
  const rest = message.length - first;
  const out = Buffer.allocUnsafe(FRAME_HEADER_LENGTH + message.length + (rest > 0 ? FRAME_HEADER_LENGTH : 0));
  out.writeUInt32BE(connId, 0);
  out.writeUInt32BE(first, 4);
  out.set(message.subarray(0, first), FRAME_HEADER_LENGTH);
  if (rest > 0) {
    const at = FRAME_HEADER_LENGTH + first;
    out.writeUInt32BE(connId, at);
    out.writeUInt32BE(rest, at + 4);
    out.set(message.subarray(first), at + FRAME_HEADER_LENGTH);
  }
  return out;
}

interface FrameHeader {
  connId: number;
  length: number;
}

function readFrameHeader(bytes: Buffer): FrameHeader {
  const connId = bytes.readUInt32BE(0);
  const length = bytes.readUInt32BE(4);
  if (length > MAX_FRAME_PAYLOAD) {
    throw new FrameError(
      `NRI multiplexer: frame for connection ${connId} announces ${length} bytes, above the ${MAX_FRAME_PAYLOAD}-byte limit; the peer is not an NRI multiplexer (check the socket path)`,
    );
  }
  return { connId, length };
}

const FRAME_FORMAT: LengthPrefixedFormat<FrameHeader> = {
  headerLength: FRAME_HEADER_LENGTH,
  readHeader: readFrameHeader,
  lengthOf: (header) => header.length,
};

/**
 * Cuts a byte stream into frames, whatever the chunking (one byte at a time or many frames per chunk).
 * push() throws FrameError for a length no NRI peer sends, which means the stream is not NRI at all.
 */
export class FrameDecoder extends LengthPrefixedDecoder<FrameHeader> {
  constructor(onFrame: (connId: number, payload: Buffer) => void) {
    // Frames keep every body, so `payload` is always set.
    super(FRAME_FORMAT, (header, payload) => {
      if (payload) onFrame(header.connId, payload);
    });
  }
}

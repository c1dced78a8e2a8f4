/** ttrpc's fixed 10-byte message header: `u32 dataLen | u32 streamID | u8 type | u8 flags`, big-endian. */
export const HEADER_LENGTH = 10;

/** Largest data length a ttrpc peer accepts (containerd/ttrpc messageLengthMax). */
export const MAX_DATA_LENGTH = 4 << 20;

export const MessageType = {
  REQUEST: 1,
  RESPONSE: 2,
  DATA: 3,
} as const;

export type MessageType = (typeof MessageType)[keyof typeof MessageType];

export interface MessageHeader {
  dataLength: number;
  streamId: number;
  type: number;
  flags: number;
}

export function isKnownMessageType(type: number): type is MessageType {
  return type === MessageType.REQUEST || type === MessageType.RESPONSE || type === MessageType.DATA;
}

export function messageTypeName(type: number): string {
  switch (type) {
    case MessageType.REQUEST:
      return "request";
    case MessageType.RESPONSE:
      return "response";
    case MessageType.DATA:
      return "data";
    default:
      return `unknown(0x${type.toString(16).padStart(2, "0")})`;
  }
}

/** Writes the header into `target` at `offset` (callers build header and data in one buffer). */
export function writeHeader(target: Buffer, header: MessageHeader, offset = 0): void {
  target.writeUInt32BE(header.dataLength, offset);
  target.writeUInt32BE(header.streamId, offset + 4);
  target.writeUInt8(header.type, offset + 8);
  target.writeUInt8(header.flags, offset + 9);
}

export function encodeHeader(header: MessageHeader): Buffer {
  const out = Buffer.allocUnsafe(HEADER_LENGTH);
  writeHeader(out, header);
  return out;
}

export function decodeHeader(bytes: Uint8Array): MessageHeader {
  if (bytes.length < HEADER_LENGTH) {
    throw new RangeError(`ttrpc header needs ${HEADER_LENGTH} bytes, got ${bytes.length}`);
  }
  const view = Buffer.from(bytes.buffer, bytes.byteOffset, HEADER_LENGTH);
  return {
    dataLength: view.readUInt32BE(0),
    streamId: view.readUInt32BE(4),
    type: view.readUInt8(8),
    flags: view.readUInt8(9),
  };
}

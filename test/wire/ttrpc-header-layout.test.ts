import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { decodeHeader, encodeHeader, MAX_DATA_LENGTH, MessageType } from "../../src/wire/ttrpc/header.js";

describe("ttrpc header: u32 dataLen | u32 streamID | u8 type | u8 flags, big-endian", () => {
  const cases = [
    {
      header: { dataLength: 0x01020304, streamId: 5, type: MessageType.RESPONSE, flags: 4 },
      wire: "01020304000000050204",
    },
    {
      header: { dataLength: 0, streamId: 1, type: MessageType.REQUEST, flags: 0 },
      wire: "00000000000000010100",
    },
    {
      header: { dataLength: MAX_DATA_LENGTH, streamId: 0xffffffff, type: MessageType.DATA, flags: 1 },
      wire: "00400000ffffffff0301",
    },
  ];
  for (const c of cases) {
    it(`encodes and decodes ${c.wire}`, () => {
      assert.equal(encodeHeader(c.header).toString("hex"), c.wire);
      assert.deepEqual(decodeHeader(Buffer.from(c.wire, "hex")), c.header);
    });
  }

  it("refuses to decode fewer than 10 bytes", () => {
    assert.throws(() => decodeHeader(new Uint8Array(9)), /needs 10 bytes, got 9/);
  });
});

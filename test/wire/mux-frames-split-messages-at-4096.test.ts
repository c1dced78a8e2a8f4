import assert from "node:assert/strict";
import { describe, it } from "node:test";
import {
  encodeFrame,
  FrameDecoder,
  FrameError,
  frameMessage,
  MAX_FRAME_PAYLOAD,
} from "../../src/wire/mux/frame.js";

function message(length: number): Buffer {
  const out = Buffer.alloc(length);
  for (let i = 0; i < length; i++) out[i] = i % 251;
  return out;
}

function frameHeader(connId: number, length: number): Buffer {
  const h = Buffer.alloc(8);
  h.writeUInt32BE(connId, 0);
  h.writeUInt32BE(length, 4);
  return h;
}

describe("frameMessage: the first frame of a message fits the Go peer's 4096-byte read buffer", () => {
  const cases = [
    { name: "a bare 10-byte header", length: 10, frames: [10] },
    { name: "a message one byte short of the buffer", length: 4095, frames: [4095] },
    { name: "a message exactly the buffer size", length: 4096, frames: [4096] },
    { name: "a message one byte over", length: 4097, frames: [4096, 1] },
    { name: "a 1 MiB message", length: 1 << 20, frames: [4096, (1 << 20) - 4096] },
    {
      name: "the largest ttrpc message (10 + 4 MiB)",
      length: MAX_FRAME_PAYLOAD,
      frames: [4096, MAX_FRAME_PAYLOAD - 4096],
    },
  ];
  for (const c of cases) {
    it(`${c.name} → frames of ${c.frames.join(" + ")} bytes, byte for byte`, () => {
      const msg = message(c.length);
      const wire = frameMessage(2, msg);
      const expected: Buffer[] = [];
      let at = 0;
      for (const size of c.frames) {
        expected.push(frameHeader(2, size), msg.subarray(at, at + size));
        at += size;
      }
      assert.ok(Buffer.concat(expected).equals(wire), "frames differ from header+slice layout");
      assert.equal(wire.length, c.length + 8 * c.frames.length);
    });
  }

  it("refuses a message the Go peer would refuse, naming the limit", () => {
    assert.throws(
      () => frameMessage(1, Buffer.alloc(MAX_FRAME_PAYLOAD + 1)),
      (err: Error) => {
        assert.ok(err instanceof FrameError);
        assert.match(err.message, /4194315 bytes exceeds the 4194314-byte limit/);
        return true;
      },
    );
  });
});

describe("FrameDecoder reassembles frames whatever the chunking", () => {
  const frames = [
    { connId: 1, payload: message(3) },
    { connId: 2, payload: message(0) },
    { connId: 7, payload: message(5000) },
    { connId: 0xffffffff, payload: message(17) },
  ];
  const wire = Buffer.concat(frames.map((f) => encodeFrame(f.connId, f.payload)));

  const chunkings: Array<{ name: string; chunks: (b: Buffer) => Buffer[] }> = [
    { name: "all frames in one chunk", chunks: (b) => [b] },
    { name: "a 1-byte trickle", chunks: (b) => [...b].map((x) => Buffer.from([x])) },
    { name: "7-byte chunks (headers split)", chunks: (b) => split(b, 7) },
    { name: "chunks of 4099 bytes", chunks: (b) => split(b, 4099) },
  ];
  for (const c of chunkings) {
    it(c.name, () => {
      const got: Array<{ connId: number; payload: Buffer }> = [];
      const decoder = new FrameDecoder((connId, payload) =>
        got.push({ connId, payload: Buffer.from(payload) }),
      );
      for (const chunk of c.chunks(wire)) decoder.push(chunk);
      assert.equal(got.length, frames.length);
      frames.forEach((f, i) => {
        assert.equal(got[i]?.connId, f.connId);
        assert.ok(got[i]?.payload.equals(f.payload), `payload ${i} differs`);
      });
      assert.equal(decoder.partialBytes, 0);
    });
  }

  it("reports a partial frame while one is incomplete", () => {
    const decoder = new FrameDecoder(() => assert.fail("no frame should complete"));
    decoder.push(encodeFrame(1, message(100)).subarray(0, 50));
    assert.equal(decoder.partialBytes, 50);
  });

  it("rejects a frame length no NRI peer sends (garbage) with a clear error", () => {
    const decoder = new FrameDecoder(() => assert.fail("no frame expected"));
    assert.throws(
      () => decoder.push(Buffer.from("HTTP/1.1 400 Bad Request\r\n")),
      /announces \d+ bytes, above the 4194314-byte limit; the peer is not an NRI multiplexer/,
    );
  });
});

function split(b: Buffer, size: number): Buffer[] {
  const out: Buffer[] = [];
  for (let i = 0; i < b.length; i += size) out.push(b.subarray(i, i + size));
  return out;
}

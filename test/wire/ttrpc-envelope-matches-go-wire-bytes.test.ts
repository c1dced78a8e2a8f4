import assert from "node:assert/strict";
import { describe, it } from "node:test";
import {
  decodeRequest,
  decodeResponse,
  encodeRequest,
  encodeResponse,
} from "../../src/wire/ttrpc/messages.js";

// Bytes written by hand from containerd/ttrpc request.proto field numbers and protobuf wire rules.
const hex = (s: string): Buffer => Buffer.from(s.replace(/\s+/g, ""), "hex");

describe("ttrpc envelope messages use the Go field numbers", () => {
  it("Request{service, method, payload, timeout_nano, metadata} encodes byte for byte", () => {
    const bytes = encodeRequest({
      service: "a",
      method: "b",
      payload: new Uint8Array([1]),
      timeoutNano: 1000,
      metadata: [{ key: "k", value: "v" }],
    });
    assert.equal(
      Buffer.from(bytes).toString("hex"),
      hex("0a0161 120162 1a0101 20e807 2a06 0a016b 120176").toString("hex"),
    );
  });

  it("Request decodes back, and a negative timeout_nano survives (int64, ten-byte varint)", () => {
    const request = {
      service: "s",
      method: "m",
      payload: new Uint8Array([9, 8]),
      timeoutNano: -1,
      metadata: [],
    };
    const decoded = decodeRequest(encodeRequest(request));
    assert.equal(decoded.timeoutNano, -1);
    assert.deepEqual([...decoded.payload], [9, 8]);
    assert.equal(decoded.service, "s");
  });

  const responses = [
    { name: "an error status", wire: "0a05 080c 120178", status: { code: 12, message: "x" }, payload: [] },
    {
      name: "OK with a payload and an empty status",
      wire: "0a00 12020102",
      status: { code: 0, message: "" },
      payload: [1, 2],
    },
    { name: "no status at all (Go treats it as OK)", wire: "12020102", status: undefined, payload: [1, 2] },
    {
      name: "status details (google.protobuf.Any) skipped",
      wire: "0a0b 0805 120178 1a04 0a026162",
      status: { code: 5, message: "x" },
      payload: [],
    },
  ];
  for (const r of responses) {
    it(`Response with ${r.name} decodes`, () => {
      const decoded = decodeResponse(hex(r.wire));
      assert.deepEqual(decoded.status, r.status);
      assert.deepEqual([...decoded.payload], r.payload);
    });
  }

  it("Response encodes an error status as Go's server does", () => {
    const bytes = encodeResponse({ status: { code: 12, message: "x" }, payload: new Uint8Array(0) });
    assert.equal(Buffer.from(bytes).toString("hex"), "0a05080c120178");
  });
});

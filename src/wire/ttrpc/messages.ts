import { join } from "node:path";
import protobuf from "protobufjs";
import { protoDir } from "../../base/paths.js";

// Loaded once at import: the envelope is tiny and every ttrpc message goes through it.
const root = protobuf.loadSync(join(protoDir, "ttrpc", "ttrpc.proto"));
const RequestType = root.lookupType("ttrpc.Request");
const ResponseType = root.lookupType("ttrpc.Response");

const toObjectOptions: protobuf.IConversionOptions = { longs: Number, defaults: true, arrays: true };

export interface KeyValue {
  key: string;
  value: string;
}

export interface Request {
  service: string;
  method: string;
  payload: Uint8Array;
  /** Relative deadline in nanoseconds; 0: none. Values beyond 2^53 lose precision, which no deadline needs. */
  timeoutNano: number;
  metadata: KeyValue[];
}

export interface Status {
  code: number;
  message: string;
}

export interface Response {
  /** Absent when the peer sent none; Go's ttrpc client treats that as OK. */
  status?: Status;
  payload: Uint8Array;
}

export function encodeRequest(request: Request): Uint8Array {
  return RequestType.encode(
    RequestType.fromObject({
      service: request.service,
      method: request.method,
      payload: request.payload,
      timeoutNano: request.timeoutNano,
      metadata: request.metadata,
    }),
  ).finish();
}

export function decodeRequest(bytes: Uint8Array): Request {
  const obj = RequestType.toObject(RequestType.decode(bytes), toObjectOptions);
  return {
    service: String(obj.service),
    method: String(obj.method),
    payload: obj.payload as Uint8Array,
    timeoutNano: Number(obj.timeoutNano),
    metadata: (obj.metadata as KeyValue[]).map((kv) => ({ key: String(kv.key), value: String(kv.value) })),
  };
}

export function encodeResponse(response: Response): Uint8Array {
  return ResponseType.encode(
    ResponseType.fromObject({
      status: response.status,
      payload: response.payload,
    }),
  ).finish();
}

export function decodeResponse(bytes: Uint8Array): Response {
  // No defaults: an absent status must stay distinguishable from an explicit one.
  const obj = ResponseType.toObject(ResponseType.decode(bytes), { ...toObjectOptions, defaults: false });
  const status = obj.status as { code?: number; message?: string } | undefined;
  return {
    status:
      status === undefined || status === null
        ? undefined
        : { code: Number(status.code ?? 0), message: String(status.message ?? "") },
    payload: (obj.payload as Uint8Array | undefined) ?? new Uint8Array(0),
  };
}

import { join } from "node:path";
import protobuf from "protobufjs";
import { protoDir } from "../base/paths.js";

const PACKAGE = "nri.pkg.api.v1alpha1";
export const PLUGIN_SERVICE = `${PACKAGE}.Plugin`;
export const RUNTIME_SERVICE = `${PACKAGE}.Runtime`;

let root: protobuf.Root | undefined;

function messageType(name: string): protobuf.Type {
  root ??= protobuf.loadSync(join(protoDir, "nri", "api.proto"));
  return root.lookupType(`${PACKAGE}.${name}`);
}

/** Decodes with defaults filled in, so handlers never see undefined maps or lists. */
export function decode<T>(typeName: string, bytes: Uint8Array): T {
  const type = messageType(typeName);
  return type.toObject(type.decode(bytes), {
    longs: Number,
    enums: Number,
    defaults: true,
    arrays: true,
    objects: true,
  }) as T;
}

export function encode(typeName: string, value: object): Uint8Array {
  const type = messageType(typeName);
  return type.encode(type.fromObject(value)).finish();
}

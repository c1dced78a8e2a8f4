/** Every call the CRI client makes exists in the project's CRI proto, in the service the client sends it to. */
import assert from "node:assert/strict";
import { join } from "node:path";
import { test } from "node:test";
import protobuf from "protobufjs";
import { protoDir } from "../../src/base/paths.js";
import { RPC_SERVICE } from "../../src/cri/client.js";

test("each CRI call of the client is an RPC of its service in proto/cri/api.proto", () => {
  const root = protobuf.loadSync(join(protoDir, "cri", "api.proto"));
  for (const [rpc, service] of Object.entries(RPC_SERVICE)) {
    const methods = root.lookupService(`runtime.v1.${service}`).methods;
    assert.ok(Object.hasOwn(methods, rpc), `${service}/${rpc} is missing from proto/cri/api.proto`);
  }
});

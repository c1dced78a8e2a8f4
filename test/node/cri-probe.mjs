// Minimal CRI calls for the test node's scripts, which run before the project is built (so plain JS).
// Usage: node test/node/cri-probe.mjs SOCKET version | pull IMAGE
// Exit 0 on success; on failure the gRPC error goes to stderr and the exit code is 1.
import { fileURLToPath } from "node:url";
import grpc from "@grpc/grpc-js";
import protoLoader from "@grpc/proto-loader";

const [socket, command, arg] = process.argv.slice(2);
// The project's own CRI proto: it is in the tree wherever the scripts are, also on a node given its binaries.
const proto = fileURLToPath(new URL("../../proto/cri/api.proto", import.meta.url));
const def = protoLoader.loadSync(proto, { keepCase: true, longs: String, defaults: true });
const v1 = grpc.loadPackageDefinition(def).runtime.v1;
const address = `unix://${socket}`;
const deadline = () => Date.now() + (command === "pull" ? 120_000 : 2_000);

function call(client, method, request) {
  return new Promise((resolve, reject) => {
    client[method](request, { deadline: deadline() }, (err, res) => (err ? reject(err) : resolve(res)));
  });
}

try {
  if (command === "version") {
    const rt = new v1.RuntimeService(address, grpc.credentials.createInsecure());
    const res = await call(rt, "Version", { version: "v1" });
    console.log(`${res.runtime_name} ${res.runtime_version} (CRI ${res.runtime_api_version})`);
  } else if (command === "pull" && arg) {
    const img = new v1.ImageService(address, grpc.credentials.createInsecure());
    const res = await call(img, "PullImage", { image: { image: arg } });
    console.log(res.image_ref);
  } else {
    throw new Error(`unknown command "${command ?? ""}"; use: version | pull IMAGE`);
  }
  process.exit(0);
} catch (err) {
  console.error(`CRI ${command} on ${address} failed: ${err.message}`);
  process.exit(1);
}

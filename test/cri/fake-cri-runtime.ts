// A CRI runtime stand-in on a unix socket in a temp dir: records each request, answers with canned replies.
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import {
  loadPackageDefinition,
  Server,
  ServerCredentials,
  type ServerUnaryCall,
  type ServiceError,
  type sendUnaryData,
} from "@grpc/grpc-js";
import { loadSync } from "@grpc/proto-loader";
import { protoDir } from "../../src/base/paths.js";

export type Reply =
  | object
  | ServiceError
  | ((req: unknown) => object | ServiceError | Promise<object | ServiceError>);

export interface FakeRuntime {
  socket: string;
  /** Requests seen, per RPC name, in arrival order. */
  seen: Record<string, unknown[]>;
  stop(): Promise<void>;
}

/** `replies` by RPC name; an RPC without a reply is left unimplemented (the server answers UNIMPLEMENTED). */
export async function startFakeRuntime(replies: Record<string, Reply>): Promise<FakeRuntime> {
  const dir = mkdtempSync(join(tmpdir(), "kybernate-fake-cri-"));
  const socket = join(dir, "cri.sock");
  const def = loadSync("cri/api.proto", {
    includeDirs: [protoDir],
    longs: String,
    enums: String,
    defaults: true,
  });
  // biome-ignore lint/suspicious/noExplicitAny: the loaded package is an untyped namespace tree.
  const v1 = (loadPackageDefinition(def) as any).runtime.v1;
  const seen: Record<string, unknown[]> = {};
  const server = new Server();
  for (const svc of ["RuntimeService", "ImageService"]) {
    const impl: Record<
      string,
      (call: ServerUnaryCall<unknown, unknown>, cb: sendUnaryData<unknown>) => void
    > = {};
    for (const name of Object.keys(v1[svc].service)) {
      const reply = replies[name];
      if (reply === undefined) continue;
      impl[name] = (call, cb) => {
        const list = seen[name] ?? [];
        list.push(call.request);
        seen[name] = list;
        Promise.resolve(typeof reply === "function" ? reply(call.request) : reply).then((r) =>
          "code" in r ? cb(r as ServiceError) : cb(null, r),
        );
      };
    }
    server.addService(v1[svc].service, impl);
  }
  await new Promise<void>((resolve, reject) =>
    server.bindAsync(`unix://${socket}`, ServerCredentials.createInsecure(), (err) =>
      err ? reject(err) : resolve(),
    ),
  );
  return {
    socket,
    seen,
    stop: async () => {
      server.forceShutdown();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

export function grpcError(code: number, details: string): ServiceError {
  return Object.assign(new Error(details), { code, details, metadata: undefined }) as unknown as ServiceError;
}

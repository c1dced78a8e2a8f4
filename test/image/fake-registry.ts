// An in-memory registry speaking enough of the distribution API for the client's unit tests: uploads (POST,
// streamed PATCH, PUT with digest, which it verifies), blobs, manifests, and Basic or Bearer auth.
import { createHash, randomUUID } from "node:crypto";
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";

export interface FakeRegistry {
  url: string;
  host: string;
  blobs: Map<string, Buffer>;
  manifests: Map<string, { body: Buffer; type: string }>;
  /** "METHOD path" of every request, auth header presence appended as " +auth". */
  log: string[];
  /** Largest body chunk the server received in one piece: a streamed upload arrives in pieces. */
  patchChunks: number[];
  stop(): Promise<void>;
}

export async function startFakeRegistry(
  auth:
    | { kind: "none" }
    | { kind: "basic"; user: string; password: string }
    | { kind: "bearer"; user: string; password: string } = {
    kind: "none",
  },
  /** Cut a blob upload's connection once it has carried this many bytes (a registry or network going away). */
  dropPatchAfter?: number,
): Promise<FakeRegistry> {
  const blobs = new Map<string, Buffer>();
  const manifests = new Map<string, { body: Buffer; type: string }>();
  const uploads = new Map<string, Buffer[]>();
  const log: string[] = [];
  const patchChunks: number[] = [];
  const token = `tok-${randomUUID()}`;
  let url = "";
  const basic = (user: string, password: string) =>
    `Basic ${Buffer.from(`${user}:${password}`).toString("base64")}`;

  const authorized = (req: IncomingMessage): boolean => {
    if (auth.kind === "none") return true;
    if (auth.kind === "basic") return req.headers.authorization === basic(auth.user, auth.password);
    return req.headers.authorization === `Bearer ${token}`;
  };
  const handler = (req: IncomingMessage, res: ServerResponse, body: Buffer) => {
    const u = new URL(req.url ?? "/", url);
    log.push(`${req.method} ${u.pathname}${req.headers.authorization ? " +auth" : ""}`);
    if (u.pathname === "/token") {
      if (auth.kind !== "bearer" || req.headers.authorization !== basic(auth.user, auth.password)) {
        res.writeHead(401).end();
        return;
      }
      res.writeHead(200, { "content-type": "application/json" }).end(JSON.stringify({ token }));
      return;
    }
    if (!authorized(req)) {
      const challenge =
        auth.kind === "basic" ? 'Basic realm="fake"' : `Bearer realm="${url}/token",service="fake"`;
      res.writeHead(401, { "www-authenticate": challenge, "content-type": "application/json" });
      res.end(JSON.stringify({ errors: [{ code: "UNAUTHORIZED", message: "authentication required" }] }));
      return;
    }
    let m = /^\/v2\/(.+)\/blobs\/uploads\/$/.exec(u.pathname);
    if (m && req.method === "POST") {
      const id = randomUUID();
      uploads.set(id, []);
      res.writeHead(202, { location: `/v2/${m[1]}/blobs/uploads/${id}?state=x` }).end();
      return;
    }
    m = /^\/v2\/(.+)\/blobs\/uploads\/([0-9a-f-]+)$/.exec(u.pathname);
    if (m) {
      const parts = uploads.get(m[2] ?? "");
      if (!parts) {
        res.writeHead(404).end();
        return;
      }
      if (req.method === "PATCH") {
        parts.push(body);
        res.writeHead(202, { location: `/v2/${m[1]}/blobs/uploads/${m[2]}?state=y` }).end();
        return;
      }
      if (req.method === "DELETE") {
        uploads.delete(m[2] ?? "");
        res.writeHead(204).end();
        return;
      }
      if (req.method === "PUT") {
        const all = Buffer.concat([...parts, body]);
        const digest = `sha256:${createHash("sha256").update(all).digest("hex")}`;
        if (u.searchParams.get("digest") !== digest) {
          res.writeHead(400, { "content-type": "application/json" });
          res.end(
            JSON.stringify({
              errors: [{ code: "DIGEST_INVALID", message: "provided digest did not match uploaded content" }],
            }),
          );
          return;
        }
        blobs.set(digest, all);
        uploads.delete(m[2] ?? "");
        res.writeHead(201, { "docker-content-digest": digest }).end();
        return;
      }
    }
    m = /^\/v2\/(.+)\/blobs\/(sha256:[0-9a-f]{64})$/.exec(u.pathname);
    if (m) {
      const blob = blobs.get(m[2] ?? "");
      if (!blob) {
        res.writeHead(404).end();
        return;
      }
      res.writeHead(200, { "content-length": blob.length });
      res.end(req.method === "HEAD" ? undefined : blob);
      return;
    }
    m = /^\/v2\/(.+)\/manifests\/([^/]+)$/.exec(u.pathname);
    if (m) {
      const key = `${m[1]}:${m[2]}`;
      if (req.method === "PUT") {
        const digest = `sha256:${createHash("sha256").update(body).digest("hex")}`;
        const entry = { body, type: String(req.headers["content-type"]) };
        manifests.set(key, entry);
        manifests.set(`${m[1]}:${digest}`, entry);
        res.writeHead(201, { "docker-content-digest": digest }).end();
        return;
      }
      const found = manifests.get(key);
      if (!found) {
        res.writeHead(404, { "content-type": "application/json" });
        res.end(JSON.stringify({ errors: [{ code: "MANIFEST_UNKNOWN", message: "manifest unknown" }] }));
        return;
      }
      const digest = `sha256:${createHash("sha256").update(found.body).digest("hex")}`;
      res.writeHead(200, { "content-type": found.type, "docker-content-digest": digest }).end(found.body);
      return;
    }
    res.writeHead(404).end();
  };
  const server: Server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    let received = 0;
    req.on("data", (c: Buffer) => {
      chunks.push(c);
      received += c.length;
      if (req.method === "PATCH") patchChunks.push(c.length);
      if (req.method === "PATCH" && dropPatchAfter !== undefined && received > dropPatchAfter)
        req.socket.destroy();
    });
    req.on("end", () => handler(req, res, Buffer.concat(chunks)));
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as { port: number };
  url = `http://127.0.0.1:${port}`;
  return {
    url,
    host: `127.0.0.1:${port}`,
    blobs,
    manifests,
    log,
    patchChunks,
    stop: () => new Promise((resolve) => server.close(() => resolve())),
  };
}

/**
 * A small client for the OCI distribution API (distribution-spec v1.1), for what a checkpoint image needs: push
 * blobs (one streamed upload of any size, never held in memory) and a manifest, and read a manifest and small
 * blobs back. Auth: none, Basic, or the Bearer token flow that a 401's WWW-Authenticate names. No maintained npm
 * package pushes streamed blobs (those there only pull, into memory), hence this one.
 */
import { request as httpRequest, type IncomingMessage, type OutgoingHttpHeaders } from "node:http";
import { request as httpsRequest } from "node:https";
import type { Writable } from "node:stream";
import type { RegistryCredentials } from "./docker-config.js";
import { MEDIA_TYPE } from "./oci.js";
import { isLoopbackRegistry, registryApiHost } from "./reference.js";

export interface RegistryOptions {
  /** Plain HTTP; default: only for registries on this machine (localhost, 127.x, ::1). */
  plainHttp?: boolean;
  credentials?: RegistryCredentials;
  /** Per request, for everything but a blob upload's body. */
  timeoutMs?: number;
}

export class RegistryError extends Error {
  override readonly name = "RegistryError";
  constructor(
    message: string,
    readonly status?: number,
  ) {
    super(message);
  }
}

interface Response {
  status: number;
  headers: IncomingMessage["headers"];
  body: Buffer;
}

/** A blob upload in flight: write the blob into `stream`, then `finish` with its digest, or `abort`. */
export interface BlobUpload {
  stream: Writable;
  finish(digest: string): Promise<void>;
  abort(): Promise<void>;
}

const MAX_SMALL_BODY = 16 * 2 ** 20;
const MANIFEST_ACCEPT = [
  MEDIA_TYPE.manifest,
  MEDIA_TYPE.index,
  MEDIA_TYPE.dockerManifest,
  MEDIA_TYPE.dockerManifestList,
].join(", ");

export class RegistryClient {
  readonly base: URL;
  private readonly timeoutMs: number;
  private readonly credentials: RegistryCredentials | undefined;
  /** Bearer tokens by scope; "" for a registry that wants Basic. */
  private readonly tokens = new Map<string, string>();
  private basic = false;

  constructor(
    readonly registry: string,
    options: RegistryOptions = {},
  ) {
    const plain = options.plainHttp ?? isLoopbackRegistry(registry);
    this.base = new URL(`${plain ? "http" : "https"}://${registryApiHost(registry)}`);
    this.timeoutMs = options.timeoutMs ?? 60_000;
    this.credentials = options.credentials;
  }

  /**
   * The same credentials in the shape of CRI's AuthConfig, for the runtime's own pull. No server address: containerd
   * compares it, parsed as a URL, with the registry host, and a bare host:port parses to no host (ParseAuth, 2.1.9).
   */
  credentialsForPull(): { username: string; password: string } | { registryToken: string } | undefined {
    const c = this.credentials;
    if (c?.username !== undefined) return { username: c.username, password: c.password ?? "" };
    if (c?.registryToken) return { registryToken: c.registryToken };
    return undefined;
  }

  /** HEAD of a blob: whether the repository already has it. */
  async hasBlob(repository: string, digest: string): Promise<boolean> {
    const r = await this.call("HEAD", `/v2/${repository}/blobs/${digest}`, repository, "pull");
    if (r.status === 200) return true;
    if (r.status === 404) return false;
    throw this.failure("HEAD blob", r, repository);
  }

  /** A small blob (config) in one request. */
  async putBlob(repository: string, digest: string, body: Buffer): Promise<void> {
    if (await this.hasBlob(repository, digest)) return;
    const location = await this.startUploadLocation(repository);
    const url = withDigest(location, digest);
    const r = await this.call("PUT", url, repository, "push,pull", body, {
      "content-type": "application/octet-stream",
    });
    if (r.status !== 201) throw this.failure(`PUT blob ${digest}`, r, repository);
  }

  /**
   * A streamed upload: one PATCH carrying the whole blob as it is written (chunked), then the PUT that names
   * its digest. The token is fetched by the POST before, because a streamed body cannot be sent twice.
   */
  async startUpload(repository: string): Promise<BlobUpload> {
    const location = await this.startUploadLocation(repository);
    const target = new URL(location, this.base);
    const headers: OutgoingHttpHeaders = {
      "content-type": "application/octet-stream",
      "transfer-encoding": "chunked",
      ...this.authHeader(repository, "push,pull"),
    };
    const send = target.protocol === "https:" ? httpsRequest : httpRequest;
    const req = send(target, { method: "PATCH", headers });
    const response = new Promise<Response>((resolve, reject) => {
      req.once("response", (res) => collect(res, MAX_SMALL_BODY).then(resolve, reject));
      req.once("error", reject);
    });
    // A failure before finish() is reported there (and a second socket error after the first would otherwise be an
    // unhandled 'error' event that ends the process).
    response.catch(() => undefined);
    req.on("error", () => undefined);
    let finished = false;
    return {
      stream: req,
      finish: async (digest: string) => {
        finished = true;
        let r: Response;
        try {
          r = await response;
        } catch (err) {
          throw new RegistryError(
            `the blob upload to ${this.registry}/${repository} broke off: ${(err as Error).message}`,
          );
        }
        if (r.status !== 202 && r.status !== 204) throw this.failure("PATCH blob upload", r, repository);
        const next = r.headers.location ?? location;
        const put = await this.call(
          "PUT",
          withDigest(next, digest),
          repository,
          "push,pull",
          Buffer.alloc(0),
          {
            "content-type": "application/octet-stream",
          },
        );
        if (put.status !== 201) throw this.failure(`PUT blob ${digest}`, put, repository);
      },
      abort: async () => {
        if (finished) return;
        finished = true;
        req.destroy();
        await response.catch(() => undefined);
        await this.call("DELETE", location, repository, "push,pull").catch(() => undefined);
      },
    };
  }

  async putManifest(repository: string, tag: string, body: Buffer, mediaType: string): Promise<string> {
    const r = await this.call("PUT", `/v2/${repository}/manifests/${tag}`, repository, "push,pull", body, {
      "content-type": mediaType,
    });
    if (r.status !== 201) throw this.failure(`PUT manifest ${tag}`, r, repository);
    const digest = r.headers["docker-content-digest"];
    return typeof digest === "string" ? digest : "";
  }

  /** The manifest a tag or digest names, as bytes with its media type and digest. */
  async getManifest(
    repository: string,
    reference: string,
  ): Promise<{ body: Buffer; mediaType: string; digest: string }> {
    const r = await this.call(
      "GET",
      `/v2/${repository}/manifests/${reference}`,
      repository,
      "pull",
      undefined,
      {
        accept: MANIFEST_ACCEPT,
      },
    );
    if (r.status === 404)
      throw new RegistryError(
        `${this.registry}/${repository} has no manifest ${reference}: check the reference`,
        404,
      );
    if (r.status !== 200) throw this.failure(`GET manifest ${reference}`, r, repository);
    const type =
      String(r.headers["content-type"] ?? "")
        .split(";")[0]
        ?.trim() ?? "";
    return { body: r.body, mediaType: type, digest: String(r.headers["docker-content-digest"] ?? "") };
  }

  /** A small blob (a config), at most `maxBytes`; registries may redirect to a storage URL. */
  async getBlob(repository: string, digest: string, maxBytes = MAX_SMALL_BODY): Promise<Buffer> {
    let url = `/v2/${repository}/blobs/${digest}`;
    for (let hop = 0; hop < 5; hop++) {
      const own = new URL(url, this.base).host === this.base.host;
      const r = await this.call("GET", url, repository, "pull", undefined, {}, maxBytes, own);
      if (r.status === 200) return r.body;
      if (r.status >= 300 && r.status < 400 && r.headers.location) {
        url = new URL(r.headers.location, new URL(url, this.base)).toString();
        continue;
      }
      throw this.failure(`GET blob ${digest}`, r, repository);
    }
    throw new RegistryError(`GET blob ${digest} from ${this.registry}: too many redirects`);
  }

  private async startUploadLocation(repository: string): Promise<string> {
    const r = await this.call(
      "POST",
      `/v2/${repository}/blobs/uploads/`,
      repository,
      "push,pull",
      Buffer.alloc(0),
    );
    if (r.status !== 202 || !r.headers.location) throw this.failure("POST blob upload", r, repository);
    return r.headers.location;
  }

  private authHeader(repository: string, actions: string): OutgoingHttpHeaders {
    const c = this.credentials;
    if (c?.registryToken) return { authorization: `Bearer ${c.registryToken}` };
    const token = this.tokens.get(`${repository}:${actions}`);
    if (token) return { authorization: `Bearer ${token}` };
    if (this.basic && c?.username !== undefined)
      return {
        authorization: `Basic ${Buffer.from(`${c.username}:${c.password ?? ""}`).toString("base64")}`,
      };
    return {};
  }

  /** One request with a small body; on a 401, the challenge is answered once and the request repeated. */
  private async call(
    method: string,
    path: string,
    repository: string,
    actions: string,
    body?: Buffer,
    headers: OutgoingHttpHeaders = {},
    maxBytes = MAX_SMALL_BODY,
    sendAuth = true,
  ): Promise<Response> {
    const url = new URL(path, this.base);
    const attempt = () =>
      send(
        url,
        method,
        { ...headers, ...(sendAuth ? this.authHeader(repository, actions) : {}) },
        body,
        this.timeoutMs,
        maxBytes,
      );
    let r = await attempt().catch((err: Error) => {
      throw new RegistryError(
        `${method} ${url.origin}${url.pathname}: ${err.message}${hint(err, this.base)}`,
      );
    });
    if (r.status === 401 && sendAuth) {
      await this.answerChallenge(String(r.headers["www-authenticate"] ?? ""), repository, actions);
      r = await attempt();
    }
    return r;
  }

  private async answerChallenge(challenge: string, repository: string, actions: string): Promise<void> {
    const scheme = challenge.split(" ")[0]?.toLowerCase();
    if (scheme === "basic") {
      if (this.credentials?.username === undefined)
        throw new RegistryError(
          `${this.registry} asks for a user and password: log in (docker login ${this.registry}) and give --registry-config`,
          401,
        );
      this.basic = true;
      return;
    }
    if (scheme !== "bearer")
      throw new RegistryError(`${this.registry} asks for an unknown auth scheme (${scheme || "none"})`, 401);
    const params = Object.fromEntries(
      [...challenge.slice(7).matchAll(/(\w+)="([^"]*)"/g)].map((m) => [m[1] ?? "", m[2] ?? ""]),
    );
    if (!params.realm) throw new RegistryError(`${this.registry}'s Bearer challenge names no realm`, 401);
    const realm = new URL(params.realm);
    if (params.service) realm.searchParams.set("service", params.service);
    realm.searchParams.set("scope", `repository:${repository}:${actions}`);
    const c = this.credentials;
    const auth: OutgoingHttpHeaders =
      c?.username !== undefined
        ? { authorization: `Basic ${Buffer.from(`${c.username}:${c.password ?? ""}`).toString("base64")}` }
        : {};
    const r = await send(realm, "GET", auth, undefined, this.timeoutMs, MAX_SMALL_BODY);
    if (r.status !== 200)
      throw new RegistryError(
        `${realm.origin} refused a token for ${repository} (${actions}): HTTP ${r.status}${c ? "; check the credentials in --registry-config" : "; log in and give --registry-config"}`,
        r.status,
      );
    let token: unknown;
    try {
      const parsed = JSON.parse(r.body.toString("utf8")) as Record<string, unknown>;
      token = parsed.token ?? parsed.access_token;
    } catch {}
    if (typeof token !== "string" || !token)
      throw new RegistryError(`${realm.origin} answered no token`, 401);
    this.tokens.set(`${repository}:${actions}`, token);
  }

  private failure(what: string, r: Response, repository: string): RegistryError {
    const detail = registryErrorText(r.body);
    const fix =
      r.status === 401 || r.status === 403
        ? `; not allowed: check the credentials for ${this.registry} in --registry-config`
        : "";
    return new RegistryError(
      `${what} on ${this.registry}/${repository}: HTTP ${r.status}${detail ? ` (${detail})` : ""}${fix}`,
      r.status,
    );
  }
}

/** The registry's error codes and messages (distribution-spec's error body), without the detail blobs. */
function registryErrorText(body: Buffer): string {
  try {
    const parsed = JSON.parse(body.toString("utf8")) as {
      errors?: Array<{ code?: string; message?: string }>;
    };
    return (parsed.errors ?? [])
      .map((e) => `${e.code ?? "?"}: ${String(e.message ?? "").slice(0, 200)}`)
      .join("; ");
  } catch {
    return "";
  }
}

function hint(err: Error & { code?: string }, base: URL): string {
  if (err.code === "ECONNREFUSED") return `: is the registry running at ${base.host}?`;
  if (/EPROTO|wrong version number|packet length/i.test(err.message))
    return ": the registry speaks plain HTTP: pass --plain-http";
  return "";
}

function withDigest(location: string, digest: string): string {
  return `${location}${location.includes("?") ? "&" : "?"}digest=${encodeURIComponent(digest)}`;
}

function send(
  url: URL,
  method: string,
  headers: OutgoingHttpHeaders,
  body: Buffer | undefined,
  timeoutMs: number,
  maxBytes: number,
): Promise<Response> {
  return new Promise((resolve, reject) => {
    const request = url.protocol === "https:" ? httpsRequest : httpRequest;
    const req = request(url, {
      method,
      headers: { ...headers, ...(body !== undefined ? { "content-length": body.length } : {}) },
      timeout: timeoutMs,
    });
    req.once("timeout", () => req.destroy(new Error(`no answer within ${timeoutMs} ms`)));
    req.once("error", reject);
    req.once("response", (res) => collect(res, maxBytes).then(resolve, reject));
    req.end(body);
  });
}

function collect(res: IncomingMessage, maxBytes: number): Promise<Response> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    res.on("data", (c: Buffer) => {
      size += c.length;
      if (size > maxBytes) {
        res.destroy(new Error(`the answer is larger than ${maxBytes} bytes`));
        return;
      }
      chunks.push(c);
    });
    res.once("error", reject);
    res.once("end", () =>
      resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks) }),
    );
  });
}

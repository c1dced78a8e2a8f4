/**
 * Image references as Docker and containerd spell them: `[host[:port]/]path[:tag][@sha256:…]`. A first part
 * without a dot, a colon or "localhost" is a Docker Hub path, as in `docker pull ubuntu`.
 */
export interface ImageReference {
  /** `host[:port]` as written (docker.io for Hub references). */
  registry: string;
  /** The repository path inside the registry, e.g. `kybernate/ckpt`. */
  repository: string;
  tag?: string;
  digest?: string;
}

const PATH_COMPONENT = /^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$/;
const TAG = /^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$/;
const DIGEST = /^sha256:[a-f0-9]{64}$/;
const HOST = /^(?:[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*|\[[0-9a-fA-F:]+\])(?::\d{1,5})?$/;

export class BadReference extends Error {
  override readonly name = "BadReference";
}

export function parseReference(text: string): ImageReference {
  const bad = (why: string) =>
    new BadReference(`"${text}" is not an image reference (${why}); write HOST[:PORT]/PATH:TAG`);
  if (!text || text.length > 1024) throw bad("empty or longer than 1024 characters");
  let rest = text;
  let digest: string | undefined;
  const at = rest.indexOf("@");
  if (at >= 0) {
    digest = rest.slice(at + 1);
    rest = rest.slice(0, at);
    if (!DIGEST.test(digest)) throw bad("the digest must be sha256:<64 hex digits>");
  }
  let tag: string | undefined;
  const colon = rest.lastIndexOf(":");
  if (colon > rest.lastIndexOf("/")) {
    tag = rest.slice(colon + 1);
    rest = rest.slice(0, colon);
    if (!TAG.test(tag)) throw bad(`the tag "${tag}" has characters a tag may not have`);
  }
  const parts = rest.split("/");
  let registry = "docker.io";
  const first = parts[0] ?? "";
  if (parts.length > 1 && (first.includes(".") || first.includes(":") || first === "localhost")) {
    registry = first;
    parts.shift();
    if (!HOST.test(registry)) throw bad(`the registry "${registry}" is not a host[:port]`);
  } else if (parts.length === 1) {
    parts.unshift("library");
  }
  if (parts.length === 0 || !parts.every((p) => PATH_COMPONENT.test(p)))
    throw bad("the path must be lower-case letters, digits and . _ - between slashes");
  const ref: ImageReference = { registry, repository: parts.join("/") };
  if (tag) ref.tag = tag;
  if (digest) ref.digest = digest;
  if (!ref.tag && !ref.digest) ref.tag = "latest";
  return ref;
}

export function formatReference(ref: ImageReference): string {
  return `${ref.registry}/${ref.repository}${ref.tag ? `:${ref.tag}` : ""}${ref.digest ? `@${ref.digest}` : ""}`;
}

/** Docker Hub's API host differs from the name people write. */
export function registryApiHost(registry: string): string {
  return registry === "docker.io" ? "registry-1.docker.io" : registry;
}

/** Registries on this machine are spoken to in plain HTTP, as containerd does for `localhost`. */
export function isLoopbackRegistry(registry: string): boolean {
  const host = registry.replace(/:\d+$/, "").replace(/^\[|\]$/g, "");
  return host === "localhost" || host === "::1" || /^127\.\d+\.\d+\.\d+$/.test(host);
}

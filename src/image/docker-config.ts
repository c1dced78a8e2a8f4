import { readFile } from "node:fs/promises";
import { homedir } from "node:os";
import { join } from "node:path";

/** What a registry accepts from us: a user and password (Basic, or for a Bearer token service), or a token. */
export interface RegistryCredentials {
  username?: string;
  password?: string;
  /** A registry token used as Bearer as is (the Docker config's `registrytoken`). */
  registryToken?: string;
}

/** Where `docker login` writes: $DOCKER_CONFIG/config.json, else ~/.docker/config.json. */
export function defaultDockerConfigPath(env: NodeJS.ProcessEnv = process.env): string {
  return join(env.DOCKER_CONFIG ?? join(homedir(), ".docker"), "config.json");
}

/** The keys `docker login` may have used for a registry host, in the order Docker tries them. */
function keysFor(registry: string): string[] {
  const keys = [registry, `https://${registry}`, `http://${registry}`, `https://${registry}/v2/`];
  if (registry === "docker.io")
    keys.unshift("https://index.docker.io/v1/", "index.docker.io", "registry-1.docker.io");
  return keys;
}

type Json = Record<string, unknown>;
const isObject = (v: unknown): v is Json => typeof v === "object" && v !== null && !Array.isArray(v);

/**
 * The credentials a Docker config file holds for `registry`, or undefined when it has none. `path` undefined:
 * the default file, which may be absent; a named file must exist. Credential helpers (credsStore,
 * credHelpers) are programs kybernate does not run: a config that only names one is refused with that reason.
 */
export async function credentialsFor(
  registry: string,
  path?: string,
): Promise<RegistryCredentials | undefined> {
  const file = path ?? defaultDockerConfigPath();
  let text: string;
  try {
    text = await readFile(file, "utf8");
  } catch (err) {
    if (!path && (err as NodeJS.ErrnoException).code === "ENOENT") return undefined;
    throw new Error(`cannot read the registry config ${file}: ${(err as Error).message}`);
  }
  let config: unknown;
  try {
    config = JSON.parse(text);
  } catch {
    throw new Error(`the registry config ${file} is not JSON (a Docker config.json is)`);
  }
  if (!isObject(config)) throw new Error(`the registry config ${file} does not hold a JSON object`);
  const auths = isObject(config.auths) ? config.auths : {};
  for (const key of keysFor(registry)) {
    const entry = auths[key];
    if (!isObject(entry)) continue;
    return entryCredentials(entry, `${file} auths["${key}"]`);
  }
  const helper =
    (isObject(config.credHelpers) ? config.credHelpers[registry] : undefined) ?? config.credsStore;
  if (typeof helper === "string" && helper)
    throw new Error(
      `${file} keeps the credentials of ${registry} in the credential helper docker-credential-${helper}, which kybernate does not run; ` +
        `give --registry-config a file with an auths entry for ${registry} (e.g. written by \`docker login\` with no credsStore)`,
    );
  return undefined;
}

function entryCredentials(entry: Json, where: string): RegistryCredentials {
  if (typeof entry.registrytoken === "string" && entry.registrytoken)
    return { registryToken: entry.registrytoken };
  if (typeof entry.identitytoken === "string" && entry.identitytoken)
    throw new Error(
      `${where} holds an identity token (an OAuth2 refresh token), which kybernate cannot exchange; log in with a user and password or token instead`,
    );
  if (typeof entry.auth === "string" && entry.auth) {
    const decoded = Buffer.from(entry.auth, "base64").toString("utf8");
    const colon = decoded.indexOf(":");
    if (colon <= 0) throw new Error(`${where}.auth is not base64 of "user:password"`);
    return { username: decoded.slice(0, colon), password: decoded.slice(colon + 1) };
  }
  if (typeof entry.username === "string" && typeof entry.password === "string")
    return { username: entry.username, password: entry.password };
  throw new Error(`${where} has neither auth, username + password nor registrytoken`);
}

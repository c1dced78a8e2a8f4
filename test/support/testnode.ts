// Access to the local test node that `npm run testnode:up` (test/node/up.sh) starts: a private containerd
// with CRI + NRI, a loopback registry and a busybox image. Integration tests read its description here.
import { execFile } from "node:child_process";
import { existsSync, readFileSync } from "node:fs";
import { connect } from "node:net";
import { dirname, isAbsolute, join } from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";

export interface TestNodeBinaries {
  containerd: string;
  ctr: string;
  runc: string;
  criu: string;
  checkpointctl: string;
  shim: string;
}

export interface TestNodeVersions {
  containerd: string;
  runc: string;
  criu: string;
  checkpointctl: string;
  registry: string;
}

export interface TestNode {
  /** containerd's gRPC socket, which also serves CRI; a plain path (a gRPC client adds `unix://`). */
  criSocket: string;
  nriSocket: string;
  containerdSocket: string;
  /** `127.0.0.1:PORT`, plain HTTP. */
  registry: string;
  /** `localhost:PORT/kybernate/busybox:1`, pullable through CRI; its default command is `sh`. */
  image: string;
  /** The pod sandbox image (busybox running `sleep infinity`). */
  pauseImage: string;
  prefix: string;
  /** containerd's root and state dirs. */
  root: string;
  state: string;
  runcRoot: string;
  logDir: string;
  configPath: string;
  namespace: string;
  containerdPid: number;
  registryPid: number;
  bin: TestNodeBinaries;
  /** Debian's upstream copies of the NRI and CRI api.proto. */
  protos: { nri: string; cri: string };
  versions: TestNodeVersions;
}

const UP_HINT = "run `npm run testnode:up` (as root) from the repository root";

/** The repository root: the nearest folder above this file whose package.json names kybernate. */
function repoRoot(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  for (;;) {
    const pkg = join(dir, "package.json");
    if (
      existsSync(pkg) &&
      (JSON.parse(readFileSync(pkg, "utf8")) as { name?: string }).name === "kybernate"
    ) {
      return dir;
    }
    const parent = dirname(dir);
    if (parent === dir)
      throw new Error(`cannot find kybernate's package.json above ${fileURLToPath(import.meta.url)}`);
    dir = parent;
  }
}

export function testNodeEnvPath(): string {
  return join(repoRoot(), ".testnode", "env.json");
}

/** Node B (test/node/up-b.sh): a second containerd on this machine sharing node A's registry and prefix. */
export function testNodeBEnvPath(): string {
  return join(repoRoot(), ".testnode-b", "env.json");
}

export function loadTestNodeB(): TestNode {
  const envPath = testNodeBEnvPath();
  if (!existsSync(envPath))
    throw new Error(
      `no test node B: ${envPath} is missing; run \`bash test/node/up-b.sh\` (as root) after npm run testnode:up`,
    );
  return loadTestNode(envPath);
}

type Json = Record<string, unknown>;

function field(obj: Json, key: string, where: string): unknown {
  if (!(key in obj)) throw new Error(`${where} lacks "${key}"; ${UP_HINT} again to rewrite it`);
  return obj[key];
}

function str(obj: Json, key: string, where: string): string {
  const v = field(obj, key, where);
  if (typeof v !== "string" || v === "") {
    throw new Error(`${where}: "${key}" must be a non-empty string; ${UP_HINT} again to rewrite it`);
  }
  return v;
}

function path(obj: Json, key: string, where: string): string {
  const v = str(obj, key, where);
  if (!isAbsolute(v)) throw new Error(`${where}: "${key}" must be an absolute path, got "${v}"`);
  return v;
}

function pid(obj: Json, key: string, where: string): number {
  const v = field(obj, key, where);
  if (typeof v !== "number" || !Number.isInteger(v) || v <= 0) {
    throw new Error(`${where}: "${key}" must be a positive pid, got ${JSON.stringify(v)}; ${UP_HINT}`);
  }
  return v;
}

function obj(parent: Json, key: string, where: string): Json {
  const v = field(parent, key, where);
  if (typeof v !== "object" || v === null || Array.isArray(v))
    throw new Error(`${where}: "${key}" must be an object`);
  return v as Json;
}

/** Reads and validates .testnode/env.json; throws with the fix when the node was never brought up. */
export function loadTestNode(envPath: string = testNodeEnvPath()): TestNode {
  if (!existsSync(envPath)) throw new Error(`no test node: ${envPath} is missing; ${UP_HINT}`);
  let raw: unknown;
  try {
    raw = JSON.parse(readFileSync(envPath, "utf8"));
  } catch (err) {
    throw new Error(
      `${envPath} is not valid JSON (${(err as Error).message}); ${UP_HINT} again to rewrite it`,
    );
  }
  if (typeof raw !== "object" || raw === null)
    throw new Error(`${envPath} does not hold an object; ${UP_HINT}`);
  const e = raw as Json;
  const w = envPath;
  const bin = obj(e, "bin", w);
  const protos = obj(e, "protos", w);
  const versions = obj(e, "versions", w);
  const node: TestNode = {
    criSocket: path(e, "criSocket", w),
    nriSocket: path(e, "nriSocket", w),
    containerdSocket: path(e, "containerdSocket", w),
    registry: str(e, "registry", w),
    image: str(e, "image", w),
    pauseImage: str(e, "pauseImage", w),
    prefix: path(e, "prefix", w),
    root: path(e, "root", w),
    state: path(e, "state", w),
    runcRoot: path(e, "runcRoot", w),
    logDir: path(e, "logDir", w),
    configPath: path(e, "configPath", w),
    namespace: str(e, "namespace", w),
    containerdPid: pid(e, "containerdPid", w),
    registryPid: pid(e, "registryPid", w),
    bin: {
      containerd: path(bin, "containerd", `${w} bin`),
      ctr: path(bin, "ctr", `${w} bin`),
      runc: path(bin, "runc", `${w} bin`),
      criu: path(bin, "criu", `${w} bin`),
      checkpointctl: path(bin, "checkpointctl", `${w} bin`),
      shim: path(bin, "shim", `${w} bin`),
    },
    protos: { nri: path(protos, "nri", `${w} protos`), cri: path(protos, "cri", `${w} protos`) },
    versions: {
      containerd: str(versions, "containerd", `${w} versions`),
      runc: str(versions, "runc", `${w} versions`),
      criu: str(versions, "criu", `${w} versions`),
      checkpointctl: str(versions, "checkpointctl", `${w} versions`),
      registry: str(versions, "registry", `${w} versions`),
    },
  };
  if (!existsSync(node.criSocket)) {
    throw new Error(`the test node is down: ${node.criSocket} does not exist; ${UP_HINT}`);
  }
  return node;
}

function socketAnswers(socket: string): Promise<boolean> {
  return new Promise((resolve) => {
    const s = connect(socket);
    s.once("connect", () => {
      s.destroy();
      resolve(true);
    });
    s.once("error", () => resolve(false));
  });
}

/**
 * Stops the test node's containerd by its pid and starts it again with the same config; containers and
 * shims keep running. Resolves once the CRI socket answers again (the script checks a CRI Version call).
 */
export async function restartContainerd(timeoutMs = 60_000): Promise<void> {
  const root = repoRoot();
  const script = join(root, "test", "node", "restart-containerd.sh");
  try {
    await promisify(execFile)("bash", [script], { cwd: root, timeout: timeoutMs });
  } catch (err) {
    const e = err as Error & { stderr?: string };
    throw new Error(`${script} failed: ${e.stderr?.trim() || e.message}; see .testnode/logs/containerd.log`);
  }
  const { criSocket } = loadTestNode();
  const deadline = Date.now() + 10_000;
  while (!(await socketAnswers(criSocket))) {
    if (Date.now() > deadline)
      throw new Error(`containerd restarted but ${criSocket} does not accept connections`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

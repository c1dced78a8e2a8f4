/**
 * A registry that wants a password (docker-registry with htpasswd, Basic auth, on loopback): `kybernate image build
 * --push` takes the credentials from a Docker config file, and `kybernate restore REF` hands them to containerd's
 * pull on node B. A plain container (no GPU, no kybernate daemon) is enough: the path under test is the registry's.
 */
import assert from "node:assert/strict";
import { type ChildProcess, execFile, spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { createServer } from "node:net";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { packageRoot } from "../../src/base/paths.js";
import { TestCriClient } from "../support/test-cri-client.js";
import { loadTestNode, loadTestNodeB, type TestNode } from "../support/testnode.js";

// bcrypt (cost 4) of "s3cret-pw": docker-registry's htpasswd takes bcrypt only, and Node has none.
const HTPASSWD = "kyb:$2b$04$K0IJEZaFAHrZSDCs59g3muSKuGpjW8Ww9kLx0.I/BjxhWrvBXqSeq\n";
const suffix = randomBytes(3).toString("hex");
const NS = "kybernate-test";
let nodeA: TestNode;
let nodeB: TestNode;
let criA: TestCriClient;
let criB: TestCriClient;
let dir: string;
let registry: ChildProcess | undefined;
let host: string;
let archive: string;
let dockerConfig: string;

interface Run {
  code: number;
  stdout: string;
  stderr: string;
}
const kybernate = (args: string[]): Promise<Run> =>
  new Promise((resolve) =>
    execFile(
      process.execPath,
      [join(packageRoot, "dist/src/cli/main.js"), ...args],
      { timeout: 120_000, cwd: dir },
      (err, stdout, stderr) =>
        resolve({ code: err ? Number((err as { code?: number }).code ?? 1) : 0, stdout, stderr }),
    ),
  );

const freePort = (): Promise<number> =>
  new Promise((resolve) => {
    const s = createServer().listen(0, "127.0.0.1", () => {
      const { port } = s.address() as { port: number };
      s.close(() => resolve(port));
    });
  });

before(async () => {
  nodeA = loadTestNode();
  nodeB = loadTestNodeB();
  criA = new TestCriClient(nodeA.criSocket);
  criB = new TestCriClient(nodeB.criSocket);
  dir = mkdtempSync("/tmp/kyb-regauth-");
  const port = await freePort();
  host = `localhost:${port}`;
  writeFileSync(join(dir, "htpasswd"), HTPASSWD);
  mkdirSync(join(dir, "storage"));
  writeFileSync(
    join(dir, "registry.yml"),
    `version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: ${join(dir, "storage")}\n` +
      `http:\n  addr: 127.0.0.1:${port}\nauth:\n  htpasswd:\n    realm: kybernate-test\n    path: ${join(dir, "htpasswd")}\n`,
  );
  registry = spawn(join(nodeA.prefix, "bin", "docker-registry"), ["serve", join(dir, "registry.yml")], {
    stdio: "ignore",
  });
  for (let i = 0; i < 100; i++) {
    const answer = await fetch(`http://127.0.0.1:${port}/v2/`).catch(() => undefined);
    if (answer?.status === 401) break;
    await sleep(100);
  }
  dockerConfig = join(dir, "config.json");
  writeFileSync(
    dockerConfig,
    JSON.stringify({ auths: { [host]: { auth: Buffer.from("kyb:s3cret-pw").toString("base64") } } }),
  );
  await criA.pullImage(nodeA.image);
  const pod = await criA.runHostNetworkPod(`regauth-${suffix}`, NS);
  const id = await criA.createContainer(pod.podId, pod.config, {
    name: "counter",
    image: nodeA.image,
    command: ["sh", "-c", "i=0; while true; do i=$((i+1)); echo $i > /count; sleep 0.1; done"],
  });
  await criA.startContainer(id);
  await sleep(500);
  archive = join(dir, "counter.tar");
  await criA.checkpoint(id, archive, 60);
});

after(async () => {
  for (const cri of [criA, criB]) {
    if (!cri) continue;
    for (const p of await cri.listPodSandbox().catch(() => []))
      if (p.metadata?.namespace === NS && p.metadata.name.startsWith(`regauth-${suffix}`))
        await cri.stopAndRemovePod(p.id).catch(() => undefined);
    cri.close();
  }
  registry?.kill();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

describe("checkpoint images through a registry that wants a password", () => {
  test("without credentials the push is refused with the way to give them", async () => {
    const r = await kybernate([
      "image",
      "build",
      archive,
      "--tag",
      `${host}/k/auth:1`,
      "--push",
      "--registry-config",
      join(dir, "none.json"),
    ]);
    assert.equal(r.code, 2, r.stderr);
    assert.match(r.stderr, /cannot read the registry config/);
    const anonymous = await kybernate(["image", "build", archive, "--tag", `${host}/k/auth:1`, "--push"]);
    assert.equal(anonymous.code, 1, anonymous.stderr);
    assert.match(
      anonymous.stderr,
      /asks for a user and password: log in \(docker login localhost:\d+\) and give --registry-config/,
    );
  });

  test("with the Docker config: pushed, and restored on node B by a pull that carries the same credentials", async () => {
    const pushed = await kybernate([
      "image",
      "build",
      archive,
      "--tag",
      `${host}/k/auth:1`,
      "--push",
      "--registry-config",
      dockerConfig,
    ]);
    assert.equal(pushed.code, 0, pushed.stderr);
    const r = await kybernate([
      "restore",
      `${host}/k/auth:1`,
      "--registry-config",
      dockerConfig,
      "--log-root",
      join(dir, "pods"),
      "--runtime-endpoint",
      nodeB.criSocket,
      "--socket",
      join(dir, "no-daemon.sock"),
    ]);
    assert.equal(r.code, 0, r.stderr);
    const id = r.stdout.trim();
    const first = Number((await criB.exec(id, ["cat", "/count"])).stdout);
    await sleep(400);
    assert.ok(
      Number((await criB.exec(id, ["cat", "/count"])).stdout) > first,
      "the restored counter moves on node B",
    );
  });
});

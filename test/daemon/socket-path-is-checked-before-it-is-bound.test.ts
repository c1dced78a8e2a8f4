import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import {
  chmodSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  statSync,
  writeFileSync,
} from "node:fs";
import type { Server } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, test } from "node:test";
import { silentLogger } from "../../src/base/log.js";
import type { Coordinator } from "../../src/daemon/coordinator.js";
import { assertNoLiveDaemon, startDaemonServer } from "../../src/daemon/server.js";

const root = mkdtempSync(join(tmpdir(), "kyb-sockpath-"));
const servers: Server[] = [];
after(async () => {
  await Promise.all(servers.map((s) => new Promise((r) => s.close(r))));
  rmSync(root, { recursive: true, force: true });
});

const coordinator = { handle: async () => ({ ok: true }) } as unknown as Coordinator;
const status = () => ({ managed: [], busy: [], last: [] });
async function start(socket: string): Promise<Server> {
  const server = await startDaemonServer(socket, coordinator, status, silentLogger);
  servers.push(server);
  return server;
}
const mode = (path: string): number => statSync(path).mode & 0o7777;

let n = 0;
/** A directory of the test's, with `perm`. */
function dir(perm: number): string {
  const d = join(root, `d${n++}`);
  mkdirSync(d);
  chmodSync(d, perm);
  return d;
}

test("a directory kybernate creates is 0700, the socket 0600", async () => {
  const parent = join(dir(0o755), "kybernate");
  await start(join(parent, "daemon.sock"));
  assert.equal(mode(parent), 0o700);
  assert.equal(mode(join(parent, "daemon.sock")), 0o600);
});

test("an existing directory is left as it is (--socket /run/kybernate.sock must not make /run 0700)", async () => {
  const run = dir(0o755);
  await start(join(run, "kybernate.sock"));
  assert.equal(mode(run), 0o755);
  assert.equal(mode(join(run, "kybernate.sock")), 0o600);
});

test("a directory others may write to is refused, naming it and the fix", async () => {
  const shared = dir(0o1777);
  await assert.rejects(
    start(join(shared, "daemon.sock")),
    new RegExp(`socket's directory ${shared} is writable by others \\(mode 1777\\).*private directory`),
  );
  assert.equal(mode(shared), 0o1777, "and left as it was");
  assert.deepEqual(readdirSync(shared), []);
});

test("a regular file at the socket path is refused and kept", async () => {
  const d = dir(0o700);
  const path = join(d, "daemon.sock");
  writeFileSync(path, "someone's data\n");
  await assert.rejects(
    start(path),
    new RegExp(`${path} exists and is not a socket \\(a regular file\\): kybernate does not remove it`),
  );
  assert.equal(readFileSync(path, "utf8"), "someone's data\n");
});

test("a socket a crashed daemon left is replaced", async () => {
  const d = dir(0o700);
  const path = join(d, "daemon.sock");
  // A daemon killed while listening leaves its socket file behind.
  spawnSync(process.execPath, [
    "-e",
    `require("node:net").createServer().listen(${JSON.stringify(path)}, () => process.kill(process.pid, "SIGKILL"))`,
  ]);
  assert.ok(existsSync(path));
  await assertNoLiveDaemon(path);
  await start(path);
  assert.equal(statSync(path).isSocket(), true);
});

test("a path longer than 107 bytes is refused before anything is bound or asked", async () => {
  const d = dir(0o700);
  const long = join(d, `${"s".repeat(120)}.sock`);
  const problem = new RegExp(`--socket ${long} is \\d+ bytes long; a unix socket path may have at most 107`);
  await assert.rejects(assertNoLiveDaemon(long), problem);
  await assert.rejects(start(long), problem);
  assert.deepEqual(readdirSync(d), [], "no stray socket under a cut name");
});

/**
 * The CRIU hook run with missing or garbage environment: a clear error naming what is wrong, a non-zero
 * exit, and no effect (it never reaches a daemon). Run as CRIU runs it: the hooks/ script, env only.
 */
import assert from "node:assert/strict";
import { spawn, spawnSync } from "node:child_process";
import { once } from "node:events";
import { mkdtempSync, rmSync } from "node:fs";
import { createServer } from "node:net";
import { join } from "node:path";
import { after, test } from "node:test";
import { hooksDir } from "../../src/base/paths.js";

const hook = join(hooksDir, "kybernate-criu-hook");
const scratch = mkdtempSync("/tmp/kyb-hook-");
const socket = join(scratch, "daemon.sock");
let connections = 0;
const daemon = createServer((conn) => {
  connections++;
  conn.destroy();
});
daemon.listen(socket);
after(() => {
  daemon.close();
  rmSync(scratch, { recursive: true, force: true });
});

/** What CRIU's environment and the per-container action script give the hook, plus the case's own. */
function hookEnv(env: Record<string, string>): Record<string, string> {
  return { PATH: process.env.PATH ?? "", KYBERNATE_NODE: process.execPath, KYBERNATE_SOCKET: socket, ...env };
}

function runHook(env: Record<string, string>): { status: number | null; stderr: string } {
  const result = spawnSync(hook, [], {
    env: hookEnv(env),
    encoding: "utf8",
    timeout: 10_000,
  });
  return { status: result.status, stderr: result.stderr };
}

const good = {
  CRTOOLS_SCRIPT_ACTION: "pre-dump",
  KYBERNATE_CONTAINER_ID: "abc123",
  CRTOOLS_INIT_PID: "4242",
};

const cases: Array<{ name: string; env: Record<string, string>; error: RegExp }> = [
  { name: "no action at all", env: {}, error: /CRTOOLS_SCRIPT_ACTION is not set: this hook is run by CRIU/ },
  {
    name: "no container id",
    env: { ...good, KYBERNATE_CONTAINER_ID: "" },
    error: /KYBERNATE_CONTAINER_ID="" is not a container id/,
  },
  {
    name: "a container id with a path in it",
    env: { ...good, KYBERNATE_CONTAINER_ID: "../../etc" },
    error: /KYBERNATE_CONTAINER_ID="\.\.\/\.\.\/etc" is not a container id/,
  },
  {
    name: "the parent directory as id",
    env: { ...good, KYBERNATE_CONTAINER_ID: ".." },
    error: /KYBERNATE_CONTAINER_ID="\.\." is not a container id/,
  },
  {
    name: "the current directory as id",
    env: { ...good, KYBERNATE_CONTAINER_ID: "." },
    error: /KYBERNATE_CONTAINER_ID="\." is not a container id/,
  },
  {
    name: "no init pid",
    env: { ...good, CRTOOLS_INIT_PID: "" },
    error: /CRTOOLS_INIT_PID="" is not a process id/,
  },
  {
    name: "a garbage init pid",
    env: { ...good, CRTOOLS_INIT_PID: "12x" },
    error: /CRTOOLS_INIT_PID="12x" is not a process id/,
  },
  {
    name: "init pid 1",
    env: { ...good, CRTOOLS_INIT_PID: "1" },
    error: /CRTOOLS_INIT_PID="1" is not a process id/,
  },
  {
    name: "a garbage timeout",
    env: { ...good, KYBERNATE_HOOK_TIMEOUT_MS: "soon" },
    error: /KYBERNATE_HOOK_TIMEOUT_MS="soon" must be a whole number of milliseconds/,
  },
];

for (const { name, env, error } of cases) {
  test(`the hook refuses ${name} with a clear error and touches nothing`, () => {
    const before = connections;
    const result = runHook(env);
    assert.equal(result.status, 2, result.stderr);
    assert.match(result.stderr, error);
    assert.equal(connections, before, "the hook contacted the daemon");
  });
}

test("stages kybernate does not need return at once without starting node", () => {
  for (const action of ["post-dump", "network-lock", "post-restore", "pre-resume", "some-future-action"]) {
    const result = spawnSync(hook, [], {
      env: { CRTOOLS_SCRIPT_ACTION: action, KYBERNATE_NODE: "/nonexistent/node" },
      encoding: "utf8",
    });
    assert.equal(result.status, 0, `${action}: ${result.stderr}`);
  }
});

test("pre-restore needs no init pid (no process exists yet) and asks the daemon", async () => {
  const before = connections;
  // Not spawnSync: the stand-in daemon in this process must be free to accept the hook's connection.
  const child = spawn(hook, [], {
    env: hookEnv({ CRTOOLS_SCRIPT_ACTION: "pre-restore", KYBERNATE_CONTAINER_ID: "abc123" }),
  });
  let stderr = "";
  child.stderr.setEncoding("utf8").on("data", (chunk: string) => {
    stderr += chunk;
  });
  const [status] = (await once(child, "exit")) as [number];
  assert.equal(connections, before + 1, "the hook asked the daemon");
  assert.equal(status, 1, "this test's daemon hangs up without answering");
  assert.match(stderr, /pre-restore of container abc123 failed: .*kybernate daemon on .*daemon\.sock/);
});

test("an unreachable daemon fails the stage with a message saying why", () => {
  const result = runHook({ ...good, KYBERNATE_SOCKET: join(scratch, "absent.sock") });
  assert.equal(result.status, 1);
  assert.match(
    result.stderr,
    /pre-dump of container abc123 failed: cannot reach the kybernate daemon on .*absent\.sock: is the kybernate daemon running\?/,
  );
});

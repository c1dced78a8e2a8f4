/**
 * CRIU's post-dump runs while the container's tasks are stopped: without a page store the action script only
 * stamps the time (a shell builtin, no process started, no daemon asked); with one it hands the daemon the
 * request, and the daemon's refusal fails the stage.
 */
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { once } from "node:events";
import { existsSync, mkdtempSync, rmSync, statSync } from "node:fs";
import { createServer } from "node:net";
import { join } from "node:path";
import { after, test } from "node:test";
import { hooksDir } from "../../src/base/paths.js";

const hook = join(hooksDir, "kybernate-criu-hook");
const scratch = mkdtempSync("/tmp/kyb-hook-post-dump-");
const socket = join(scratch, "daemon.sock");
const requests: Array<Record<string, unknown>> = [];
let answer = { ok: true } as { ok: boolean; error?: string };
const daemon = createServer((conn) => {
  conn.setEncoding("utf8");
  let buffered = "";
  conn.on("data", (chunk: string) => {
    buffered += chunk;
    if (!buffered.includes("\n")) return;
    requests.push(JSON.parse(buffered.slice(0, buffered.indexOf("\n"))));
    conn.end(`${JSON.stringify(answer)}\n`);
  });
});
daemon.listen(socket);
after(() => {
  daemon.close();
  rmSync(scratch, { recursive: true, force: true });
});

async function runHook(env: Record<string, string>): Promise<{ code: number | null; stderr: string }> {
  const child = spawn(hook, [], {
    env: {
      PATH: process.env.PATH ?? "",
      KYBERNATE_NODE: process.execPath,
      KYBERNATE_SOCKET: socket,
      CRTOOLS_SCRIPT_ACTION: "post-dump",
      KYBERNATE_CONTAINER_ID: "abc123",
      CRTOOLS_INIT_PID: "4242",
      CRTOOLS_IMAGE_DIR: "/proc/1/fd/3",
      KYBERNATE_CONTAINER_DIR: scratch,
      ...env,
    },
  });
  let stderr = "";
  child.stderr.on("data", (c: Buffer) => {
    stderr += c.toString();
  });
  const [code] = (await once(child, "exit")) as [number | null];
  return { code, stderr };
}

test("without a page store: the time is stamped, nobody is asked, the stage passes", async () => {
  const before = Date.now();
  const { code } = await runHook({});
  assert.equal(code, 0);
  assert.equal(requests.length, 0, "the daemon was not asked");
  const stamp = join(scratch, "post-dump");
  assert.ok(existsSync(stamp));
  assert.ok(statSync(stamp).mtimeMs >= before - 1000);
});

test("with a page store: the daemon gets the post-dump request; its refusal fails the stage", async () => {
  answer = { ok: true };
  assert.equal((await runHook({ KYBERNATE_PAGE_STORE: "1" })).code, 0);
  assert.equal(requests.at(-1)?.action, "post-dump");
  assert.equal(requests.at(-1)?.initPid, 4242);
  answer = { ok: false, error: "the page store could not take them" };
  const failed = await runHook({ KYBERNATE_PAGE_STORE: "1" });
  assert.equal(failed.code, 1);
  assert.match(failed.stderr, /post-dump of container abc123 failed: the page store could not take them/);
});

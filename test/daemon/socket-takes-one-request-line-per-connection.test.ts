import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { connect, createServer, type Server } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, test } from "node:test";
import { silentLogger } from "../../src/base/log.js";
import { askDaemon, MAX_HOOK_REPLY_BYTES } from "../../src/daemon/client.js";
import type { Coordinator } from "../../src/daemon/coordinator.js";
import type { DaemonReply, HookRequest } from "../../src/daemon/protocol.js";
import { startDaemonServer } from "../../src/daemon/server.js";
import { hookRequest } from "./fakes.js";

const dir = mkdtempSync(join(tmpdir(), "kyb-sock-"));
const servers: Server[] = [];
after(async () => {
  await Promise.all(servers.map((s) => new Promise((r) => s.close(r))));
  rmSync(dir, { recursive: true, force: true });
});

/** A coordinator that counts its requests and answers each one when the test says so. */
function fakeCoordinator() {
  const seen: HookRequest[] = [];
  let finish: (reply: DaemonReply) => void = () => undefined;
  const answered = new Promise<DaemonReply>((resolve) => {
    finish = resolve;
  });
  const coordinator = {
    handle: async (request: HookRequest): Promise<DaemonReply> => {
      seen.push(request);
      // The real coordinator says "busy" to a second request for a container that is mid-operation.
      if (seen.length > 1) return { ok: false, error: "container c0ffee is busy (pre-dump)" };
      return answered;
    },
  } as unknown as Coordinator;
  return { coordinator, seen, finish: (reply: DaemonReply) => finish(reply) };
}

let n = 0;
async function daemon(coordinator: Coordinator): Promise<string> {
  const socket = join(dir, `d${n++}.sock`);
  const status = () => ({ managed: [], busy: [], last: [] });
  servers.push(await startDaemonServer(socket, coordinator, status, silentLogger));
  return socket;
}

/** Writes each piece in its own write, a little apart, and returns everything the daemon answers. */
function converse(socket: string, pieces: string[], whileRunning?: () => void): Promise<string> {
  return new Promise((resolve, reject) => {
    const c = connect(socket);
    let got = "";
    c.setEncoding("utf8");
    c.on("data", (d: string) => {
      got += d;
    });
    c.on("error", reject);
    c.on("close", () => resolve(got));
    c.on("connect", async () => {
      for (const p of pieces) {
        c.write(p);
        await new Promise((r) => setTimeout(r, 30));
      }
      whileRunning?.();
    });
  });
}

describe("the daemon's socket: one request line per connection", () => {
  test("bytes after the request line while it runs are not a second request: one dispatch, its own reply", async () => {
    const fake = fakeCoordinator();
    const socket = await daemon(fake.coordinator);
    const line = `${JSON.stringify(hookRequest("pre-dump", 100))}\n`;
    // The same line again, then noise, arrive while the first request runs.
    const reply = await converse(socket, [line, line, "garbage\n", line], () =>
      fake.finish({ ok: true, data: { pids: [101] } }),
    );
    assert.equal(fake.seen.length, 1, "the request ran once");
    assert.deepEqual(JSON.parse(reply), { ok: true, data: { pids: [101] } });
  });

  test("a request line split over writes is put together; a status request needs no coordinator", async () => {
    const fake = fakeCoordinator();
    const socket = await daemon(fake.coordinator);
    const line = JSON.stringify({ kind: "status" });
    const reply = await converse(socket, [line.slice(0, 5), `${line.slice(5)}\n`]);
    assert.deepEqual(JSON.parse(reply), { ok: true, data: { managed: [], busy: [], last: [] } });
    assert.equal(fake.seen.length, 0);
  });

  test("a request of more than 64 KiB without a line end is refused", async () => {
    const socket = await daemon(fakeCoordinator().coordinator);
    const reply = await converse(socket, ["x".repeat(70 * 1024)]);
    assert.deepEqual(JSON.parse(reply), { ok: false, error: "request too large" });
  });
});

/** A server that answers every connection with `reply` (what a wrong or hostile listener may send). */
async function liar(reply: string | Buffer): Promise<string> {
  const socket = join(dir, `liar${n++}.sock`);
  const server = createServer((c) => {
    c.on("error", () => undefined);
    c.on("data", () => c.write(reply));
  });
  servers.push(server);
  await new Promise<void>((r) => server.listen(socket, r));
  return socket;
}

describe("the daemon client caps the reply", () => {
  test("a hook reply of more than 64 KiB is refused at once, not buffered", async () => {
    const socket = await liar(Buffer.alloc(1024 * 1024, 0x41));
    const t = performance.now();
    await assert.rejects(
      askDaemon(socket, hookRequest("pre-dump", 100), 5000),
      new RegExp(`sent a reply of more than ${MAX_HOOK_REPLY_BYTES} bytes; refused`),
    );
    assert.ok(performance.now() - t < 1000);
  });

  test("a status reply may be longer (it lists every container); a hook reply under the cap is read", async () => {
    const big = `${JSON.stringify({ ok: true, data: { managed: [], busy: [], last: [], pad: "p".repeat(200_000) } })}\n`;
    const status = await askDaemon(await liar(big), { kind: "status" }, 5000);
    assert.equal(status.ok, true);
    const small = await askDaemon(await liar('{"ok":true}\n'), hookRequest("pre-dump", 100), 5000);
    assert.deepEqual(small, { ok: true });
  });
});

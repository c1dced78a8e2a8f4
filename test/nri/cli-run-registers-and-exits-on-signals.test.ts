// `kybernate run` as a process: registers with an NRI runtime, adjusts what its --select picks, exits 0
// on SIGTERM and SIGINT, and refuses bad arguments with exit code 2 and a message naming what to fix.
import assert from "node:assert/strict";
import { type ChildProcess, spawn } from "node:child_process";
import { once } from "node:events";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { performance } from "node:perf_hooks";
import { after, before, describe, it } from "node:test";
import { packageRoot } from "../../src/base/paths.js";
import { VERSION_ANNOTATION } from "../../src/plugin/kybernate-plugin.js";
import { FakeRuntime } from "./fake-nri-runtime.js";
import { container, pod, within } from "./fixtures.js";

const MAIN = join(packageRoot, "dist", "src", "cli", "main.js");

interface Run {
  child: ChildProcess;
  output: () => string;
  exited: Promise<[number | null, NodeJS.Signals | null]>;
}

function kybernate(args: string[], stateDir: string): Run {
  // Daemon socket and state dir in a temp dir: the defaults are the node's real ones.
  const child = spawn(
    process.execPath,
    [MAIN, "run", "--socket", join(stateDir, "daemon.sock"), "--state-dir", stateDir, ...args],
    { stdio: ["ignore", "pipe", "pipe"] },
  );
  let text = "";
  child.stdout?.on("data", (b: Buffer) => {
    text += b.toString();
  });
  child.stderr?.on("data", (b: Buffer) => {
    text += b.toString();
  });
  const exited = once(child, "exit") as Promise<[number | null, NodeJS.Signals | null]>;
  return { child, output: () => text, exited };
}

async function waitFor(run: Run, pattern: RegExp): Promise<void> {
  while (!pattern.test(run.output())) {
    if (run.child.exitCode !== null) throw new Error(`kybernate exited early: ${run.output()}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

describe("kybernate run", () => {
  let runtime: FakeRuntime;
  let stateDir: string;
  const children: ChildProcess[] = [];

  before(async () => {
    runtime = await FakeRuntime.start();
    stateDir = mkdtempSync(join(tmpdir(), "kybernate-cli-"));
  });
  after(async () => {
    for (const child of children)
      if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL");
    await runtime.close();
    rmSync(stateDir, { recursive: true, force: true });
  });

  for (const signal of ["SIGTERM", "SIGINT"] as const) {
    it(`registers, adjusts a selected container, and exits 0 on ${signal}`, async (t) => {
      const run = kybernate(
        [
          "--nri-socket",
          runtime.socketPath,
          "--index",
          "42",
          "--select",
          "kybernate.io/test=cli",
          "--log-level",
          "info",
        ],
        stateDir,
      );
      children.push(run.child);
      const conn = await runtime.nextConnection(10_000);
      assert.deepEqual(await conn.registered, { pluginName: "kybernate", pluginIdx: "42", NRIVersion: "" });
      await within(5000, "Configure + Synchronize", conn.handshake);
      const p = pod("cli", { labels: { "kybernate.io/test": "cli" } });
      const selected = await conn.createContainer(p, container("cli-c", p.id));
      assert.ok(selected.adjust?.annotations[VERSION_ANNOTATION], JSON.stringify(selected));
      const other = await conn.createContainer(pod("other"), container("other-c", "other"));
      assert.equal(other.adjust, null);

      const sent = performance.now();
      run.child.kill(signal);
      const [code, killedBy] = await within(5000, `exit after ${signal}`, run.exited);
      const tookMs = performance.now() - sent;
      t.diagnostic(`exit ${tookMs.toFixed(0)} ms after ${signal}`);
      assert.deepEqual([code, killedBy], [0, null], run.output());
      await within(1000, "the runtime seeing the plugin go", conn.closed);
      const lines = run
        .output()
        .split("\n")
        .filter((l) => l.startsWith("{"))
        .map((l) => JSON.parse(l));
      assert.ok(
        lines.some((l) => l.msg === "registered with runtime"),
        run.output(),
      );
      assert.ok(
        lines.some((l) => l.msg === "shutting down" && l.signal === signal),
        run.output(),
      );
    });
  }

  it("exits 0 on SIGTERM while no runtime is listening yet", async () => {
    const run = kybernate(["--nri-socket", join(stateDir, "no-such-nri.sock")], stateDir);
    children.push(run.child);
    // Signal only once it runs its retry loop: before that, SIGTERM's default action would kill it.
    await within(10_000, "the first failed dial", waitFor(run, /NRI registration failed; retrying/));
    run.child.kill("SIGTERM");
    const [code] = await within(5000, "exit after SIGTERM", run.exited);
    assert.equal(code, 0, run.output());
    assert.match(run.output(), /no NRI socket: is containerd running with NRI enabled\?/);
  });

  const refused: [string[], RegExp][] = [
    [["--index", "abc"], /kybernate: --index must be "00"–"99", got "abc"/],
    [["--index", "100"], /kybernate: --index must be "00"–"99", got "100"/],
    [
      ["--select", "=x"],
      /kybernate: selector term "=x": key must look like a label key \(e\.g\. kybernate\.io\/checkpoint=true\)/,
    ],
    [["--select", ","], /kybernate: selector "," is empty: give KEY=VALUE\[,KEY=VALUE\.\.\.\]/],
  ];
  for (const [args, message] of refused) {
    it(`refuses ${args.join(" ")} with exit code 2 and says what to fix`, async () => {
      const run = kybernate(["--nri-socket", runtime.socketPath, ...args], stateDir);
      children.push(run.child);
      const [code] = await within(10_000, "exit", run.exited);
      assert.equal(code, 2, run.output());
      assert.match(run.output(), message);
    });
  }
});

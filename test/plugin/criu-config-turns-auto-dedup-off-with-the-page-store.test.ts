/**
 * With the page store, restored page images are links to the store's copy, and CRIU's auto-dedup would punch holes
 * into it: the config kybernate writes then ends with no-auto-dedup, and the action script asks the daemon at
 * post-dump. Without the store, the config is what it was, and post-dump only stamps the time.
 */
import assert from "node:assert/strict";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import { autoDedupProblem } from "../../src/daemon/restore-pages.js";
import {
  type CriuConfigOptions,
  criuFilesFor,
  renderActionScript,
  renderCriuConfig,
} from "../../src/plugin/criu-config.js";

const options: CriuConfigOptions = {
  stateDir: "/var/lib/kybernate/containers",
  hookPath: "/opt/kybernate/hooks/kybernate-criu-hook",
  node: "/usr/bin/node",
  daemonSocket: "/run/kybernate/daemon.sock",
  networkLock: "nftables",
  timeoutS: 90,
  hookTimeoutMs: 95_000,
};
const files = criuFilesFor(options.stateDir, "c0ffee");

test("with the page store: the config ends with no-auto-dedup and passes the daemon's check", async () => {
  const config = renderCriuConfig(files, { ...options, pageStore: true });
  const lines = config.trim().split("\n");
  assert.equal(lines.at(-1), "no-auto-dedup");
  assert.ok(!lines.includes("auto-dedup"));
  const dir = mkdtempSync(join(tmpdir(), "kyb-criu-conf-"));
  try {
    writeFileSync(join(dir, "criu.conf"), config);
    assert.equal(await autoDedupProblem(join(dir, "criu.conf")), undefined);
    writeFileSync(join(dir, "criu.conf"), renderCriuConfig(files, options));
    assert.match((await autoDedupProblem(join(dir, "criu.conf"))) ?? "", /does not turn auto-dedup off/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
  assert.match(
    renderActionScript("c0ffee", { ...options, pageStore: true }),
    /KYBERNATE_PAGE_STORE='1' exec /,
  );
});

test("without the page store: no dedup line, and the action script does not send post-dump to the daemon", () => {
  assert.ok(!/dedup/.test(renderCriuConfig(files, options)));
  const script = renderActionScript("c0ffee", options);
  assert.ok(!/KYBERNATE_PAGE_STORE/.test(script));
  assert.match(script, new RegExp(`KYBERNATE_CONTAINER_DIR='${files.dir}' exec `));
});

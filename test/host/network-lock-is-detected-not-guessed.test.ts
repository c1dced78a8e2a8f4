/**
 * The CRIU network lock is what this node's CRIU and PATH offer: nftables when `criu check --feature
 * network_lock_nftables` says so, else iptables when iptables-restore and iptables are on the PATH, else none,
 * each saying why.
 */
import assert from "node:assert/strict";
import { chmodSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, test } from "node:test";
import { detectNetworkLock } from "../../src/host/criu.js";

const dir = mkdtempSync(join(tmpdir(), "kyb-lock-"));
after(() => rmSync(dir, { recursive: true, force: true }));

function executable(path: string, body: string): string {
  writeFileSync(path, `#!/bin/sh\n${body}\n`);
  chmodSync(path, 0o755);
  return path;
}

const nft = executable(join(dir, "criu-nft"), 'echo "network_lock_nftables is supported"');
const old = executable(
  join(dir, "criu-old"),
  'echo "Error (criu/cr-check.c:1901): Unknown feature network_lock_nftables" >&2; exit 1',
);
const iptablesDir = join(dir, "sbin");
mkdirSync(iptablesDir);
executable(join(iptablesDir, "iptables-restore"), "exit 0");
executable(join(iptablesDir, "iptables"), "exit 0");

const cases = [
  { name: "CRIU with libnftables: nftables", criu: nft, path: "", method: "nftables", reason: /supported/ },
  {
    name: "no nftables lock, iptables on PATH: iptables",
    criu: old,
    path: iptablesDir,
    method: "iptables",
    reason: /Unknown feature network_lock_nftables.*iptables-restore found/,
  },
  {
    name: "neither: skip, saying so",
    criu: old,
    path: join(dir, "empty"),
    method: "skip",
    reason: /no network lock: .*no iptables-restore on PATH/,
  },
  { name: "no CRIU at all: skip", criu: join(dir, "missing"), path: "", method: "skip", reason: /not found/ },
];

for (const c of cases)
  test(c.name, async () => {
    const choice = await detectNetworkLock(c.criu, c.path);
    assert.equal(choice.method, c.method);
    assert.match(choice.reason, c.reason);
  });

import assert from "node:assert/strict";
import { test } from "node:test";
import { checkContainerdConfig, needsRestoreSwitch, tomlKeys } from "../../src/admin/containerd-config.js";

test("NRI: on by default in 2.x, off when disabled, off by default in 1.7 — with the TOML to add", () => {
  assert.deepEqual(
    checkContainerdConfig("version = 3\n", "2.1.9").map((f) => f.ok),
    [true],
  );
  const disabled = checkContainerdConfig(
    '[plugins."io.containerd.nri.v1.nri"]\n  disable = true # off\n',
    "2.1.9",
  );
  assert.equal(disabled[0]?.ok, false);
  assert.equal(disabled[0]?.add, '[plugins."io.containerd.nri.v1.nri"]\n  disable = false');
  assert.equal(checkContainerdConfig("", "1.7.24")[0]?.ok, false);
});

test("restore-via-create: needed from 2.2.7 and 2.3.4 only", () => {
  assert.deepEqual(["2.1.9", "2.2.6", "2.2.7", "2.3.3", "2.3.4"].map(needsRestoreSwitch), [
    false,
    false,
    true,
    false,
    true,
  ]);
  const missing = checkContainerdConfig("", "2.2.7");
  assert.equal(missing[1]?.ok, false);
  assert.match(
    missing[1]?.add ?? "",
    /^\[plugins\."io\.containerd\.cri\.v1\.runtime"\]\n {2}enable_experimental_restore_via_create = true$/,
  );
  const set = checkContainerdConfig(
    '[plugins."io.containerd.cri.v1.runtime"]\nenable_experimental_restore_via_create = true\n',
    "2.3.4",
  );
  assert.deepEqual(
    set.map((f) => f.ok),
    [true, true],
  );
});

test("containerd 2.4 is named as unable to restore, with the RestorePod situation, and not asked for the 2.3 switch", () => {
  const findings = checkContainerdConfig("", "2.4.0");
  assert.equal(needsRestoreSwitch("2.4.0"), false);
  assert.ok(findings.every((f) => !f.add?.includes("enable_experimental_restore_via_create")));
  const gone = findings.find((f) => !f.ok && /removed restore/.test(f.what));
  assert.match(
    gone?.what ?? "",
    /RestorePod call \(KEP-5823\), is in neither containerd 2\.4\.0-beta\.0 nor the CRI API/,
  );
  assert.match(gone?.what ?? "", /restores need containerd 2\.1–2\.3/);
});

test("enable_criu = false turns checkpoint and restore off: the line to set it true", () => {
  const f = checkContainerdConfig(
    '[plugins."io.containerd.cri.v1.runtime"]\n  enable_criu = false\n',
    "2.3.4",
  );
  const off = f.find((x) => /enable_criu = false/.test(x.what));
  assert.equal(off?.ok, false);
  assert.equal(off?.add, '[plugins."io.containerd.cri.v1.runtime"]\n  enable_criu = true');
});

test("tomlKeys reads tables and keys, skipping comments", () => {
  const keys = tomlKeys('# c\nversion = 3\n[plugins. "x"]\n  a = "b" # trailing\n');
  assert.equal(keys.get("version"), "3");
  assert.equal(keys.get('plugins."x".a'), '"b"');
});

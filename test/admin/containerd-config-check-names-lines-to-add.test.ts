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

test("containerd 2.4 is named as unable to restore", () => {
  assert.equal(
    checkContainerdConfig("", "2.4.0").some((f) => !f.ok && /removed restore/.test(f.what)),
    true,
  );
});

test("tomlKeys reads tables and keys, skipping comments", () => {
  const keys = tomlKeys('# c\nversion = 3\n[plugins. "x"]\n  a = "b" # trailing\n');
  assert.equal(keys.get("version"), "3");
  assert.equal(keys.get('plugins."x".a'), '"b"');
});

import assert from "node:assert/strict";
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { test } from "node:test";
import { install, productionPackages, readManifest, uninstall } from "../../src/admin/install.js";
import { packageRoot } from "../../src/base/paths.js";

function tree(root: string): string[] {
  const out: string[] = [];
  const walk = (dir: string) => {
    for (const e of readdirSync(dir, { withFileTypes: true })) {
      const p = join(dir, e.name);
      out.push(`${p.slice(root.length)} ${e.isDirectory() ? "dir" : statSync(p).size}`);
      if (e.isDirectory()) walk(p);
    }
  };
  walk(root);
  return out.sort();
}

/** A small package to install from: the real layout with one dependency, so each install takes milliseconds. */
function fakeSource(): { root: string; node: string } {
  const root = mkdtempSync("/tmp/kyb-install-src-");
  const files: Record<string, string> = {
    "package.json": JSON.stringify({
      name: "kybernate",
      version: "0.1.0",
      type: "module",
      dependencies: { dep: "1" },
    }),
    "dist/src/cli/main.js": "export {};\n",
    "hooks/kybernate-criu-hook": "#!/bin/sh\n",
    "proto/x.proto": 'syntax = "proto3";\n',
    "node_modules/dep/package.json": JSON.stringify({ name: "dep", version: "1.0.0" }),
    "node_modules/devonly/package.json": JSON.stringify({ name: "devonly", version: "1.0.0" }),
    "install/systemd/kybernate.service": readFileSync(
      join(packageRoot, "install/systemd/kybernate.service"),
      "utf8",
    ),
    "bin/node": "#!/bin/sh\n",
  };
  for (const [path, text] of Object.entries(files)) {
    mkdirSync(dirname(join(root, path)), { recursive: true });
    writeFileSync(join(root, path), text);
  }
  return { root, node: join(root, "bin/node") };
}

test("the production closure holds runtime deps, not dev ones", async () => {
  const packages = await productionPackages(packageRoot);
  for (const name of [
    "node_modules/@grpc/grpc-js",
    "node_modules/pino",
    "node_modules/koffi",
    "node_modules/prom-client",
  ])
    assert.ok(packages.includes(name), name);
  for (const name of ["node_modules/typescript", "node_modules/@biomejs/biome", "node_modules/yaml"])
    assert.ok(!packages.includes(name), name);
});

test("with systemd: the unit is written, enabled and started; uninstall disables it and the host is as before", async () => {
  const host = mkdtempSync("/tmp/kyb-install-unit-");
  const unitDir = join(host, "etc/systemd/system");
  mkdirSync(unitDir, { recursive: true });
  mkdirSync(join(host, "opt"));
  writeFileSync(join(host, "opt/other"), "someone else's\n");
  const before = tree(host);
  const calls: string[] = [];
  const systemctl = async (args: string[]) => {
    calls.push(args.join(" "));
  };
  const prefix = join(host, "opt/kybernate");
  const src = fakeSource();
  const report = await install({
    prefix,
    sourceRoot: src.root,
    nodeBinary: src.node,
    version: "0.1.0",
    unitDir,
    systemdRunning: true,
    runArgs: ["--metrics-port", "9464"],
    systemctl,
  });
  assert.deepEqual(calls, ["daemon-reload", "enable --now kybernate.service"]);
  const unit = readFileSync(join(unitDir, "kybernate.service"), "utf8");
  assert.match(unit, new RegExp(`^ExecStart=${prefix}/bin/kybernate run --metrics-port 9464$`, "m"));
  assert.doesNotMatch(unit, new RegExp(`(?<!${host})/opt/kybernate`), "every path points into the prefix");
  assert.deepEqual(report.manifest.dirs, [prefix, ...report.manifest.dirs.slice(1)]);
  assert.equal((await readManifest(prefix))?.systemd?.enabled, true);

  // A second install replaces the first instead of refusing its own files.
  await install({
    prefix,
    sourceRoot: src.root,
    nodeBinary: src.node,
    version: "0.1.0",
    unitDir,
    systemdRunning: true,
    runArgs: [],
    systemctl,
  });
  assert.ok(readFileSync(join(prefix, "node_modules/dep/package.json")));
  assert.throws(() => readFileSync(join(prefix, "node_modules/devonly/package.json")), /ENOENT/);

  // A file someone else put in the prefix stays, and keeps its directory.
  writeFileSync(join(prefix, "operator-notes.txt"), "mine\n");
  const { kept } = await uninstall({ prefix, systemctl });
  assert.deepEqual(kept, [prefix]);
  assert.ok(calls.includes("disable --now kybernate.service"));
  assert.deepEqual(readdirSync(prefix), ["operator-notes.txt"]);
  rmSync(prefix, { recursive: true });
  assert.deepEqual(tree(host), before, "the unit and every installed file are gone");
});

test("install refuses to overwrite a file it did not install", async () => {
  const host = mkdtempSync("/tmp/kyb-install-clash-");
  const prefix = join(host, "kyb");
  const src = fakeSource();
  mkdirSync(join(prefix, "bin"), { recursive: true });
  writeFileSync(join(prefix, "bin/node"), "not ours\n");
  await assert.rejects(
    install({
      prefix,
      sourceRoot: src.root,
      nodeBinary: src.node,
      version: "0",
      unitDir: "",
      systemdRunning: false,
      runArgs: [],
    }),
    /bin\/node exists and was not installed by kybernate: remove it or choose another --prefix/,
  );
  assert.equal(readFileSync(join(prefix, "bin/node"), "utf8"), "not ours\n");
});

test("uninstall without a manifest says which prefix to give", async () => {
  await assert.rejects(
    uninstall({ prefix: mkdtempSync("/tmp/kyb-none-") }),
    /nothing was installed by kybernate.*--prefix/,
  );
});

/** The layer rules hold for src/, and the checker does catch a cycle and an upward import when there is one. */
import assert from "node:assert/strict";
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { join, relative } from "node:path";
import { test } from "node:test";
import { packageRoot } from "../../src/base/paths.js";
import { layerViolations } from "./layers.js";

test("src/ has no import cycle and no import against the layer order", async () => {
  process.chdir(packageRoot);
  const violations = await layerViolations("src");
  assert.deepEqual(violations, [], violations.map((v) => `${v.rule}: ${v.from} → ${v.to}`).join("\n"));
});

test("the checker fails on a cycle and on an import against the order", async () => {
  process.chdir(packageRoot);
  const dir = mkdtempSync(join(packageRoot, "test", "architecture", "tmp-"));
  try {
    const file = (path: string, text: string) => {
      mkdirSync(join(dir, "src", path, ".."), { recursive: true });
      writeFileSync(join(dir, "src", path), text);
    };
    file("host/a.ts", 'import { b } from "./b.js";\nexport const a = () => b;\n');
    file("host/b.ts", 'import { a } from "./a.js";\nexport const b = () => a;\n');
    file("base/up.ts", 'import { a } from "../host/a.js";\nexport const up = a;\n');
    process.chdir(dir);
    writeFileSync(
      join(dir, "tsconfig.json"),
      '{"compilerOptions":{"module":"NodeNext","moduleResolution":"NodeNext"}}',
    );
    const violations = await layerViolations("src");
    const rules = new Set(violations.map((v) => v.rule));
    assert.ok(rules.has("no-circular"), JSON.stringify(violations));
    assert.ok(rules.has("base-imports-only-base"), JSON.stringify(violations));
    assert.ok(violations.some((v) => relative(dir, v.from).includes("up.ts") || v.from.includes("up.ts")));
  } finally {
    process.chdir(packageRoot);
    rmSync(dir, { recursive: true, force: true });
  }
});

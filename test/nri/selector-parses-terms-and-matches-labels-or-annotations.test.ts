// The selector is src/plugin's, tested here with the NRI plugin it configures.
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { parseSelector } from "../../src/plugin/selector.js";
import { container, pod } from "./fixtures.js";

describe("selector parsing", () => {
  const valid: [string, { key: string; value?: string }[]][] = [
    ["a=b", [{ key: "a", value: "b" }]],
    ["kybernate.io/checkpoint=true", [{ key: "kybernate.io/checkpoint", value: "true" }]],
    ["app", [{ key: "app" }]],
    ["a=", [{ key: "a", value: "" }]],
    ["a=b=c", [{ key: "a", value: "b=c" }]],
    [
      " a = b , tier=gpu ",
      [
        { key: "a", value: "b" },
        { key: "tier", value: "gpu" },
      ],
    ],
    [",,x.y_z-1/k=v,,", [{ key: "x.y_z-1/k", value: "v" }]],
  ];
  for (const [spec, terms] of valid) {
    it(`parses ${JSON.stringify(spec)}`, () => {
      assert.deepEqual(parseSelector(spec).terms, terms);
    });
  }

  const invalid: [string, RegExp][] = [
    ["", /selector "" is empty: give KEY=VALUE\[,KEY=VALUE\.\.\.\]/],
    [" , ", /selector " , " is empty/],
    ["=x", /selector term "=x": key must look like a label key \(e\.g\. kybernate\.io\/checkpoint=true\)/],
    ["a b=c", /selector term "a b=c": key must look like a label key/],
    ["-a=b", /selector term "-a=b": key must look like a label key/],
    ["ok=1,/bad=2", /selector term "\/bad=2"/],
  ];
  for (const [spec, message] of invalid) {
    it(`refuses ${JSON.stringify(spec)}, naming the term to fix`, () => {
      assert.throws(() => parseSelector(spec), message);
    });
  }
});

describe("selector matching", () => {
  const table: {
    name: string;
    spec: string;
    where: "cAnn" | "cLab" | "pAnn" | "pLab";
    map: Record<string, string>;
    match: boolean;
  }[] = [
    { name: "container annotation", spec: "k=v", where: "cAnn", map: { k: "v" }, match: true },
    { name: "container label", spec: "k=v", where: "cLab", map: { k: "v" }, match: true },
    { name: "pod annotation", spec: "k=v", where: "pAnn", map: { k: "v" }, match: true },
    { name: "pod label", spec: "k=v", where: "pLab", map: { k: "v" }, match: true },
    { name: "other value", spec: "k=v", where: "cLab", map: { k: "w" }, match: false },
    { name: "key alone, any value", spec: "k", where: "pAnn", map: { k: "anything" }, match: true },
    { name: "key alone, absent", spec: "k", where: "pAnn", map: { other: "v" }, match: false },
    { name: "empty value matches only empty", spec: "k=", where: "cAnn", map: { k: "" }, match: true },
    { name: "empty value vs set value", spec: "k=", where: "cAnn", map: { k: "v" }, match: false },
    {
      name: "prefix of a key is not the key",
      spec: "kybernate.io/check=true",
      where: "cAnn",
      map: { "kybernate.io/checkpoint": "true" },
      match: false,
    },
  ];
  for (const row of table) {
    it(`${row.spec} vs ${row.name}: ${row.match ? "match" : "no match"}`, () => {
      const p = pod("p", {
        annotations: row.where === "pAnn" ? row.map : {},
        labels: row.where === "pLab" ? row.map : {},
      });
      const c = container("c", "p", {
        annotations: row.where === "cAnn" ? row.map : {},
        labels: row.where === "cLab" ? row.map : {},
      });
      assert.equal(parseSelector(row.spec).matches(p, c), row.match);
    });
  }

  it("needs every term to hold, each wherever it is found", () => {
    const selector = parseSelector("team=ml,gpu=yes");
    const p = pod("p", { labels: { team: "ml" } });
    assert.equal(selector.matches(p, container("c", "p", { annotations: { gpu: "yes" } })), true);
    assert.equal(selector.matches(p, container("c", "p")), false);
    assert.equal(selector.matches(pod("q"), container("c", "q", { annotations: { gpu: "yes" } })), false);
  });
});

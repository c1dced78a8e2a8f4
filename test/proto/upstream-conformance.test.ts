// The project's own protos must stay wire-compatible with upstream: checked field by field against the
// upstream api.proto files that Debian's -dev packages ship (extracted by the test node, or installed).
import assert from "node:assert/strict";
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, it } from "node:test";
import { packageRoot, protoDir } from "../../src/base/paths.js";
import { compareProtos, parseProto } from "./proto-compare.js";

const CRI_UPSTREAM = "k8s.io/cri-api/pkg/apis/runtime/v1/api.proto";
const NRI_UPSTREAM = "github.com/containerd/nri/pkg/api/api.proto";
const TASKS_UPSTREAM = "github.com/containerd/containerd/api/services/tasks/v1/tasks.proto";
const TASK_TYPES_UPSTREAM = "github.com/containerd/containerd/api/types/task/task.proto";

/** KYBERNATE_UPSTREAM_PROTOS (a prefix with share/gocode/src/...) only, else the test node's prefix, else /usr. */
function upstreamPath(rel: string): string {
  const override = process.env.KYBERNATE_UPSTREAM_PROTOS;
  const candidates = override
    ? [join(override, "share/gocode/src", rel)]
    : [join(packageRoot, ".testnode/prefix/share/gocode/src", rel), join("/usr/share/gocode/src", rel)];
  const found = candidates.find((p) => existsSync(p));
  if (!found) {
    assert.fail(
      `upstream ${rel} not found (looked at ${candidates.join(", ")}): run npm run testnode:up ` +
        "or apt install golang-github-containerd-nri-dev golang-k8s-cri-api-dev golang-github-containerd-containerd-api-dev" +
        (override ? ", or fix KYBERNATE_UPSTREAM_PROTOS" : ""),
    );
  }
  return found;
}

function packageOf(source: string): string {
  return /^\s*package\s+([\w.]+)\s*;/m.exec(source)?.[1] ?? "(none)";
}

function conformance(projectFile: string, upstreamRel: string, missing: "error" | "note") {
  const upstreamFile = upstreamPath(upstreamRel);
  const mine = readFileSync(join(protoDir, projectFile), "utf8");
  const theirs = readFileSync(upstreamFile, "utf8");
  // A project file under another package would match nothing and pass vacuously in "note" mode.
  assert.equal(packageOf(mine), packageOf(theirs), `${projectFile} must use upstream's package`);
  const result = compareProtos(mine, theirs, {
    missing,
    missingLabel: "not in this upstream copy (Debian's NRI is v0.8)",
  });
  return { ...result, upstreamFile };
}

describe("proto/cri/api.proto against k8s.io/cri-api runtime/v1", () => {
  it("declares only messages, fields, enum values and RPCs upstream has, with upstream's numbers and types", (t) => {
    const r = conformance("cri/api.proto", CRI_UPSTREAM, "error");
    t.diagnostic(`compared with ${r.upstreamFile}: ${r.checked.types} types, ${r.checked.members} members`);
    assert.deepEqual(r.errors, []);
    assert.ok(
      r.checked.types >= 60,
      `only ${r.checked.types} types compared; is proto/cri/api.proto complete?`,
    );
  });
});

describe("proto/nri/api.proto against containerd/nri pkg/api", () => {
  it("agrees with upstream wherever both declare something; newer declarations are reported, not failed", (t) => {
    const r = conformance("nri/api.proto", NRI_UPSTREAM, "note");
    t.diagnostic(`compared with ${r.upstreamFile}: ${r.checked.types} types, ${r.checked.members} members`);
    for (const note of r.notes) t.diagnostic(note);
    assert.deepEqual(r.errors, []);
    assert.ok(r.checked.types > 0, "no NRI type matched upstream by name: wrong package or file?");
  });
});

describe("proto/containerd against containerd's api (Tasks service, task types)", () => {
  it("declares only what upstream has, with upstream's numbers and types", (t) => {
    for (const [mine, theirs, least] of [
      ["containerd/tasks.proto", TASKS_UPSTREAM, 4],
      ["containerd/task.proto", TASK_TYPES_UPSTREAM, 2],
    ] as const) {
      const r = conformance(mine, theirs, "error");
      t.diagnostic(
        `${mine} compared with ${r.upstreamFile}: ${r.checked.types} types, ${r.checked.members} members`,
      );
      assert.deepEqual(r.errors, []);
      assert.ok(r.checked.types >= least, `only ${r.checked.types} types of ${mine} compared`);
    }
  });
});

describe("the proto comparer", () => {
  const upstream = `
    syntax = "proto3";
    package demo.v1;
    import "github.com/gogo/protobuf/gogoproto/gogo.proto";
    option (gogoproto.marshaler_all) = true;
    service Svc { rpc Do(Req) returns (Res); rpc Watch(Req) returns (stream Res); }
    enum Mode { A = 0; B = 1; }
    message Item { string name = 1; }
    message Req {
      string id = 1 [(gogoproto.customname) = "ID"];
      repeated Item items = 2;
      map<string, string> labels = 3;
      Mode mode = 4;
      int64 size = 5;
      bytes data = 6;
    }
    message Res { Item item = 1; }
    message Other { string name = 1; }
  `;
  const compare = (project: string, missing: "error" | "note" = "error") =>
    compareProtos(`syntax = "proto3"; package demo.v1; ${project}`, upstream, {
      missing,
      missingLabel: "newer",
    });

  const base = {
    enums: "enum Mode { A = 0; B = 1; }",
    item: "message Item { string name = 1; }",
    res: "message Res { Item item = 1; }",
    svc: "service Svc { rpc Do(Req) returns (Res); }",
  };
  const withReq = (req: string, over: Partial<typeof base> = {}) => {
    const p = { ...base, ...over };
    return `${p.enums} ${p.item} ${p.res} ${p.svc} message Req { ${req} }`;
  };

  it("accepts a faithful subset (gogoproto imports and options stripped from upstream)", () => {
    const r = compare(
      withReq("string id = 1; repeated Item items = 2; map<string, string> labels = 3; Mode mode = 4;"),
    );
    assert.deepEqual(r.errors, []);
    assert.deepEqual(r.notes, []);
    assert.deepEqual(r.checked, { types: 5, members: 9 });
  });

  const mutations: [string, string, RegExp, Partial<typeof base>?][] = [
    ["a wrong field number", "string id = 7;", /Req\.id: project string = 7, upstream string = 1/],
    ["a wrong scalar type", "bytes id = 1;", /Req\.id: project bytes = 1, upstream string = 1/],
    ["int64 vs int32", "int32 size = 5;", /Req\.size: project int32 = 5, upstream int64 = 5/],
    [
      "a lost repeated",
      "Item items = 2;",
      /Req\.items: project message demo\.v1\.Item = 2, upstream repeated/,
    ],
    [
      "a wrong map value type",
      "map<string, bytes> labels = 3;",
      /map<string, bytes> = 3, upstream map<string, string>/,
    ],
    [
      "a wrong map key type",
      "map<int32, string> labels = 3;",
      /map<int32, string> = 3, upstream map<string, string>/,
    ],
    [
      "a wrong message reference",
      "repeated Other items = 2;",
      /Req\.items: project repeated message demo\.v1\.Other = 2, upstream repeated message demo\.v1\.Item = 2/,
      { item: "message Item { string name = 1; } message Other { string name = 1; }" },
    ],
    [
      "an enum where upstream has a string",
      "Mode id = 1;",
      /Req\.id: project enum demo\.v1\.Mode = 1, upstream string = 1/,
    ],
    ["a renamed field on upstream's number", "string ident = 1;", /Req\.ident = 1, but upstream's 1 is id/],
  ];
  for (const [what, req, expected, over] of mutations) {
    it(`fails on ${what}`, () => {
      const r = compare(withReq(req, over));
      assert.equal(r.errors.length, 1, `expected exactly one error, got ${JSON.stringify(r.errors)}`);
      assert.match(r.errors[0] ?? "", expected);
    });
  }

  it("fails on a wrong enum value number", () => {
    const r = compare(withReq("Mode mode = 4;", { enums: "enum Mode { A = 0; B = 2; }" }));
    assert.deepEqual(r.errors, ["enum demo.v1.Mode: B = 2, upstream B = 1"]);
  });

  it("fails on a wrong RPC response type and on a lost stream", () => {
    const wrongType = compare(
      withReq("string id = 1;", { svc: "service Svc { rpc Do(Req) returns (Item); }" }),
    );
    assert.deepEqual(wrongType.errors, [
      "rpc demo.v1.Svc.Do: (message demo.v1.Req) returns (message demo.v1.Item), upstream (message demo.v1.Req) returns (message demo.v1.Res)",
    ]);
    const lostStream = compare(
      withReq("string id = 1;", { svc: "service Svc { rpc Watch(Req) returns (Res); }" }),
    );
    assert.match(
      lostStream.errors[0] ?? "",
      /Watch: .* returns \(message demo\.v1\.Res\), upstream .* returns \(stream message/,
    );
  });

  it("treats declarations upstream lacks as errors or, for older upstream copies, as notes", () => {
    const project = `${withReq("string id = 1; string extra = 9;")} message Newer { string x = 1; }`;
    const strict = compare(project, "error");
    assert.deepEqual(strict.errors, [
      "field demo.v1.Req.extra (string = 9) does not exist upstream",
      "message demo.v1.Newer does not exist upstream",
    ]);
    const lenient = compare(project, "note");
    assert.deepEqual(lenient.errors, []);
    assert.deepEqual(lenient.notes, [
      "field demo.v1.Req.extra (string = 9): newer — checked by name only",
      "message demo.v1.Newer: newer — checked by name only",
    ]);
  });

  it("still fails a field in both versions with a different type when missing declarations are only notes", () => {
    const r = compare(withReq("string id = 2;"), "note");
    assert.equal(r.errors.length, 1);
    assert.match(r.errors[0] ?? "", /Req\.id: project string = 2, upstream string = 1/);
  });

  it("parses upstream's gogoproto-decorated source", () => {
    const root = parseProto(upstream);
    assert.equal(root.lookupType("demo.v1.Req").fields.id?.id, 1);
  });
});

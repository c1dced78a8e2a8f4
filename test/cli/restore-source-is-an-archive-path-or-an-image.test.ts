import assert from "node:assert/strict";
import { test } from "node:test";
import { explainPullFailure } from "../../src/cli/checkpoint-image.js";
import { isArchiveArgument } from "../../src/cli/commands/restore.js";

test("paths and .tar names are archives; HOST/PATH:TAG is an image", () => {
  for (const a of ["/var/lib/kubelet/checkpoints/c.tar", "./c.tar", "../c", "c.tar", "checkpoint"])
    assert.ok(isArchiveArgument(a), a);
  for (const r of ["localhost:5555/kybernate/ckpt:1", "registry.example/ml/ckpt@sha256:abc", "team/ckpt:2"])
    assert.ok(!isArchiveArgument(r), r);
});

test("a pull failure says whether the image is damaged or absent", () => {
  assert.match(
    explainPullFailure("r/x:1", new Error("failed to extract layer sha256:1: unexpected EOF")),
    /the image r\/x:1 is damaged .*rebuild and push it again/,
  );
  assert.match(explainPullFailure("r/x:1", new Error("r/x:1: not found")), /the registry has no r\/x:1/);
  assert.match(
    explainPullFailure("r/x:1", new Error("connection refused")),
    /pulling r\/x:1 failed: connection refused/,
  );
});

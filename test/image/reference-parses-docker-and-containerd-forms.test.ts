import assert from "node:assert/strict";
import { test } from "node:test";
import { formatReference, isLoopbackRegistry, parseReference } from "../../src/image/reference.js";

test("a host with a port, a path and a tag", () => {
  assert.deepEqual(parseReference("localhost:5555/kybernate/ckpt:v1"), {
    registry: "localhost:5555",
    repository: "kybernate/ckpt",
    tag: "v1",
  });
  assert.deepEqual(parseReference(`127.0.0.1:5555/a/b/c@sha256:${"a".repeat(64)}`), {
    registry: "127.0.0.1:5555",
    repository: "a/b/c",
    digest: `sha256:${"a".repeat(64)}`,
  });
});

test("Docker Hub names get docker.io, library/ and latest", () => {
  assert.deepEqual(parseReference("ubuntu"), {
    registry: "docker.io",
    repository: "library/ubuntu",
    tag: "latest",
  });
  assert.equal(formatReference(parseReference("team/app:2")), "docker.io/team/app:2");
});

test("malformed references are refused with the form to write", () => {
  for (const bad of ["", "Upper/Case:1", "host:5555/a:b:c", "x/y@sha256:short", "a//b:1"])
    assert.throws(() => parseReference(bad), /is not an image reference .*HOST\[:PORT\]\/PATH:TAG/, bad);
});

test("plain HTTP only for registries on this machine", () => {
  assert.ok(isLoopbackRegistry("localhost:5555"));
  assert.ok(isLoopbackRegistry("127.0.0.1:5555"));
  assert.ok(isLoopbackRegistry("[::1]:5000"));
  assert.ok(!isLoopbackRegistry("registry.example:5000"));
});

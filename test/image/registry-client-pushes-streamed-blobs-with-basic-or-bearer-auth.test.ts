import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { Readable } from "node:stream";
import { pipeline } from "node:stream/promises";
import { afterEach, describe, test } from "node:test";
import { MEDIA_TYPE } from "../../src/image/oci.js";
import { RegistryClient } from "../../src/image/registry.js";
import { type FakeRegistry, startFakeRegistry } from "./fake-registry.js";

const sha = (b: Buffer) => `sha256:${createHash("sha256").update(b).digest("hex")}`;

describe("the registry client against a fake distribution API", () => {
  let reg: FakeRegistry | undefined;
  afterEach(async () => {
    await reg?.stop();
    reg = undefined;
  });

  test("a streamed upload arrives whole, in pieces, and is committed under its digest", async () => {
    reg = await startFakeRegistry();
    const client = new RegistryClient(reg.host);
    const blob = Buffer.alloc(6 * 2 ** 20, 3);
    blob.write("head", 0);
    const upload = await client.startUpload("k/ckpt");
    await pipeline(Readable.from([blob.subarray(0, 2 ** 20), blob.subarray(2 ** 20)]), upload.stream);
    await upload.finish(sha(blob));
    assert.deepEqual(reg.blobs.get(sha(blob)), blob);
    assert.ok(reg.patchChunks.length > 1, "the body came as a stream, not one buffer");
    assert.ok(await client.hasBlob("k/ckpt", sha(blob)));
  });

  test("a wrong digest is the registry's refusal, with its error code", async () => {
    reg = await startFakeRegistry();
    const client = new RegistryClient(reg.host);
    const upload = await client.startUpload("k/ckpt");
    upload.stream.end(Buffer.from("abc"));
    await assert.rejects(
      upload.finish(sha(Buffer.from("abd"))),
      /PUT blob sha256:[0-9a-f]+ on 127\.0\.0\.1:\d+\/k\/ckpt: HTTP 400 \(DIGEST_INVALID/,
    );
  });

  test("manifest round trip with its media type and digest", async () => {
    reg = await startFakeRegistry();
    const client = new RegistryClient(reg.host);
    const body = Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: MEDIA_TYPE.manifest }));
    const digest = await client.putManifest("k/ckpt", "v1", body, MEDIA_TYPE.manifest);
    assert.equal(digest, sha(body));
    const got = await client.getManifest("k/ckpt", "v1");
    assert.deepEqual([got.body, got.mediaType, got.digest], [body, MEDIA_TYPE.manifest, sha(body)]);
    await assert.rejects(client.getManifest("k/ckpt", "nope"), /has no manifest nope: check the reference/);
  });

  test("Basic auth: the 401 is answered with the config's user and password", async () => {
    reg = await startFakeRegistry({ kind: "basic", user: "ops", password: "s3cret" });
    const client = new RegistryClient(reg.host, { credentials: { username: "ops", password: "s3cret" } });
    await client.putBlob("k/ckpt", sha(Buffer.from("cfg")), Buffer.from("cfg"));
    assert.ok(reg.blobs.has(sha(Buffer.from("cfg"))));
    await assert.rejects(
      new RegistryClient(reg.host).hasBlob("k/ckpt", sha(Buffer.from("cfg"))),
      /asks for a user and password: log in \(docker login 127\.0\.0\.1:\d+\) and give --registry-config/,
    );
  });

  test("Bearer auth: a token from the realm for the repository's scope, then a streamed upload with it", async () => {
    reg = await startFakeRegistry({ kind: "bearer", user: "ops", password: "s3cret" });
    const client = new RegistryClient(reg.host, { credentials: { username: "ops", password: "s3cret" } });
    const upload = await client.startUpload("k/ckpt");
    upload.stream.end(Buffer.from("layer"));
    await upload.finish(sha(Buffer.from("layer")));
    assert.ok(reg.blobs.has(sha(Buffer.from("layer"))));
    assert.ok(reg.log.includes("GET /token +auth"), reg.log.join("\n"));
    assert.ok(
      reg.log.some((l) => l.startsWith("PATCH ") && l.endsWith("+auth")),
      "the PATCH carries the token",
    );
    const wrong = new RegistryClient(reg.host, { credentials: { username: "ops", password: "nope" } });
    await assert.rejects(
      wrong.hasBlob("k/ckpt", sha(Buffer.from("x"))),
      /refused a token for k\/ckpt \(pull\): HTTP 401; check the credentials/,
    );
  });

  test("an aborted upload is deleted on the registry", async () => {
    reg = await startFakeRegistry();
    const client = new RegistryClient(reg.host);
    const upload = await client.startUpload("k/ckpt");
    upload.stream.write(Buffer.from("half"));
    await upload.abort();
    assert.ok(
      reg.log.some((l) => l.startsWith("DELETE /v2/k/ckpt/blobs/uploads/")),
      reg.log.join("\n"),
    );
  });

  test("no registry there: the error names the address and asks whether it runs", async () => {
    reg = await startFakeRegistry();
    const host = reg.host;
    await reg.stop();
    reg = undefined;
    await assert.rejects(
      new RegistryClient(host).hasBlob("k/ckpt", sha(Buffer.from("x"))),
      /ECONNREFUSED.*is the registry running at 127\.0\.0\.1/,
    );
  });
});

test("a push whose upload connection is cut fails the build with the reason, and does not hang", {
  timeout: 30_000,
}, async () => {
  const { buildImage } = await import("../../src/cli/commands/image.js");
  const { writeFileSync, mkdtempSync, mkdirSync, rmSync } = await import("node:fs");
  const { join } = await import("node:path");
  const { tmpdir } = await import("node:os");
  const { c: createTar } = await import("tar");
  const { defaultArchiveFiles } = await import("../cli/fixtures.js");
  const reg = await startFakeRegistry({ kind: "none" }, 2 * 2 ** 20);
  const dir = mkdtempSync(join(tmpdir(), "kyb-cut-"));
  try {
    const src = join(dir, "src");
    mkdirSync(join(src, "checkpoint"), { recursive: true });
    for (const [f, t] of Object.entries(defaultArchiveFiles())) writeFileSync(join(src, f), t);
    writeFileSync(join(src, "checkpoint", "pages-1.img"), Buffer.alloc(16 * 2 ** 20, 1));
    const archive = join(dir, "a.tar");
    await createTar({ file: archive, cwd: src }, ["checkpoint", "config.dump", "spec.dump", "status.dump"]);
    const started = Date.now();
    await assert.rejects(
      buildImage({
        archive,
        tag: `${reg.host}/k/cut:1`,
        push: true,
        progress: { stream: { write: () => true } },
      }),
      /building .*k\/cut:1 failed: .*(closed|broke off|socket hang up|ECONNRESET|EPIPE)/,
    );
    assert.ok(Date.now() - started < 20_000);
    assert.equal(reg.manifests.size, 0, "no manifest names a half-uploaded layer");
  } finally {
    await reg.stop();
    rmSync(dir, { recursive: true, force: true });
  }
});

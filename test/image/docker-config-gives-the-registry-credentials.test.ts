import assert from "node:assert/strict";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, test } from "node:test";
import { credentialsFor } from "../../src/image/docker-config.js";

const made: string[] = [];
after(() => {
  for (const dir of made) rmSync(dir, { recursive: true, force: true });
});

function config(value: unknown): string {
  const dir = mkdtempSync(join(tmpdir(), "kyb-dcfg-"));
  made.push(dir);
  const file = join(dir, "config.json");
  writeFileSync(file, typeof value === "string" ? value : JSON.stringify(value));
  return file;
}

test("auth (base64 user:password), username + password, registrytoken; keys with or without https://", async () => {
  const file = config({
    auths: {
      "registry.example:5000": { auth: Buffer.from("ops:pa:ss").toString("base64") },
      "https://other.example": { username: "u", password: "p" },
      "tok.example": { registrytoken: "t0k" },
      "https://index.docker.io/v1/": { auth: Buffer.from("hub:pw").toString("base64") },
    },
  });
  assert.deepEqual(await credentialsFor("registry.example:5000", file), {
    username: "ops",
    password: "pa:ss",
  });
  assert.deepEqual(await credentialsFor("other.example", file), { username: "u", password: "p" });
  assert.deepEqual(await credentialsFor("tok.example", file), { registryToken: "t0k" });
  assert.deepEqual(await credentialsFor("docker.io", file), { username: "hub", password: "pw" });
  assert.equal(await credentialsFor("none.example", file), undefined);
});

test("what kybernate cannot use is refused with the reason", async () => {
  await assert.rejects(
    credentialsFor("x", join(tmpdir(), "no-such-dir-kyb", "config.json")),
    /cannot read the registry config/,
  );
  await assert.rejects(credentialsFor("x", config("{nope")), /is not JSON/);
  await assert.rejects(
    credentialsFor("r.example", config({ credsStore: "desktop" })),
    /credential helper docker-credential-desktop, which kybernate does not run/,
  );
  await assert.rejects(
    credentialsFor("r.example", config({ auths: { "r.example": { identitytoken: "x" } } })),
    /identity token .*cannot exchange/,
  );
  await assert.rejects(
    credentialsFor(
      "r.example",
      config({ auths: { "r.example": { auth: Buffer.from("nocolon").toString("base64") } } }),
    ),
    /is not base64 of "user:password"/,
  );
});

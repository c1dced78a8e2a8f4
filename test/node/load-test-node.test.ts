import assert from "node:assert/strict";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, it } from "node:test";
import { loadTestNode, testNodeEnvPath } from "../support/testnode.js";

const dir = mkdtempSync(join(tmpdir(), "kyb-testnode-"));
after(() => rmSync(dir, { recursive: true, force: true }));

const socket = join(dir, "containerd.sock");
writeFileSync(socket, "");

function validEnv(): Record<string, unknown> {
  const p = "/opt/tn/prefix";
  return {
    criSocket: socket,
    nriSocket: join(dir, "nri.sock"),
    containerdSocket: socket,
    registry: "127.0.0.1:5555",
    image: "localhost:5555/kybernate/busybox:1",
    pauseImage: "localhost:5555/kybernate/pause:1",
    prefix: p,
    root: "/opt/tn/root",
    state: "/run/tn/state",
    runcRoot: "/run/tn/runc",
    logDir: "/opt/tn/logs",
    configPath: "/opt/tn/containerd.toml",
    namespace: "k8s.io",
    containerdPid: 100,
    registryPid: 101,
    bin: {
      containerd: `${p}/bin/containerd`,
      ctr: `${p}/bin/ctr`,
      runc: `${p}/bin/runc`,
      criu: `${p}/bin/criu`,
      checkpointctl: `${p}/bin/checkpointctl`,
      shim: `${p}/bin/containerd-shim-runc-v2`,
    },
    protos: { nri: `${p}/nri/api.proto`, cri: `${p}/cri/api.proto` },
    versions: {
      containerd: "2.1.9",
      runc: "1.3.6",
      criu: "4.2.1",
      checkpointctl: "1.3.0",
      registry: "2.8.2",
    },
  };
}

function write(name: string, content: unknown): string {
  const file = join(dir, name);
  writeFileSync(file, typeof content === "string" ? content : JSON.stringify(content));
  return file;
}

describe("loadTestNode", () => {
  it("defaults to .testnode/env.json in the repository root", () => {
    assert.match(testNodeEnvPath(), /\/\.testnode\/env\.json$/);
  });

  it("returns the node described by a complete env.json", () => {
    const node = loadTestNode(write("ok.json", validEnv()));
    assert.equal(node.criSocket, socket);
    assert.equal(node.image, "localhost:5555/kybernate/busybox:1");
    assert.equal(node.containerdPid, 100);
    assert.equal(node.bin.criu, "/opt/tn/prefix/bin/criu");
    assert.equal(node.versions.containerd, "2.1.9");
  });

  it("tells how to bring the node up when env.json is missing", () => {
    assert.throws(
      () => loadTestNode(join(dir, "absent.json")),
      /absent\.json is missing; run `npm run testnode:up`/,
    );
  });

  it("names the file when env.json is not JSON", () => {
    assert.throws(() => loadTestNode(write("bad.json", "{")), /bad\.json is not valid JSON/);
  });

  it("names a missing field, also inside bin", () => {
    const env = validEnv();
    delete env.registry;
    assert.throws(() => loadTestNode(write("noreg.json", env)), /lacks "registry"/);
    const env2 = validEnv();
    delete (env2.bin as Record<string, unknown>).criu;
    assert.throws(() => loadTestNode(write("nocriu.json", env2)), /bin lacks "criu"/);
  });

  it("rejects relative paths and non-numeric pids", () => {
    assert.throws(
      () => loadTestNode(write("rel.json", { ...validEnv(), root: ".testnode/root" })),
      /"root" must be an absolute path/,
    );
    assert.throws(
      () => loadTestNode(write("pid.json", { ...validEnv(), containerdPid: "12" })),
      /"containerdPid" must be a positive pid/,
    );
  });

  it("reports a node that is down when its CRI socket is gone", () => {
    const env = { ...validEnv(), criSocket: join(dir, "gone.sock") };
    assert.throws(
      () => loadTestNode(write("down.json", env)),
      /the test node is down: .*gone\.sock does not exist/,
    );
  });
});

/**
 * Each GPU container's CRIU choice for established TCP connections: dumped with their state unless the pod says
 * kybernate.io/tcp=close; at restore kept (tcp-established) only when every address they use is loopback or an
 * address of the pod restored into, else restored closed (tcp-close), unless kybernate.io/tcp-restore says. The
 * addresses come from the checkpoint archive's kybernate.json, read by seeking over its page images.
 */
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, test } from "node:test";
import { hexAddress } from "../../src/host/net.js";
import { readTarMember } from "../../src/host/tar.js";
import { criuFilesFor, renderCriuConfig } from "../../src/plugin/criu-config.js";
import { type CheckpointNetwork, checkpointNetwork, tcpChoice } from "../../src/plugin/tcp-choice.js";
import { container, pod } from "../nri/fixtures.js";

const dir = mkdtempSync(join(tmpdir(), "kyb-tcp-"));
after(() => rmSync(dir, { recursive: true, force: true }));

const net = (tcpEstablished: string[], extra: Partial<CheckpointNetwork> = {}): CheckpointNetwork => ({
  podIps: ["10.233.0.5"],
  tcpEstablished,
  tcpListening: ["0.0.0.0"],
  ...extra,
});

const cases: Array<{
  name: string;
  restored?: boolean;
  podAnnotations?: Record<string, string>;
  ctrAnnotations?: Record<string, string>;
  ips?: string[];
  network?: CheckpointNetwork;
  mode: "established" | "close";
  reason: RegExp;
  warning?: RegExp;
}> = [
  { name: "checkpoint, no annotation: established", mode: "established", reason: /established \(default\)/ },
  {
    name: "checkpoint, pod says close",
    podAnnotations: { "kybernate.io/tcp": "close" },
    mode: "close",
    reason: /^kybernate\.io\/tcp=close$/,
  },
  {
    name: "checkpoint, the container's annotation wins over the pod's",
    podAnnotations: { "kybernate.io/tcp": "close" },
    ctrAnnotations: { "kybernate.io/tcp": "established" },
    mode: "established",
    reason: /kybernate\.io\/tcp=established/,
  },
  {
    name: "checkpoint, a value that is neither: established, saying so",
    podAnnotations: { "kybernate.io/tcp": "keep" },
    mode: "established",
    reason: /keep is neither established nor close/,
  },
  {
    name: "restore into a new pod (new IP): closed",
    restored: true,
    ips: ["10.233.0.9"],
    network: net(["10.233.0.5", "127.0.0.1"]),
    mode: "close",
    reason: /connections on 10\.233\.0\.5, which this pod \(10\.233\.0\.9\) does not have/,
  },
  {
    name: "restore onto the same address (the same pod): kept",
    restored: true,
    ips: ["10.233.0.5"],
    network: net(["10.233.0.5"]),
    mode: "established",
    reason: /every connection is on loopback or an address of this pod/,
  },
  {
    name: "restore, only loopback connections (both ends in the container): kept in any pod",
    restored: true,
    ips: ["10.233.0.9"],
    network: net(["127.0.0.1", "::1"]),
    mode: "established",
    reason: /every connection is on loopback/,
  },
  {
    name: "restore of a checkpoint dumped with tcp-close: closed (it holds no connection state)",
    restored: true,
    ips: ["10.233.0.5"],
    network: net(["127.0.0.1"], { tcp: "close" }),
    mode: "close",
    reason: /taken with tcp-close/,
  },
  {
    name: "restore, nothing recorded (no archive on this node): closed, the restore never fails on them",
    restored: true,
    mode: "close",
    reason: /records no connection addresses/,
  },
  {
    name: "restore, the new pod says established",
    restored: true,
    podAnnotations: { "kybernate.io/tcp-restore": "established" },
    network: net(["10.233.0.5"]),
    ips: ["10.233.0.9"],
    mode: "established",
    reason: /^kybernate\.io\/tcp-restore=established$/,
  },
  {
    name: "restore, a listener bound to the old pod's own IP: warned (CRIU cannot bind it)",
    restored: true,
    ips: ["10.233.0.9"],
    network: net([], { tcpListening: ["10.233.0.5"] }),
    mode: "established",
    reason: /no established connection/,
    warning: /listeners bound to 10\.233\.0\.5/,
  },
];

for (const c of cases)
  test(c.name, async () => {
    const p = pod("p1", { annotations: c.podAnnotations ?? {}, ips: c.ips ?? [] });
    const k = container("c1", "p1", {
      annotations: {
        ...(c.restored ? { restored: "true", checkpointImage: "/nowhere.tar" } : {}),
        ...c.ctrAnnotations,
      },
    });
    const choice = await tcpChoice(p, k, async () => c.network);
    assert.equal(choice.mode, c.mode);
    assert.match(choice.reason, c.reason);
    if (c.warning) assert.match(choice.warning ?? "", c.warning);
    else assert.equal(choice.warning, undefined);
  });

test("the CRIU configuration says what was chosen, and the network lock", () => {
  const files = criuFilesFor(dir, "c1");
  const options = {
    stateDir: dir,
    hookPath: "/hook",
    node: "/node",
    daemonSocket: "/sock",
    networkLock: "nftables" as const,
    timeoutS: 90,
    hookTimeoutMs: 95_000,
  };
  assert.match(renderCriuConfig(files, options, "close"), /^tcp-close$/m);
  assert.doesNotMatch(renderCriuConfig(files, options, "close"), /tcp-established/);
  assert.match(renderCriuConfig(files, options), /^tcp-established$/m);
  assert.match(renderCriuConfig(files, options), /^network-lock nftables$/m);
  assert.doesNotMatch(renderCriuConfig(files, { ...options, networkLock: "" }), /network-lock/);
});

/** A checkpoint-shaped archive: a big page image first, kybernate.json under a long path in the middle. */
function archive(name: string, metadata: unknown, longName = false): string {
  const root = join(dir, name);
  const inner = longName ? join(root, "checkpoint", "x".repeat(120)) : join(root, "checkpoint");
  mkdirSync(inner, { recursive: true });
  writeFileSync(join(root, "checkpoint", "pages-1.img"), Buffer.alloc(3 * 1024 * 1024 + 17, 7));
  writeFileSync(
    join(inner, "kybernate.json"),
    typeof metadata === "string" ? metadata : JSON.stringify(metadata),
  );
  writeFileSync(join(root, "spec.dump"), "{}");
  const tar = join(dir, `${name}.tar`);
  execFileSync("tar", ["-C", root, "-cf", tar, "checkpoint", "spec.dump"]);
  return tar;
}

test("the archive's kybernate.json is found past the page images, long names too; a missing one is undefined", async () => {
  const recorded = {
    network: {
      tcp: "established",
      podIps: ["10.233.0.5"],
      tcpEstablished: ["10.233.0.5"],
      tcpListening: ["0.0.0.0"],
    },
  };
  const tar = archive("a", recorded);
  const k = container("c1", "p1", { annotations: { restored: "true", checkpointImage: tar } });
  assert.deepEqual(await checkpointNetwork(k), recorded.network);
  const long = archive("b", { hello: 1 }, true);
  assert.deepEqual(
    JSON.parse(
      (await readTarMember(long, `checkpoint/${"x".repeat(120)}/kybernate.json`))?.toString() ?? "null",
    ),
    { hello: 1 },
  );
  assert.equal(await readTarMember(long, "checkpoint/kybernate.json"), undefined);
  assert.equal(
    await checkpointNetwork(container("c1", "p1", { annotations: { checkpointImage: "registry/ckpt:1" } })),
    undefined,
  );
});

test("a hostile kybernate.json in the archive gives no addresses", async () => {
  for (const [i, bad] of [
    "not json",
    { network: { podIps: ["10.0.0.1"], tcpEstablished: ["$(rm -rf /)"], tcpListening: [] } },
    { network: { podIps: "10.0.0.1", tcpEstablished: [], tcpListening: [] } },
  ].entries()) {
    const k = container("c1", "p1", { annotations: { checkpointImage: archive(`bad${i}`, bad) } });
    assert.equal(await checkpointNetwork(k).catch(() => undefined), undefined);
  }
});

test("/proc/net/tcp addresses: IPv4, IPv6, IPv4-mapped", () => {
  assert.equal(hexAddress("0100007F"), "127.0.0.1");
  assert.equal(hexAddress("0500E90A"), "10.233.0.5");
  assert.equal(hexAddress("00000000000000000000000001000000"), "::1");
  assert.equal(hexAddress("0000000000000000FFFF00000500E90A"), "10.233.0.5");
  assert.equal(hexAddress("zz"), undefined);
});

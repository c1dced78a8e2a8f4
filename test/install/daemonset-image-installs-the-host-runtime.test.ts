/**
 * The DaemonSet's image as a node gets it: install/image/build.sh writes it, the test node's real containerd
 * imports it (ctr, a private namespace), and the init container's command from daemonset.yaml, with that
 * container's mounts and capabilities, leaves a runtime in the host directory that runs on this host. Running it
 * again (a pod restart, an upgrade) replaces that copy. The image runs through its entrypoint, and the main
 * container's command runs the host copy inside the image, as the DaemonSet does.
 * Needs the test node (npm run testnode:up, root); skipped elsewhere so unit runs stay portable.
 */
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import {
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  statSync,
  writeFileSync,
} from "node:fs";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { promisify } from "node:util";
import { parse } from "yaml";
import { packageRoot } from "../../src/base/paths.js";
import { version } from "../../src/base/version.js";
import { loadTestNode, type TestNode } from "../support/testnode.js";

const execFileP = promisify(execFile);
const NAMESPACE = "kybernate-image-test";
const REF = "kybernate:image-test";
/** The capabilities containerd gives a container by default (oci's default Unix set): ctr has no "ALL". */
const CONTAINERD_DEFAULT_CAPS = [
  "CHOWN",
  "DAC_OVERRIDE",
  "FSETID",
  "FOWNER",
  "MKNOD",
  "NET_RAW",
  "SETGID",
  "SETUID",
  "SETFCAP",
  "SETPCAP",
  "NET_BIND_SERVICE",
  "SYS_CHROOT",
  "KILL",
  "AUDIT_WRITE",
];

interface Container {
  command: string[];
  volumeMounts: Array<{ name: string; mountPath: string; readOnly?: boolean }>;
  securityContext?: { capabilities?: { drop?: string[]; add?: string[] } };
}

function daemonSetContainers(): { init: Container; main: Container } {
  const ds = parse(readFileSync(join(packageRoot, "install", "kubernetes", "daemonset.yaml"), "utf8")) as {
    spec: { template: { spec: { initContainers: Container[]; containers: Container[] } } };
  };
  const { initContainers, containers } = ds.spec.template.spec;
  assert.equal(initContainers.length, 1, "one init container (install)");
  assert.equal(containers.length, 1, "one container (kybernate run)");
  return { init: initContainers[0] as Container, main: containers[0] as Container };
}

function testNodeOrSkip(): { node?: TestNode; skip: string | false } {
  if (process.getuid?.() !== 0) return { skip: "needs root (the test node's containerd socket is root's)" };
  try {
    const node = loadTestNode();
    if (!existsSync(`/proc/${node.containerdPid}`))
      return {
        skip: `the test node's containerd (pid ${node.containerdPid}) is not running: npm run testnode:up`,
      };
    return { node, skip: false };
  } catch (error) {
    return { skip: (error as Error).message };
  }
}

const { node, skip } = testNodeOrSkip();

async function sh(file: string, args: string[], timeout = 120_000): Promise<string> {
  try {
    return (await execFileP(file, args, { timeout, maxBuffer: 16 * 1024 * 1024 })).stdout;
  } catch (error) {
    const e = error as Error & { stdout?: string; stderr?: string };
    throw new Error(`${file} ${args.join(" ")} failed: ${e.message}\n${e.stdout ?? ""}${e.stderr ?? ""}`);
  }
}

function ctr(args: string[], timeout?: number): Promise<string> {
  if (!node) throw new Error("no test node");
  return sh(node.bin.ctr, ["-a", node.containerdSocket, "-n", NAMESPACE, ...args], timeout);
}

let runs = 0;
/** `ctr run --rm` of the image; the process is exactly `args` (ctr replaces the image's entrypoint too). */
function runInImage(args: string[], flags: string[] = []): Promise<string> {
  runs += 1;
  return ctr(["run", "--rm", ...flags, REF, `kyb-image-test-${process.pid}-${runs}`, ...args]);
}

/** Whatever a run left in the private namespace, then the namespace itself; best effort. */
async function cleanNamespace(): Promise<void> {
  const quiet = (p: Promise<unknown>) => p.catch(() => undefined);
  const list = async (what: string[]) =>
    (await ctr([...what, "-q"]).catch(() => ""))
      .split("\n")
      .map((s) => s.trim())
      .filter(Boolean);
  for (const task of await list(["tasks", "ls"])) {
    await quiet(ctr(["tasks", "kill", "-s", "SIGKILL", task]));
    await quiet(ctr(["tasks", "rm", "-f", task]));
  }
  for (const c of await list(["containers", "ls"])) await quiet(ctr(["containers", "rm", c]));
  for (const image of await list(["images", "ls"])) await quiet(ctr(["images", "rm", "--sync", image]));
  for (const snapshot of await list(["snapshots", "ls"])) await quiet(ctr(["snapshots", "rm", snapshot]));
  if (node) await quiet(sh(node.bin.ctr, ["-a", node.containerdSocket, "namespaces", "rm", NAMESPACE]));
}

/** Every regular file under dir, relative to it. */
function files(dir: string, sub = ""): string[] {
  const out: string[] = [];
  for (const e of readdirSync(join(dir, sub), { withFileTypes: true })) {
    const rel = join(sub, e.name);
    if (e.isDirectory()) out.push(...files(dir, rel));
    else out.push(rel);
  }
  return out.sort();
}

describe("the DaemonSet image installs the host runtime", { skip }, () => {
  const { init, main } = daemonSetContainers();
  let scratch = "";
  let host = "";
  let containerdConfig = "";
  let imageConfig: { config: { Entrypoint: string[]; Env: string[]; Labels: Record<string, string> } };
  let initFlags: string[] = [];

  before(
    async () => {
      if (!node) return;
      scratch = mkdtempSync("/tmp/kyb-image-test-");
      // The host directory hostPath DirectoryOrCreate makes: empty, root's, 0755.
      host = join(scratch, "host-opt-kybernate");
      containerdConfig = join(scratch, "host-etc-containerd");
      for (const d of [host, containerdConfig]) mkdirSync(d, { mode: 0o755 });
      writeFileSync(
        join(containerdConfig, "config.toml"),
        "version = 3\n[plugins.'io.containerd.nri.v1.nri']\n  disable = false\n",
      );
      await cleanNamespace();
      const tar = join(scratch, "kybernate-oci.tar");
      // --no-build: this test runs from the dist/ that `npm run build` just wrote.
      await sh(
        "bash",
        [
          join(packageRoot, "install", "image", "build.sh"),
          "--no-build",
          "--out",
          tar,
          "--ref",
          REF,
          "--node",
          process.execPath,
        ],
        300_000,
      );
      const index = JSON.parse(await sh("tar", ["-xOf", tar, "index.json"])) as {
        manifests: Array<{ digest: string }>;
      };
      const blob = async (digest: string) =>
        JSON.parse(await sh("tar", ["-xOf", tar, `blobs/sha256/${digest.replace("sha256:", "")}`]));
      const manifest = (await blob(index.manifests[0]?.digest ?? "")) as { config: { digest: string } };
      imageConfig = await blob(manifest.config.digest);
      await ctr(["images", "import", tar]);

      // The init container as the kubelet would run it: its mounts, and its capabilities (drop ALL, add a few).
      const hostPaths: Record<string, string> = { runtime: host, "containerd-config": containerdConfig };
      const caps = init.securityContext?.capabilities ?? {};
      assert.deepEqual(caps.drop, ["ALL"], "the init container drops every capability");
      const add = caps.add ?? [];
      initFlags = [
        ...init.volumeMounts.flatMap((m) => {
          const src = hostPaths[m.name];
          assert.ok(src, `the test has no host directory for the init container's volume ${m.name}`);
          return [
            "--mount",
            `type=bind,src=${src},dst=${m.mountPath},options=rbind:${m.readOnly ? "ro" : "rw"}`,
          ];
        }),
        ...CONTAINERD_DEFAULT_CAPS.filter((c) => !add.includes(c)).flatMap((c) => ["--cap-drop", `CAP_${c}`]),
        ...add.flatMap((c) => ["--cap-add", `CAP_${c}`]),
      ];
    },
    { timeout: 300_000 },
  );

  after(async () => {
    if (!node) return;
    await cleanNamespace();
    if (scratch) rmSync(scratch, { recursive: true, force: true });
  });

  test("the image's entrypoint is its installed kybernate, and it runs", async () => {
    const { Entrypoint, Env, Labels } = imageConfig.config;
    assert.deepEqual(Entrypoint, ["/opt/kybernate-image/bin/kybernate"]);
    assert.equal(init.command[0], Entrypoint[0], "the init container runs the image's own copy");
    assert.equal(Labels["org.opencontainers.image.version"], version);
    assert.ok(Env.some((e) => e.startsWith("PATH=")));
    assert.equal((await runInImage([...Entrypoint, "--version"])).trim(), version);
  });

  test("the init container's command leaves a runtime on the host that runs there", async () => {
    const out = await runInImage(init.command, initFlags);
    assert.match(out, new RegExp(`installed kybernate ${version.replaceAll(".", "\\.")} in /opt/kybernate:`));
    assert.match(out, /^ok\s+containerd: NRI enabled/m, "it checked the host's containerd config");

    // Run on this host, outside any container: the copy carries its own node.
    assert.equal((await sh(join(host, "bin", "kybernate"), ["--version"])).trim(), version);
    const hook = join(host, "hooks", "kybernate-criu-hook");
    assert.ok(statSync(hook).mode & 0o111, "CRIU can execute the hook");

    const manifest = JSON.parse(readFileSync(join(host, "install-manifest.json"), "utf8")) as {
      kybernateVersion: string;
      prefix: string;
      files: string[];
    };
    assert.equal(manifest.kybernateVersion, version);
    assert.equal(manifest.prefix, "/opt/kybernate", "the paths are the host's, as CRIU will see them");
    const listed = manifest.files.map((f) => f.replace(/^\/opt\/kybernate\//, "")).sort();
    for (const f of ["bin/node", "bin/kybernate", "hooks/kybernate-criu-hook", "dist/src/hook/main.js"])
      assert.ok(listed.includes(f), `the manifest lists ${f}`);
    assert.deepEqual(files(host), listed, "the manifest lists exactly the files on the host");
  });

  test("running it again (a pod restart, an upgrade) replaces the host copy", async () => {
    const before = files(host);
    const out = await runInImage(init.command, initFlags);
    assert.match(out, /replacing the kybernate/);
    assert.deepEqual(files(host), before);
    assert.equal((await sh(join(host, "bin", "kybernate"), ["--version"])).trim(), version);
  });

  test("the main container's command runs the host copy inside the image", async () => {
    const runtime = main.volumeMounts.find((m) => m.name === "runtime");
    assert.ok(runtime, "the main container mounts the runtime");
    const out = await runInImage(
      [main.command[0] as string, "--version"],
      ["--mount", `type=bind,src=${host},dst=${runtime.mountPath},options=rbind:ro`],
    );
    assert.equal(out.trim(), version);
  });
});

import assert from "node:assert/strict";
import {
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  statSync,
  symlinkSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, test } from "node:test";
import { c as createTar, t as listTar } from "tar";
import { buildImage } from "../../src/cli/commands/image.js";
import { RESTORE_SPEC_LABEL } from "../../src/image/checkpoint-annotations.js";
import { buildArchive, defaultArchiveFiles } from "../cli/fixtures.js";
import { checkLayout } from "./oci-checks.js";

const quiet = { stream: { write: () => true } };
const made: string[] = [];
/** A temporary folder, removed after the file's tests. */
const scratch = (prefix: string): string => {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  made.push(dir);
  return dir;
};
after(() => {
  for (const dir of made) rmSync(dir, { recursive: true, force: true });
});
const UUID = "GPU-aaaaaaaa-1111-2222-3333-444444444444";
const kybernateJson = JSON.stringify({
  schema: 1,
  kybernateVersion: "0.1.0",
  createdAt: "2026-12-01T00:00:00Z",
  containerId: "f9ffdaed3bee",
  driverVersion: "580.159.04",
  gpus: [{ uuid: UUID, name: "NVIDIA H200", memoryMiB: 143771 }],
  processes: [{ pid: 7, gpuUuids: [UUID], vramBytes: 1024 }],
  vramBytesMoved: 4096,
});

async function gpuArchive(): Promise<string> {
  const files = defaultArchiveFiles();
  const status = JSON.parse(files["status.dump"] as string);
  status.mounts = [
    {
      container_path: "/dev/termination-log",
      host_path: "/var/lib/kubelet/pods/u/containers/worker/0a1b2c3d",
    },
    { container_path: "/etc/hosts", host_path: "/var/lib/kubelet/pods/u/etc-hosts" },
  ];
  return buildArchive({
    ...files,
    "status.dump": JSON.stringify(status),
    "checkpoint/kybernate.json": kybernateJson,
  });
}

const entries = async (tarBytes: Buffer, dir: string): Promise<string[]> => {
  const file = join(dir, `layer-${Math.random()}.tar`);
  writeFileSync(file, tarBytes);
  const names: string[] = [];
  await listTar({ file, onReadEntry: (e) => names.push(e.path.replace(/\/$/, "")) });
  return [...new Set(names)].sort();
};

describe("kybernate image build into an OCI layout", () => {
  for (const compression of ["none", "gzip", "zstd"] as const) {
    test(`a folder, layer ${compression}: digests, sizes, diff_id and media types as the image spec says`, async () => {
      const archive = await gpuArchive();
      const out = join(scratch("kyb-img-"), "layout");
      const r = await buildImage({
        archive,
        tag: "localhost:5555/kybernate/ckpt:v1",
        output: out,
        compression,
        progress: quiet,
      });
      const { manifest, config, layer, entry } = checkLayout(out, "v1");
      assert.equal(entry.digest, r.manifestDigest);
      assert.equal(entry.annotations["io.containerd.image.name"], "localhost:5555/kybernate/ckpt:v1");
      const a = manifest.annotations ?? {};
      assert.equal(a["org.criu.checkpoint.container.name"], "worker");
      assert.equal(a["io.kubernetes.cri-o.annotations.checkpoint.name"], "worker");
      assert.equal(a["kybernate.io/gpu-uuids"], UUID);
      assert.equal(a["kybernate.io/gpu-models"], "NVIDIA H200");
      assert.equal(a["kybernate.io/driver-version"], "580.159.04");
      assert.equal(a["kybernate.io/vram-bytes"], "4096");
      assert.equal(a["kybernate.io/pod"], "ml/trainer");
      // The layer holds exactly the archive's files.
      assert.deepEqual(await entries(layer, join(out, "..")), [
        "checkpoint",
        "checkpoint/kybernate.json",
        "checkpoint/pages-1.img",
        "config.dump",
        "spec.dump",
        "status.dump",
      ]);
      if (compression === "none")
        assert.deepEqual(layer, readFileSync(archive), "an uncompressed layer is the archive");
      const spec = JSON.parse(config.config?.Labels?.[RESTORE_SPEC_LABEL] ?? "{}");
      assert.equal(spec.containerName, "worker");
      assert.deepEqual(spec.mounts, [
        {
          containerPath: "/dev/termination-log",
          hostPath: "/var/lib/kubelet/pods/u/containers/worker/0a1b2c3d",
          readonly: false,
        },
      ]);
      assert.deepEqual(
        readdirSync(join(out, "blobs", "sha256")).filter((f) => f.startsWith(".")),
        [],
        "no temp file left",
      );
    });
  }

  test("a tar: an OCI layout archive holding the same, the big blob streamed into it", async () => {
    const archive = await gpuArchive();
    const dir = scratch("kyb-img-");
    const out = join(dir, "ckpt.oci.tar");
    await buildImage({ archive, tag: "localhost:5555/kybernate/ckpt:v2", output: out, progress: quiet });
    const unpacked = join(dir, "unpacked");
    mkdirSync(unpacked);
    const { x } = await import("tar");
    await x({ file: out, cwd: unpacked });
    checkLayout(unpacked, "v2");
    assert.deepEqual(
      readdirSync(dir).sort(),
      ["ckpt.oci.tar", "unpacked"],
      "the temporary layout folder is gone",
    );
  });

  test("a thin archive (page maps but no page images) is refused: an image must be self-contained", async () => {
    const dir = scratch("kyb-thin-");
    const src = join(dir, "src");
    mkdirSync(join(src, "checkpoint"), { recursive: true });
    for (const [f, t] of Object.entries(defaultArchiveFiles())) writeFileSync(join(src, f), t);
    writeFileSync(join(src, "checkpoint", "pagemap-1.img"), "map");
    const archive = join(dir, "thin.tar");
    await createTar({ file: archive, cwd: src }, ["checkpoint", "config.dump", "spec.dump", "status.dump"]);
    const out = join(dir, "layout");
    await assert.rejects(
      buildImage({ archive, tag: "localhost:5555/k/thin:1", output: out, progress: quiet }),
      /archive has no page images; run kybernate archive inline first/,
    );
    assert.equal(existsSync(out), false, "nothing is left of the layout");
  });

  test("links and truncated tars are refused with the reason, and leave nothing behind", async () => {
    const dir = scratch("kyb-bad-");
    const src = join(dir, "src");
    mkdirSync(join(src, "checkpoint"), { recursive: true });
    for (const [f, t] of Object.entries(defaultArchiveFiles())) writeFileSync(join(src, f), t);
    symlinkSync("/etc/shadow", join(src, "checkpoint", "pages-1.img"));
    const linked = join(dir, "linked.tar");
    await createTar({ file: linked, cwd: src }, ["checkpoint", "config.dump", "spec.dump", "status.dump"]);
    await assert.rejects(
      buildImage({
        archive: linked,
        tag: "localhost:5555/k/bad:1",
        output: join(dir, "l1"),
        progress: quiet,
      }),
      /cannot become a checkpoint image: it holds a SymbolicLink entry "checkpoint\/pages-1\.img"/,
    );
    const good = await gpuArchive();
    const truncated = join(dir, "truncated.tar");
    writeFileSync(truncated, readFileSync(good).subarray(0, statSync(good).size - 4000));
    await assert.rejects(
      buildImage({
        archive: truncated,
        tag: "localhost:5555/k/bad:2",
        output: join(dir, "l2"),
        progress: quiet,
      }),
      /cannot become a checkpoint image: it is not a complete tar archive/,
    );
    assert.deepEqual(readdirSync(dir).sort(), ["linked.tar", "src", "truncated.tar"]);
  });

  test("an output that is already there is refused, and left as it was", async () => {
    const archive = await gpuArchive();
    const dir = scratch("kyb-exists-");
    writeFileSync(join(dir, "precious.txt"), "keep me");
    await assert.rejects(
      buildImage({ archive, tag: "localhost:5555/k/x:1", output: dir, progress: quiet }),
      /already exists: remove it or give another output path/,
    );
    assert.equal(readFileSync(join(dir, "precious.txt"), "utf8"), "keep me");
  });

  test("without --output or --push there is nowhere to put it", async () => {
    await assert.rejects(
      buildImage({ archive: "x.tar", tag: "localhost:5555/a:1" }),
      /give --output PATH .*--push/,
    );
  });
});

import assert from "node:assert/strict";
import { chmodSync, mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, relative } from "node:path";
import { describe, test } from "node:test";
import { readCheckpointArchive } from "../../src/cli/archive.js";
import { buildArchive, defaultArchiveFiles } from "./fixtures.js";

describe("reading a CRI checkpoint archive", () => {
  test("gives the container name, its pod, labels, annotations and image from the metadata files", async () => {
    const file = await buildArchive();
    const info = await readCheckpointArchive(relative(process.cwd(), file));
    assert.equal(info.path, file, "a relative path is made absolute: containerd opens the archive itself");
    assert.ok(info.sizeBytes > 4096);
    assert.deepEqual(
      {
        originalId: info.originalId,
        containerName: info.containerName,
        podName: info.podName,
        podNamespace: info.podNamespace,
        podUid: info.podUid,
        labels: info.labels,
        annotations: info.annotations,
        image: info.image,
        checkpointedAt: info.checkpointedAt,
      },
      {
        originalId: "f9ffdaed3bee",
        containerName: "worker",
        podName: "trainer",
        podNamespace: "ml",
        podUid: "uid-1",
        labels: { "io.kubernetes.container.name": "worker", tier: "gpu" },
        annotations: { "kybernate.io/checkpoint": "true" },
        image: "localhost:5555/kybernate/busybox:1",
        checkpointedAt: "2026-11-29T15:51:23.98Z",
      },
    );
  });

  test("gives the original mounts, device nodes and environment, which a restore must pass again", async () => {
    const files = defaultArchiveFiles();
    const spec = JSON.parse(files["spec.dump"] as string);
    spec.process = {
      env: ["PATH=/usr/bin:/bin", "HOSTNAME=old-node", "NVIDIA_VISIBLE_DEVICES=all", "EMPTY="],
    };
    spec.linux = {
      devices: [{ path: "/dev/nvidia0", type: "c", major: 195, minor: 0 }, { path: "/dev/nvidiactl" }],
    };
    const status = JSON.parse(files["status.dump"] as string);
    status.mounts = [
      { container_path: "/usr/local/nvidia", host_path: "/usr/local/nvidia", readonly: true },
      { container_path: "/data", host_path: "/srv/data" },
      { container_path: "/etc/hosts", host_path: "/var/lib/containerd/x/hosts" },
      { container_path: "/broken" },
    ];
    const info = await readCheckpointArchive(
      await buildArchive({
        ...files,
        "spec.dump": JSON.stringify(spec),
        "status.dump": JSON.stringify(status),
      }),
    );
    assert.deepEqual(info.mounts, [
      { containerPath: "/usr/local/nvidia", hostPath: "/usr/local/nvidia", readonly: true },
      { containerPath: "/data", hostPath: "/srv/data", readonly: false },
    ]);
    assert.deepEqual(info.devices, [
      { containerPath: "/dev/nvidia0", hostPath: "/dev/nvidia0", permissions: "rwm" },
      { containerPath: "/dev/nvidiactl", hostPath: "/dev/nvidiactl", permissions: "rwm" },
    ]);
    assert.deepEqual(info.env, { PATH: "/usr/bin:/bin", NVIDIA_VISIBLE_DEVICES: "all", EMPTY: "" });
  });

  test("without status.dump the name comes from spec.dump, and labels are empty", async () => {
    const { "status.dump": _, ...files } = defaultArchiveFiles();
    const info = await readCheckpointArchive(await buildArchive(files));
    assert.equal(info.containerName, "worker");
    assert.deepEqual(info.labels, {});
  });

  test("a missing file, a folder, a file that is not a tar: each error names the path and the fix", async () => {
    const dir = mkdtempSync(join(tmpdir(), "kybernate-cli-bad-"));
    await assert.rejects(readCheckpointArchive(join(dir, "nope.tar")), (e: Error & { exitCode?: number }) => {
      assert.equal(e.exitCode, 2);
      assert.match(e.message, /no checkpoint archive at .*nope\.tar: check the path/);
      return true;
    });
    await assert.rejects(readCheckpointArchive(dir), /is not a file: give the checkpoint archive/);
    const text = join(dir, "notes.tar");
    writeFileSync(text, "just some text, certainly not a tar header\n".repeat(20));
    await assert.rejects(
      readCheckpointArchive(text),
      /notes\.tar is not a readable tar archive .*kybernate checkpoint/,
    );
  });

  test("a tar without config.dump is not a CRI checkpoint archive", async () => {
    const { "config.dump": _, ...files } = defaultArchiveFiles();
    await assert.rejects(
      readCheckpointArchive(await buildArchive(files)),
      /is not a CRI checkpoint archive: it has no config\.dump/,
    );
  });

  test("damaged metadata: config.dump that is not JSON, or no spec.dump", async () => {
    await assert.rejects(
      readCheckpointArchive(await buildArchive({ ...defaultArchiveFiles(), "config.dump": "{oops" })),
      /config\.dump is not JSON .*the archive is damaged/,
    );
    const { "spec.dump": _, ...files } = defaultArchiveFiles();
    await assert.rejects(
      readCheckpointArchive(await buildArchive(files)),
      /no spec\.dump: the archive is incomplete/,
    );
  });

  test("an unreadable archive is refused with a hint (skipped as root, who reads anything)", async (t) => {
    if (process.getuid?.() === 0) return t.skip("root bypasses file modes");
    const file = await buildArchive();
    chmodSync(file, 0o000);
    await assert.rejects(readCheckpointArchive(file), new RegExp(`cannot read ${dirname(file)}`));
  });
});

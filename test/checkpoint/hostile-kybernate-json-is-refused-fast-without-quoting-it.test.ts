import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, test } from "node:test";
import { silentLogger } from "../../src/base/log.js";
import {
  buildMetadata,
  findMetadataDir,
  METADATA_FILE,
  readMetadata,
} from "../../src/checkpoint/metadata.js";
import { NodePolicy } from "../../src/checkpoint/policy.js";
import { readSmallRegularFile } from "../../src/host/files.js";
import type { GpuInventory, GpuProbe } from "../../src/host/nvidia-smi.js";

const root = mkdtempSync(join(tmpdir(), "kyb-metadata-"));
after(() => rmSync(root, { recursive: true, force: true }));

const UUID = "GPU-aaaaaaaa-1111-2222-3333-444444444444";
const inventory: GpuInventory = {
  driverVersion: "580.159.04",
  gpus: [{ index: 0, uuid: UUID, name: "NVIDIA H200", memoryMiB: 143771 }],
};
const probe: GpuProbe = { inventory: async () => inventory, computeApps: async () => [] };
const policy = new NodePolicy({
  probe,
  version: "0.1.0",
  log: silentLogger,
  admission: { enabled: false, headroomBytes: 0 },
});

/** What kybernate itself writes: the base every hostile variant starts from. */
const good = () =>
  buildMetadata({
    version: "0.1.0",
    containerId: "c1",
    inventory,
    apps: [{ pid: 42, gpuUuid: UUID, usedBytes: 1 << 30 }],
    pids: [42],
    now: new Date(0),
  });

// A host file only root may read, with content that must never show in an error.
const SECRET = "root:$6$kybernate-secret-hash:19000:0:99999:7:::";
const secretFile = join(root, "shadow");
writeFileSync(secretFile, `${SECRET}\n`, { mode: 0o600 });

let n = 0;
function imageDir(make: (path: string) => void): string {
  const dir = join(root, `image-${n++}`);
  mkdirSync(dir);
  make(join(dir, METADATA_FILE));
  return dir;
}

const asRoot = process.getuid?.() === 0;
const cases: Array<{ name: string; make: (path: string) => void; error: RegExp; skip?: boolean }> = [
  {
    name: "a symlink to /dev/zero",
    make: (p) => symlinkSync("/dev/zero", p),
    error: /kybernate\.json is a symbolic link/,
  },
  {
    name: "a FIFO",
    make: (p) => assert.equal(spawnSync("mkfifo", [p]).status, 0, "mkfifo"),
    error: /kybernate\.json is not a regular file \(a FIFO\)/,
  },
  {
    name: "a symlink to a host file",
    make: (p) => symlinkSync(secretFile, p),
    error: /kybernate\.json is a symbolic link/,
  },
  {
    name: "a character device node (/dev/zero's numbers)",
    make: (p) => assert.equal(spawnSync("mknod", [p, "c", "1", "5"]).status, 0, "mknod"),
    error: /kybernate\.json is not a regular file \(a character device\)/,
    skip: !asRoot,
  },
  {
    name: "a directory",
    make: (p) => mkdirSync(p),
    error: /kybernate\.json is not a regular file \(a directory\)/,
  },
  {
    name: "a 2 MiB file",
    make: (p) => writeFileSync(p, Buffer.alloc(2 * 1024 * 1024, 0x20)),
    error: /kybernate\.json is 2097152 bytes, more than the 1048576 allowed/,
  },
  {
    name: "a host file's content (a hard link, a copy): not JSON",
    make: (p) => writeFileSync(p, `${SECRET}\n`),
    error: /kybernate\.json is not JSON/,
  },
  {
    name: "a wrong-typed field",
    make: (p) => {
      const m = good() as unknown as { gpus: Array<Record<string, unknown>> };
      (m.gpus[0] as Record<string, unknown>).memoryMiB = SECRET;
      writeFileSync(p, JSON.stringify(m));
    },
    error: /field gpus\[0\]\.memoryMiB must be a whole number >= 0/,
  },
  {
    name: "a GPU UUID that is none",
    make: (p) => {
      const m = good() as unknown as { gpus: Array<Record<string, unknown>> };
      (m.gpus[0] as Record<string, unknown>).uuid = `GPU-${SECRET}`;
      writeFileSync(p, JSON.stringify(m));
    },
    error: /field gpus\[0\]\.uuid must be a GPU UUID/,
  },
  {
    name: "a missing field",
    make: (p) => {
      const { processes: _, ...m } = good();
      writeFileSync(p, JSON.stringify(m));
    },
    error: /field processes is missing/,
  },
  {
    name: "a connection address that is none",
    make: (p) =>
      writeFileSync(
        p,
        JSON.stringify({ ...good(), network: { podIps: [], tcpEstablished: [SECRET], tcpListening: [] } }),
      ),
    error: /field network\.tcpEstablished\[0\] must be an IP address/,
  },
  {
    name: "a newer schema",
    make: (p) => writeFileSync(p, JSON.stringify({ ...good(), schema: 2 })),
    error: /field schema must be 1 \(written by a newer kybernate\? Upgrade kybernate on this node\)/,
  },
];

/** Each refusal is quick: a FIFO or /dev/zero must never hold a thread or fill memory. */
async function fast<T>(work: Promise<T>): Promise<T> {
  const t = performance.now();
  try {
    return await work;
  } finally {
    assert.ok(performance.now() - t < 500, `took ${Math.round(performance.now() - t)} ms`);
  }
}

describe("kybernate.json from a checkpoint archive is untrusted", () => {
  for (const c of cases) {
    test(`${c.name}: refused at once, naming the path and the problem, never the content`, {
      skip: c.skip,
    }, async () => {
      const dir = imageDir(c.make);
      const error = await fast(
        readMetadata(dir).then(
          () => assert.fail("must be refused"),
          (e: Error) => e,
        ),
      );
      assert.match(error.message, c.error);
      assert.ok(error.message.includes(join(dir, METADATA_FILE)), error.message);
      assert.ok(!error.message.includes("kybernate-secret"), `content quoted: ${error.message}`);

      // The directory is still found (the file is there), so the restore plan refuses with the reason.
      assert.equal(await fast(findMetadataDir(dir)), dir);
      const plan = await fast(policy.planRestore({ containerId: "c1", imageDir: dir }));
      assert.equal(plan.ok, false);
      assert.match(
        plan.ok ? "" : plan.error,
        /^refusing to restore: the checkpoint's metadata cannot be used: /,
      );
      assert.match(plan.ok ? "" : plan.error, c.error);
      assert.ok(!(plan.ok ? "" : plan.error).includes("kybernate-secret"));
    });
  }

  test("no kybernate.json: no metadata, the restore goes on as is", async () => {
    const dir = imageDir(() => undefined);
    assert.equal(await readMetadata(dir), undefined);
    assert.equal(await findMetadataDir(dir), undefined);
    const plan = await policy.planRestore({ containerId: "c1", imageDir: dir });
    assert.deepEqual(plan, {
      ok: true,
      deviceMap: [],
      reason: "the checkpoint records no GPU; restoring as is",
    });
  });

  test("what kybernate writes is read back and planned onto the same GPU", async () => {
    const dir = imageDir((p) => writeFileSync(p, JSON.stringify(good(), null, 2)));
    assert.deepEqual(await readMetadata(dir), good());
    const plan = await policy.planRestore({ containerId: "c1", imageDir: dir });
    // What it staged comes along: a restore raises memory limits below it.
    assert.deepEqual(plan, {
      ok: true,
      deviceMap: [],
      reason: "same GPUs as at checkpoint",
      stagedBytes: 1 << 30,
    });
  });

  test("readSmallRegularFile reads a small regular file whole", async () => {
    const path = join(root, "small");
    writeFileSync(path, "0123456789");
    assert.equal((await readSmallRegularFile(path, 10)).toString(), "0123456789");
    await assert.rejects(readSmallRegularFile(path, 9), /is 10 bytes, more than the 9 allowed/);
  });
});

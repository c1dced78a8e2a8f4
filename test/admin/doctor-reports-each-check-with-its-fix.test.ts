import assert from "node:assert/strict";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { createServer } from "node:net";
import { join } from "node:path";
import { after, test } from "node:test";
import { doctorFailed, formatReport, runDoctor } from "../../src/admin/doctor.js";

const dir = mkdtempSync("/tmp/kyb-doctor-");
after(() => rmSync(dir, { recursive: true, force: true }));
const script = (name: string, body: string): string => {
  const path = join(dir, name);
  writeFileSync(path, `#!/bin/sh\n${body}\n`, { mode: 0o755 });
  return path;
};

test("a well-equipped node passes every required check", async () => {
  const socket = join(dir, "nri.sock");
  const server = createServer().listen(socket);
  await new Promise((r) => server.once("listening", r));
  try {
    writeFileSync(
      join(dir, "version"),
      "NVRM version: NVIDIA UNIX x86_64 Kernel Module  580.159.04  Thu Jan 1 2026\n",
    );
    writeFileSync(join(dir, "kconfig"), "CONFIG_CHECKPOINT_RESTORE=y\n");
    writeFileSync(join(dir, "config.toml"), "version = 3\n");
    const results = await runDoctor({
      criu: script(
        "criu",
        '[ "$1" = check ] && { [ "$3" = network_lock_nftables ] && echo "network_lock_nftables is supported" || echo "Looks good."; } || echo "Version: 4.2.1"',
      ),
      runc: script("runc", "echo runc version 1.3.6"),
      containerd: script("containerd", "echo containerd github.com/containerd/containerd/v2 v2.1.9 abc"),
      nvidiaSmi: script("nvidia-smi", "echo '0, GPU-a, NVIDIA H200, 143771, 580.159.04, Enabled'"),
      cudaCheckpoint: script("cuda-checkpoint", "echo '--action lock|checkpoint|restore|unlock'"),
      libcuda: join(dir, "no-libcuda.so"),
      driverVersionFile: join(dir, "version"),
      kernelConfig: join(dir, "kconfig"),
      nriSocket: socket,
      containerdConfig: join(dir, "config.toml"),
    });
    const failing = results.filter((r) => r.status !== "pass").map((r) => `${r.name}: ${r.detail}`);
    // Root is the one check a test run as root cannot fail, and others may not be root.
    assert.deepEqual(
      failing.filter((f) => !f.startsWith("running as root")),
      [],
    );
    const api = results.find((r) => r.name.startsWith("driver checkpoint API"));
    assert.match(api?.detail ?? "", /cuda-checkpoint present/);
  } finally {
    server.close();
  }
});

test("a node without GPU tools fails the GPU checks with fixes, and the report says so", async () => {
  const results = await runDoctor({
    criu: script(
      "old-criu",
      '[ "$1" = check ] && { echo "Error: no vdso" >&2; exit 1; } || echo "Version: 3.17"',
    ),
    runc: join(dir, "missing-runc"),
    containerd: script("old-containerd", "echo containerd github.com/containerd/containerd 1.7.24 x"),
    nvidiaSmi: join(dir, "missing-nvidia-smi"),
    cudaCheckpoint: join(dir, "missing-cuda-checkpoint"),
    libcuda: join(dir, "missing-libcuda.so"),
    driverVersionFile: join(dir, "missing-version"),
    kernelConfig: join(dir, "missing-kconfig"),
    nriSocket: join(dir, "missing.sock"),
    containerdConfig: join(dir, "missing.toml"),
  });
  const byName = new Map(results.map((r) => [r.name, r]));
  for (const name of [
    "NVIDIA driver ≥ 570",
    "driver checkpoint API (libcuda) or cuda-checkpoint",
    "CRIU ≥ 4",
    "criu check",
    "runc ≥ 1.1",
    "containerd 2.1–2.3",
    "NRI socket",
    "kernel CONFIG_CHECKPOINT_RESTORE",
  ]) {
    const r = byName.get(name);
    assert.equal(r?.status, "fail", name);
    assert.ok(r?.fix && r.fix.length > 10, `${name} has a fix`);
  }
  assert.equal(byName.get("persistence mode")?.status, "warn");
  assert.match(byName.get("criu check")?.detail ?? "", /no vdso/);
  assert.ok(doctorFailed(results));
  const report = formatReport(results);
  assert.match(report, /^FAIL {2}CRIU ≥ 4: criu 3\.17\n {6}fix: install CRIU 4\.0 or later/m);
  assert.match(report, /required check\(s\) failed/);
});

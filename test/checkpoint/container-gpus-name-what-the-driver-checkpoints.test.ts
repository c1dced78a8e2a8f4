import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, test } from "node:test";
import {
  type GpuRequest,
  gpuRequestOf,
  gpusOpenedBy,
  resolveGpuRequest,
} from "../../src/checkpoint/gpu-request.js";
import { readDeviceMinors } from "../../src/host/nvidia.js";
import type { GpuInfo } from "../../src/host/nvidia-smi.js";

const A = "GPU-aaaaaaaa-0000-0000-0000-000000000000";
const B = "GPU-bbbbbbbb-0000-0000-0000-000000000000";
const gpu = (index: number, uuid: string, minor?: number): GpuInfo => ({
  index,
  uuid,
  name: "NVIDIA H200",
  memoryMiB: 143771,
  ...(minor !== undefined ? { minor } : {}),
});
// Minors deliberately not equal to the indices: only the minor ties a /dev node to a GPU.
const node = [gpu(0, A, 1), gpu(1, B, 0)];

const scratch = mkdtempSync(join(tmpdir(), "kyb-container-gpus-"));
after(() => rmSync(scratch, { recursive: true, force: true }));

test("a spec's GPU request: NVIDIA GPU nodes by major 195 (not nvidiactl, not uvm), and the last NVIDIA_VISIBLE_DEVICES", () => {
  const request = gpuRequestOf(
    [
      { path: "/dev/nvidiactl", major: 195, minor: 255 },
      { path: "/dev/nvidia-uvm", major: 507, minor: 0 },
      { path: "/dev/nvidia3", major: 195, minor: 3 },
      { path: "/dev/nvidia1", major: 195, minor: 1 },
      { path: "/dev/sda", major: 8, minor: 0 },
    ],
    ["PATH=/bin", "NVIDIA_VISIBLE_DEVICES=0", "NVIDIA_VISIBLE_DEVICES=GPU-x"],
  );
  assert.deepEqual(request, { minors: [1, 3], visibleDevices: "GPU-x" });
  assert.deepEqual(gpuRequestOf([], []), { minors: [] });
});

const cases: Array<{ name: string; request: GpuRequest | undefined; gpus?: GpuInfo[]; want: unknown }> = [
  { name: "no spec known", request: undefined, want: undefined },
  { name: "spec says nothing", request: { minors: [] }, want: undefined },
  {
    name: "device nodes name GPUs by minor",
    request: { minors: [0], visibleDevices: "all" },
    want: { gpus: [node[1]], source: "devices /dev/nvidia0" },
  },
  {
    name: "a device node that is no GPU of the node",
    request: { minors: [7] },
    want: { error: "the container's device /dev/nvidia7 is no GPU of this node" },
  },
  {
    name: "minors unknown on this node: the variable decides",
    request: { minors: [0], visibleDevices: "1" },
    gpus: [gpu(0, A), gpu(1, B)],
    want: { gpus: [gpu(1, B)], source: "NVIDIA_VISIBLE_DEVICES=1" },
  },
  {
    name: "NVIDIA_VISIBLE_DEVICES=all",
    request: { minors: [], visibleDevices: "all" },
    want: { gpus: node, source: "NVIDIA_VISIBLE_DEVICES=all" },
  },
  {
    name: "NVIDIA_VISIBLE_DEVICES=void",
    request: { minors: [], visibleDevices: "void" },
    want: { gpus: [], source: "NVIDIA_VISIBLE_DEVICES=void" },
  },
  {
    name: "NVIDIA_VISIBLE_DEVICES by UUID",
    request: { minors: [], visibleDevices: ` ${B} ` },
    want: { gpus: [node[1]], source: `NVIDIA_VISIBLE_DEVICES=${B}` },
  },
  {
    name: "NVIDIA_VISIBLE_DEVICES naming MIG instances (by UUID or GPU:instance): not planned from, the node's GPUs decide",
    request: { minors: [], visibleDevices: "MIG-11111111-2222-3333-4444-555555555555,0:1" },
    want: undefined,
  },
  {
    name: "NVIDIA_VISIBLE_DEVICES naming a GPU the node lacks",
    request: { minors: [], visibleDevices: "0,5" },
    want: { error: "NVIDIA_VISIBLE_DEVICES names 5, which is no GPU of this node" },
  },
];
for (const c of cases) {
  test(`the GPUs a container is given: ${c.name}`, () => {
    assert.deepEqual(resolveGpuRequest(c.request, c.gpus ?? node), c.want);
  });
}

test("device minors come from the driver's /proc/driver/nvidia/gpus/*/information", async () => {
  const procRoot = join(scratch, "driver-proc");
  const root = join(procRoot, "driver", "nvidia", "gpus");
  for (const [bus, minor, uuid] of [
    ["0000:19:00.0", 1, A],
    ["0000:3b:00.0", 0, B],
  ] as const) {
    mkdirSync(join(root, bus), { recursive: true });
    writeFileSync(
      join(root, bus, "information"),
      `Model: \t\t NVIDIA H200\nIRQ:   \t\t 42\nGPU UUID: \t ${uuid}\nVideo BIOS: \t 96.00.af.00.01\nBus Type: \t PCIe\nDMA Size: \t 52 bits\nDevice Minor: \t ${minor}\n`,
    );
  }
  mkdirSync(join(root, "0000:5d:00.0"));
  assert.deepEqual(
    await readDeviceMinors(procRoot),
    new Map([
      [A, 1],
      [B, 0],
    ]),
  );
  assert.deepEqual(await readDeviceMinors(join(scratch, "absent")), new Map());
});

test("the GPUs processes hold open, from their fds' device numbers; other fds ignored", async (t) => {
  const dev = join(scratch, "dev");
  mkdirSync(dev);
  try {
    for (const [name, minor] of [
      ["nvidia0", 0],
      ["nvidiactl", 255],
    ] as const)
      execFileSync("mknod", [join(dev, name), "c", "195", String(minor)]);
  } catch {
    t.skip("mknod needs root");
    return;
  }
  writeFileSync(join(dev, "file"), "");
  const proc = join(scratch, "proc");
  const fds = (pid: number, targets: string[]) => {
    mkdirSync(join(proc, String(pid), "fd"), { recursive: true });
    targets.forEach((target, i) => {
      symlinkSync(join(dev, target), join(proc, String(pid), "fd", String(i + 3)));
    });
  };
  fds(10, ["nvidiactl", "nvidia0", "file"]);
  fds(11, ["nvidia0"]);
  assert.deepEqual(await gpusOpenedBy([10, 11], node, proc), [node[1]]);
  assert.deepEqual(await gpusOpenedBy([10, 99], node, proc), [node[1]], "a vanished pid is skipped");
  assert.equal(await gpusOpenedBy([99], node, proc), undefined, "no fd readable: unknown");
  assert.equal(await gpusOpenedBy([10], [gpu(0, A)], proc), undefined, "minors unknown: unknown");
});

/**
 * kybernate end to end on a GPU node: containerd (CRI + NRI) → runc → CRIU → kybernate → the NVIDIA driver.
 * For each case it runs a GPU pod through CRI, checkpoints it with CRI CheckpointContainer (as the kubelet
 * does), checks that the workload goes on, restores it with CreateContainer(archive) + StartContainer in a
 * new pod, checks continuation and VRAM contents, and prints the figures (markdown). With --floor it also
 * measures the same container's floor: the driver's freeze and thaw alone, and containerd + CRIU alone. With
 * --via-image the restore goes the Kubernetes way instead: the archive becomes a checkpoint image pushed to the
 * node's registry (kybernate image build), and the restored container is created from that image as the kubelet
 * creates it (PullImage, then CreateContainer with the image id), with the time of each step.
 * With --page-store DIR (or auto: beside containerd's temp dir) kybernate runs with its node page store; with
 * --self-contained-gib the listed sizes run once more without it. Every case prints kybernate's phases (GPU freeze,
 * CRIU's dump, the page store, the rest until the resume), containerd's (sampled from its directories), the peak
 * extra disk, and — with --disk-floor-gib N — the node floor measured in the same run: the GPU freeze plus one
 * write+fsync of the CRIU image at the disk's bandwidth (restore: one read of it plus the driver's restore).
 * --deadline S makes CheckpointContainer a kubelet-shaped call with that gRPC deadline.
 * Run through test/e2e/gpu-e2e.sh, which brings up the node. Nothing here knows the machine: paths are options.
 */
import { execFileSync } from "node:child_process";
import { mkdirSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { parseArgs } from "node:util";
import { packageRoot } from "../../src/base/paths.js";
import { buildImage } from "../../src/cli/commands/image.js";
import { initPidOf } from "../../src/cli/resolve.js";
import type { DeviceSpec, MountSpec } from "../../src/cri/client.js";
import type { In, PodSandboxConfig } from "../../src/cri/types.js";
import { askDaemon } from "../../src/daemon/client.js";
import { discoverCudaProcesses } from "../../src/gpu/discovery.js";
import { GpuEngine } from "../../src/gpu/engine.js";
import { openBackend } from "../../src/gpu/select-backend.js";
import { readTarMember, TarReader } from "../../src/host/tar.js";
import { PAGES_MANIFEST, parseManifest } from "../../src/store/manifest.js";
import { type KybernateProcess, startKybernate } from "../support/kybernate-process.js";
import { TestCriClient } from "../support/test-cri-client.js";
import { loadTestNode } from "../support/testnode.js";
import { ContainerdSampler, type SampledPhases } from "./containerd-sampler.js";
import { type DiskBandwidth, evict, gbps, measureDisk } from "./disk-floor.js";

const { values: opt } = parseArgs({
  options: {
    workload: { type: "string", default: "cuda" },
    gib: { type: "string", default: "2" },
    floor: { type: "string", default: "" },
    "gpu-backend": { type: "string", default: "driver" },
    "cuda-checkpoint": { type: "string" },
    libcuda: { type: "string" },
    "workload-bin": { type: "string" },
    "driver-root": { type: "string", default: "/usr/local/nvidia" },
    devices: { type: "string", default: "/dev/nvidiactl,/dev/nvidia0,/dev/nvidia-uvm,/dev/nvidia-uvm-tools" },
    // The restored container's devices, when they differ (another GPU: a restore through the UUID device map).
    "restore-devices": { type: "string" },
    python: { type: "string", default: "/opt/torch/.venv/bin/python3" },
    "python-mounts": { type: "string", default: "/usr,/opt/torch" },
    "torch-steps": { type: "string", default: "300" },
    scratch: { type: "string", default: "/tmp/kybernate-e2e" },
    "via-image": { type: "boolean", default: false },
    out: { type: "string" },
    "kybernate-log": { type: "string" },
    "page-store": { type: "string" },
    "self-contained-gib": { type: "string", default: "" },
    "disk-floor-gib": { type: "string", default: "0" },
    deadline: { type: "string", default: "600" },
  },
});

type Workload = "cuda" | "torch" | "double";
const workload = opt.workload as Workload;
if (!["cuda", "torch", "double"].includes(workload))
  throw new Error(`--workload must be cuda, torch or double`);
const sizes = opt.gib.split(",").filter(Boolean).map(Number);
const floorSizes = new Set(opt.floor.split(",").filter(Boolean).map(Number));
const node = loadTestNode();
const cri = new TestCriClient(node.criSocket);
const scratch = opt.scratch;
// up.sh gives containerd `temp = <node>/tmp` beside its root: CRIU's image directories are made there.
const containerdTemp = join(dirname(node.root), "tmp");
const storeDir = opt["page-store"] === "auto" ? join(dirname(node.root), "page-store") : opt["page-store"];
const selfContainedSizes = opt["self-contained-gib"].split(",").filter(Boolean).map(Number);
const deadlineS = Number(opt.deadline);
const diskFloorGib = Number(opt["disk-floor-gib"]);
rmSync(scratch, { recursive: true, force: true });
mkdirSync(scratch, { recursive: true });
const repo = packageRoot;
// The double's control sockets sit beside its status files, in the container's /status.
if (workload === "double") process.env.FAKE_CUDA_DIR = "/status";
const backendArgs = [
  "--gpu-backend",
  opt["gpu-backend"],
  ...(opt["cuda-checkpoint"] ? ["--cuda-checkpoint", opt["cuda-checkpoint"]] : []),
  ...(opt.libcuda ? ["--libcuda", opt.libcuda] : []),
];

interface Status {
  pid: number;
  counter: number;
  verified: number;
  verifyFailures: number;
}

interface Case {
  gib: number;
  statusDir: string;
  spec: { command: string[]; mounts: MountSpec[]; devices: DeviceSpec[]; env: Record<string, string> };
}

const deviceSpecs = (list: string): DeviceSpec[] =>
  list
    .split(",")
    .filter(Boolean)
    .map((d) => ({ containerPath: d, hostPath: d, permissions: "rwm" }));

function makeCase(gib: number, name: string): Case {
  const statusDir = join(scratch, name);
  mkdirSync(statusDir, { recursive: true });
  const mounts: MountSpec[] = [{ containerPath: "/status", hostPath: statusDir }];
  let devices = deviceSpecs(opt.devices);
  const env: Record<string, string> = {};
  let command: string[];
  if (workload === "double") {
    const dir = join(repo, "dist/gpu-double");
    writeFileSync(join(scratch, "nvidiactl"), "");
    mounts.push({ containerPath: "/kyb", hostPath: dir, readonly: true });
    mounts.push({ containerPath: "/dev/nvidiactl", hostPath: join(scratch, "nvidiactl") });
    devices = [];
    command = ["/kyb/fake-cuda-workload", "--mib", String(Math.round(gib * 1024)), "--dir", "/status"];
  } else {
    mounts.push({ containerPath: opt["driver-root"], hostPath: opt["driver-root"], readonly: true });
    // The busybox image has no C library: the CUDA program and Python load the host's, read-only.
    mounts.push({ containerPath: "/lib64", hostPath: "/usr/lib64", readonly: true });
    mounts.push({ containerPath: "/lib", hostPath: "/usr/lib", readonly: true });
    env.LD_LIBRARY_PATH = `/lib/x86_64-linux-gnu:${opt["driver-root"]}/lib64`;
    env.NVIDIA_VISIBLE_DEVICES = "all";
    if (workload === "cuda") {
      const bin = opt["workload-bin"] ?? join(repo, "dist/gpu-workload/workload");
      mounts.push({ containerPath: "/kyb/workload", hostPath: bin, readonly: true });
      command = [
        "/kyb/workload",
        "--gib",
        String(gib),
        "--status",
        "/status/status.json",
        "--verify-every",
        "1",
      ];
    } else {
      for (const m of opt["python-mounts"].split(",").filter(Boolean)) {
        mounts.push({ containerPath: m, hostPath: m, readonly: true });
      }
      mounts.push({
        containerPath: "/kyb/torch-train.py",
        hostPath: join(repo, "test/e2e/torch-train.py"),
        readonly: true,
      });
      env.LD_LIBRARY_PATH = `/usr/lib/x86_64-linux-gnu:${opt["driver-root"]}/lib64`;
      env.HOME = "/tmp";
      command = [
        opt.python,
        "/kyb/torch-train.py",
        "--steps",
        opt["torch-steps"],
        "--log",
        "/status/loss.jsonl",
        "--status",
        "/status/status.json",
        "--ballast-gib",
        String(gib),
      ];
    }
  }
  return { gib, statusDir, spec: { command, mounts, devices, env } };
}

function readStatus(c: Case): Status | undefined {
  const files = readdirSync(c.statusDir).filter((f) => f.endsWith(".json"));
  for (const f of files) {
    try {
      return JSON.parse(readFileSync(join(c.statusDir, f), "utf8")) as Status;
    } catch {}
  }
  return undefined;
}

async function waitStatus(
  c: Case,
  containerId: string,
  ok: (s: Status) => boolean,
  what: string,
  timeoutMs = 120_000,
): Promise<Status> {
  const until = Date.now() + timeoutMs;
  let last: Status | undefined;
  while (Date.now() < until) {
    last = readStatus(c);
    if (last && ok(last)) return last;
    const state = (await cri.containerStatus(containerId).catch(() => undefined))?.status;
    if (state && state.state !== "CONTAINER_RUNNING" && state.state !== "CONTAINER_CREATED") {
      throw new Error(
        `${what}: the container is ${state.state} (exit ${state.exitCode}, ${state.reason} ${state.message}); its output:\n${containerLog(c)}`,
      );
    }
    await sleep(50);
  }
  throw new Error(
    `${what}: not reached in ${timeoutMs} ms; last status ${JSON.stringify(last)}; output:\n${containerLog(c)}`,
  );
}

function containerLog(c: Case): string {
  try {
    return readFileSync(join(c.statusDir, "logs", "gpu.log"), "utf8")
      .split("\n")
      .slice(-20)
      .join("\n");
  } catch {
    return "(no container log)";
  }
}

async function pod(name: string, c: Case): Promise<{ podId: string; config: In<PodSandboxConfig> }> {
  mkdirSync(join(c.statusDir, "logs"), { recursive: true });
  return cri.runHostNetworkPod(`${name}-${Date.now() % 100000}`, "kybernate-e2e", {
    logDirectory: join(c.statusDir, "logs"),
  });
}

const ms = (t0: number) => Math.round(performance.now() - t0);

/** A log line after `mark` whose message starts with `msg` (the engine appends its duration). */
async function logSince(
  kyb: KybernateProcess,
  mark: number,
  msg: string,
  extra: (l: Record<string, unknown>) => boolean = () => true,
  timeoutMs = 60_000,
) {
  return kyb.waitForLog((l) => String(l.msg).startsWith(msg) && extra(l), { since: mark, timeoutMs });
}

type Mode = "store" | "self-contained";

interface Row {
  gib: number;
  mode: Mode;
  ckptMs: number;
  preDumpMs: number;
  freezeMs: number;
  criuMs: number;
  resumeThawMs: number;
  archiveMiB: number;
  createMs: number;
  startMs: number;
  preRestoreMs: number;
  postResumeMs: number;
  thawMs: number;
  /** --via-image: the image built from the archive and pushed, then pulled by the runtime. */
  image?: { buildPushMs: number; layerMiB: number; pullMs: number };
  floor?: { freezeMs: number; criuMs: number; thawMs: number };
  /** What CRIU wrote: the archive's checkpoint/ members plus the page images in the store. */
  imageBytes: number;
  /** kybernate's own breakdown (its "checkpoint phases" log line), ms. */
  phasesMs: Record<string, number>;
  /** containerd's steps, sampled from its directories. */
  containerd: SampledPhases;
  peakExtraPerVramGiB: number;
  /** The node floor (--disk-floor-gib): GPU freeze + image / write bandwidth; restore: image / read + GPU thaw. */
  nodeFloor?: { checkpointMs: number; restoreMs: number };
}

let caseNumber = 0;

/** The node's disk bandwidth (--disk-floor-gib), measured once at the start of the run. */
let disk: DiskBandwidth | undefined;

/** The kubelet's file name for a checkpoint archive. */
const kubeletName = (podName: string) =>
  `checkpoint-${podName}_kybernate-e2e-gpu-${new Date().toISOString().replace(/\.\d+Z$/, "Z")}.tar`;

/** Sizes of an archive's checkpoint/ members (CRIU's images and kybernate's files). */
async function checkpointMemberBytes(archive: string): Promise<number> {
  const reader = await TarReader.open(archive);
  let sum = 0;
  try {
    for (let h = await reader.next(); h; h = await reader.next())
      if (/^(\.\/)?checkpoint\//.test(h.name)) sum += h.size;
  } finally {
    await reader.close();
  }
  return sum;
}

async function runCase(kyb: KybernateProcess, gib: number, mode: Mode): Promise<Row> {
  // A directory of its own per case: a status file left by an earlier case of the same size would look running.
  const c = makeCase(gib, `case-${mode}-${gib}-${++caseNumber}`);
  const podName = `gpu-${workload}-${gib}-${mode === "store" ? "s" : "f"}`;
  const original = await pod(podName, c);
  const id = await cri.createContainer(original.podId, original.config, {
    name: "gpu",
    image: node.image,
    logPath: "gpu.log",
    ...c.spec,
  });
  await cri.startContainer(id);
  const before = await waitStatus(c, id, (s) => s.counter > 3, `${gib} GiB workload running`, 600_000);
  const archive = join(scratch, kubeletName(podName));
  const mark = kyb.logs.length;
  const sampler = new ContainerdSampler({
    temp: containerdTemp,
    root: node.root,
    containerId: id,
    archive,
    ...(mode === "store" && storeDir ? { store: storeDir } : {}),
  });
  sampler.start();
  const t0 = performance.now();
  try {
    // As the kubelet calls it: the request's timeout (containerd ignores it) and the gRPC deadline.
    await cri.rpc(
      "CheckpointContainer",
      { containerId: id, location: archive, timeout: deadlineS },
      { timeoutMs: deadlineS * 1000 },
    );
  } catch (error) {
    const sampled = sampler.stop();
    throw new Error(
      `${gib} GiB (${mode}): CheckpointContainer failed after ${ms(t0)} ms (deadline ${deadlineS} s): ${(error as Error).message}; sampled ${JSON.stringify(sampled)}`,
    );
  }
  const ckptMs = ms(t0);
  const sampled = sampler.stop();
  const pre = await logSince(kyb, mark, "GPU state moved to host memory");
  const resumed = await logSince(kyb, mark, "container resumed; GPU state restored");
  const phases = await logSince(kyb, mark, "checkpoint phases", (l) => l.containerId === id);
  const freeze = kyb.logs.slice(mark).find((l) => /^gpu (freeze|checkpoint) done/.test(String(l.msg)));
  const thawAfter = kyb.logs.slice(mark).find((l) => /^gpu (thaw|restore) done/.test(String(l.msg)));
  if (!resumed.ok) throw new Error(`${gib} GiB: GPU not restored after the checkpoint`);
  const goingOn = await waitStatus(
    c,
    id,
    (s) => s.counter > before.counter + 3 && s.verified > before.verified,
    `${gib} GiB workload continuing after its checkpoint`,
  );
  if (goingOn.verifyFailures)
    throw new Error(`${gib} GiB: VRAM corrupted after the checkpoint: ${JSON.stringify(goingOn)}`);
  const archiveMiB = Math.round(statSync(archive).size / 2 ** 20);
  const manifestBytes = await readTarMember(archive, `checkpoint/${PAGES_MANIFEST}`, { maxBytes: 1 << 20 });
  const manifest = manifestBytes ? parseManifest(manifestBytes, archive) : undefined;
  if (mode === "store" && !manifest) throw new Error(`${gib} GiB: the archive has no page manifest`);
  const pageBytes = manifest?.files.reduce((sum, f) => sum + f.size, 0) ?? 0;
  const imageBytes = (await checkpointMemberBytes(archive)) + pageBytes;
  await cri.stopAndRemovePod(original.podId);
  let image: { ref: string; buildPushMs: number; layerMiB: number } | undefined;
  if (opt["via-image"]) {
    // The node's own registry (test/node/up.sh), spoken to as localhost: containerd pulls from it in plain HTTP.
    const ref = `localhost:${node.registry.split(":")[1]}/kybernate-e2e/ckpt-${gib}:${Date.now()}`;
    const tb = performance.now();
    const built = await buildImage({ archive, tag: ref, push: true });
    image = { ref, buildPushMs: ms(tb), layerMiB: Math.round(built.layer.size / 2 ** 20) };
    rmSync(archive, { force: true });
  }

  const atCheckpoint = before.counter;
  for (const f of readdirSync(c.statusDir)) rmSync(join(c.statusDir, f), { force: true, recursive: true });
  if (workload === "torch") writeFileSync(join(c.statusDir, "loss.jsonl"), "");
  // A cold restore: what it reads comes from the disk, as on a node that did not just write it.
  // (From an image, the registry's blobs and containerd's snapshot hold it: not evicted.)
  if (!image)
    evict(
      manifest && storeDir
        ? manifest.files.map((f) => join(storeDir, "checkpoints", manifest.checkpointId, f.name))
        : [archive],
    );
  const restored = await pod(`${podName}-restored`, c);
  const mark2 = kyb.logs.length;
  const t1 = performance.now();
  const restoreSpec = {
    ...c.spec,
    ...(opt["restore-devices"] ? { devices: deviceSpecs(opt["restore-devices"]) } : {}),
    logPath: "gpu.log",
  };
  let pullMs = 0;
  let rid: string;
  if (image) {
    // As the kubelet: pull the pod spec's image, then create the container from the id the runtime returned.
    const imageId = await cri.pullImage(image.ref, { podConfig: restored.config });
    pullMs = ms(t1);
    rid = await cri.createContainer(
      restored.podId,
      restored.config,
      {
        ...restoreSpec,
        name: "gpu",
        image: imageId,
        userSpecifiedImage: image.ref,
      },
      { timeoutMs: 600_000 },
    );
  } else {
    rid = await cri.restoreFromArchive(restored.podId, restored.config, archive, "gpu", restoreSpec, {
      timeoutMs: 600_000,
    });
  }
  const createMs = ms(t1) - pullMs;
  const t2 = performance.now();
  await cri.startContainer(rid, { timeoutMs: 600_000 });
  const startMs = ms(t2);
  const post = await logSince(kyb, mark2, "GPU state restored", (l) => l.action === "post-resume");
  const planned = kyb.logs.slice(mark2).find((l) => l.msg === "restore planned");
  const after = await waitStatus(
    c,
    rid,
    // Training: enough steps after the restore to compare many losses with the uninterrupted run.
    (s) => s.verified > 0 && s.counter > atCheckpoint + (workload === "torch" ? 40 : 0),
    `${gib} GiB restored workload`,
  );
  if (after.verifyFailures)
    throw new Error(`${gib} GiB: VRAM corrupted after restore: ${JSON.stringify(after)}`);
  if (workload === "torch") checkLosses(c, atCheckpoint);
  if (opt["restore-devices"]) await checkMovedGpu(kyb, mark2, id, rid);
  await cri.stopAndRemovePod(restored.podId);
  rmSync(archive, { force: true });
  // The next case needs the disk: the archive is gone, so is what the store kept for it.
  if (mode === "store")
    await askDaemon(kyb.socket, { kind: "store", op: "gc", keep: 0 }, 120_000).catch(() => undefined);

  const thawMs = Math.round(
    Number((post.phasesMs as Record<string, number>).restore ?? 0) +
      Number((post.phasesMs as Record<string, number>).unlock ?? 0),
  );
  const freezeMs = Math.round(
    Number((freeze?.record as { totalMs?: number } | undefined)?.totalMs ?? Number.NaN),
  );
  const row: Row = {
    gib,
    mode,
    ckptMs,
    preDumpMs: Number(pre.ms),
    freezeMs,
    criuMs: ckptMs - Number(pre.ms),
    resumeThawMs: Math.round(
      Number((thawAfter?.record as { totalMs?: number } | undefined)?.totalMs ?? Number.NaN),
    ),
    archiveMiB,
    createMs,
    startMs,
    preRestoreMs: Number(planned?.ms ?? Number.NaN),
    postResumeMs: Math.round(Number(post.ms)),
    thawMs,
    imageBytes,
    phasesMs: phases.phasesMs as Record<string, number>,
    containerd: sampled,
    peakExtraPerVramGiB: sampled.peakExtraBytes / (gib * 2 ** 30),
    ...(disk
      ? {
          nodeFloor: {
            checkpointMs: Math.round(freezeMs + (imageBytes / disk.writeBps) * 1000),
            restoreMs: Math.round((imageBytes / disk.readBps) * 1000 + thawMs),
          },
        }
      : {}),
  };
  if (image) row.image = { buildPushMs: image.buildPushMs, layerMiB: image.layerMiB, pullMs };
  if (floorSizes.has(gib) && mode === (storeDir ? "store" : "self-contained")) row.floor = await floor(gib);
  console.error(`[e2e] ${gib} GiB: ${JSON.stringify(row)}`);
  return row;
}

/** A restore into other devices: the plan mapped the GPU, and the restored process runs on the new one. */
async function checkMovedGpu(kyb: KybernateProcess, mark: number, id: string, rid: string): Promise<void> {
  const planLine = kyb.logs.slice(mark).find((l) => l.msg === "GPU restore plan");
  const plan = planLine?.plan as { ok: boolean; deviceMap?: Array<{ from: string; to: string }> } | undefined;
  const apps = execFileSync("nvidia-smi", ["--query-compute-apps=pid,gpu_uuid", "--format=csv,noheader"], {
    encoding: "utf8",
  });
  const pid = await initPidOf(cri, rid);
  const on = apps
    .split("\n")
    .map((l) => l.split(",").map((x) => x.trim()))
    .find(([p]) => Number(p) === pid)?.[1];
  const moved = plan?.deviceMap?.find((p) => p.from !== p.to);
  console.error(
    `[e2e] restore into ${opt["restore-devices"]}: plan ${JSON.stringify(plan)} (${planLine?.containerGpus}); restored pid ${pid} runs on ${on} (container ${id} was checkpointed elsewhere)`,
  );
  if (!moved)
    throw new Error(`restore into other devices: the plan has no device map: ${JSON.stringify(plan)}`);
  if (on !== moved.to) throw new Error(`the restored process runs on ${on}, not on ${moved.to} as mapped`);
}

/** The same kind of container without kybernate's stages: the driver alone, then containerd + CRIU alone. */
async function floor(gib: number): Promise<{ freezeMs: number; criuMs: number; thawMs: number }> {
  const c = makeCase(gib, `floor-${gib}`);
  const p = await pod(`gpu-floor-${gib}`, c);
  const id = await cri.createContainer(p.podId, p.config, {
    name: "gpu",
    image: node.image,
    logPath: "gpu.log",
    ...c.spec,
  });
  await cri.startContainer(id);
  await waitStatus(c, id, (s) => s.counter > 3, `${gib} GiB floor workload running`);
  const backend = openBackend({
    kind: opt["gpu-backend"] as "driver" | "binary",
    ...(opt.libcuda ? { libcuda: opt.libcuda } : {}),
    ...(opt["cuda-checkpoint"] ? { cudaCheckpoint: opt["cuda-checkpoint"] } : {}),
  });
  const engine = new GpuEngine({ backend });
  const initPid = await initPidOf(cri, id);
  const found = await discoverCudaProcesses({ initPid, backend, mode: "held" });
  const pids = found.cuda.map((p) => p.pid);
  const frozen = await engine.checkpoint(pids);
  if (!frozen.ok) throw new Error(`floor freeze failed: ${JSON.stringify(frozen.failure)}`);
  const archive = join(scratch, `floor-${gib}.tar`);
  const t0 = performance.now();
  await cri.checkpoint(id, archive, 600); // kybernate's hook finds no running CUDA process: nothing to do
  const criuMs = ms(t0);
  const thawed = await engine.restore(pids);
  if (!thawed.ok) throw new Error(`floor thaw failed: ${JSON.stringify(thawed.failure)}`);
  backend.close();
  await cri.stopAndRemovePod(p.podId);
  rmSync(archive, { force: true });
  return { freezeMs: Math.round(frozen.totalMs), criuMs, thawMs: Math.round(thawed.totalMs) };
}

/** Restored training must produce, step for step, the losses of an uninterrupted run with the same seed. */
function checkLosses(c: Case, atCheckpoint: number): void {
  const reference = new Map<number, string>();
  for (const line of readFileSync(join(scratch, "reference-loss.jsonl"), "utf8")
    .split("\n")
    .filter(Boolean)) {
    const { step, loss } = JSON.parse(line) as { step: number; loss: string };
    reference.set(step, loss);
  }
  let compared = 0;
  for (const line of readFileSync(join(c.statusDir, "loss.jsonl"), "utf8").split("\n").filter(Boolean)) {
    const { step, loss } = JSON.parse(line) as { step: number; loss: string };
    if (step <= atCheckpoint)
      throw new Error(`restored training repeated step ${step} (checkpointed at ${atCheckpoint})`);
    if (reference.get(step) !== loss)
      throw new Error(`step ${step}: loss ${loss} after restore, ${reference.get(step)} uninterrupted`);
    compared++;
  }
  if (compared < 3) throw new Error(`only ${compared} steps after restore to compare`);
  console.error(`[e2e] torch: ${compared} steps after restore equal the uninterrupted run's losses`);
}

async function referenceRun(): Promise<void> {
  execFileSync(
    opt.python,
    [
      join(repo, "test/e2e/torch-train.py"),
      "--steps",
      opt["torch-steps"],
      "--interval",
      "0",
      "--log",
      join(scratch, "reference-loss.jsonl"),
    ],
    { stdio: "inherit", env: { ...process.env, LD_LIBRARY_PATH: `${opt["driver-root"]}/lib64` } },
  );
}

/** --via-image: the four steps of a migration through a registry, and what the restore found. */
function imageTable(rows: Row[]): string {
  const lines = [
    `workload ${workload}, backend ${opt["gpu-backend"]}, restored from a checkpoint image in the node's registry; times in ms`,
    "",
    "| VRAM GiB | checkpoint (CRI) | image build + push | image MiB | pull | create | start (CRIU restore + GPU thaw) | post-resume (kybernate) | VRAM verified after restore |",
    "|---|---|---|---|---|---|---|---|---|",
  ];
  for (const r of rows)
    lines.push(
      `| ${r.gib} | ${r.ckptMs} | ${r.image?.buildPushMs ?? "–"} | ${r.image?.layerMiB ?? "–"} | ${r.image?.pullMs ?? "–"} | ${r.createMs} | ${r.startMs} | ${r.postResumeMs} | yes |`,
    );
  return lines.join("\n");
}

function table(rows: Row[]): string {
  const f = (n: number | undefined) => (n === undefined || Number.isNaN(n) ? "–" : String(n));
  const lines = [
    `workload ${workload}, backend ${opt["gpu-backend"]}; times in ms`,
    "",
    "| VRAM GiB | mode | CRI checkpoint | pre-dump (kybernate) | GPU freeze | containerd+CRIU | GPU thaw after resume | archive MiB | restore create | restore start | pre-restore (kybernate) | post-resume (kybernate) | GPU thaw | floor: freeze + CRIU + thaw | checkpoint ÷ floor (freeze+CRIU) | kybernate own (pre-dump − freeze) |",
    "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
  ];
  for (const r of rows) {
    const floorText = r.floor ? `${r.floor.freezeMs} + ${r.floor.criuMs} + ${r.floor.thawMs}` : "–";
    const ratio = r.floor ? (r.ckptMs / (r.floor.freezeMs + r.floor.criuMs)).toFixed(3) : "–";
    lines.push(
      `| ${r.gib} | ${r.mode} | ${r.ckptMs} | ${r.preDumpMs} | ${f(r.freezeMs)} | ${r.criuMs} | ${f(r.resumeThawMs)} | ${r.archiveMiB} | ${r.createMs} | ${r.startMs} | ${f(r.preRestoreMs)} | ${r.postResumeMs} | ${r.thawMs} | ${floorText} | ${ratio} | ${f(r.preDumpMs - r.freezeMs)} |`,
    );
  }
  lines.push("", phaseTable(rows));
  return lines.join("\n");
}

/** Where each checkpoint's time went (kybernate's phases, containerd's sampled ones) and the node floor. */
function phaseTable(rows: Row[]): string {
  const s = (ms: number | undefined) => (ms === undefined || Number.isNaN(ms) ? "–" : (ms / 1000).toFixed(1));
  const lines = [
    disk
      ? `node floor: the disk of containerd's temp dir ${disk.dir}: write+fsync ${gbps(disk.writeBps)}, O_DIRECT read ${gbps(disk.readBps)} (${(disk.bytes / 2 ** 30).toFixed(0)} GiB each, this run); checkpoint floor = GPU freeze + image ÷ write, restore floor = image ÷ read + GPU thaw`
      : "node floor: not measured (give --disk-floor-gib N)",
    `CheckpointContainer as the kubelet sends it, gRPC deadline ${deadlineS} s; times in s`,
    "",
    "| VRAM GiB | mode | image GiB | CRI checkpoint | GPU freeze | CRIU dump | page store | post-dump → resume | after resume (export) | containerd: ingest | its fsync | unpack | export tar | peak extra disk ÷ VRAM | checkpoint floor | ckpt ÷ floor | restore create + start | restore floor | restore ÷ floor |",
    "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
  ];
  for (const r of rows) {
    const p = r.phasesMs;
    const afterResume = p.total !== undefined ? r.ckptMs - p.total : undefined;
    const restore = r.createMs + r.startMs;
    const fl = r.nodeFloor;
    lines.push(
      `| ${r.gib} | ${r.mode} | ${(r.imageBytes / 2 ** 30).toFixed(2)} | ${s(r.ckptMs)} | ${s(p.gpuFreeze)} | ${s(p.criuDump)} | ${s(p.pageStore)} | ${s(p.untilResume)} | ${s(afterResume)} | ${s(r.containerd.ingest?.ms)} | ${s(r.containerd.ingestSync?.ms)} | ${s(r.containerd.unpack?.ms)} | ${s(r.containerd.export?.ms)} | ${r.peakExtraPerVramGiB.toFixed(2)} | ${s(fl?.checkpointMs)} | ${fl ? (r.ckptMs / fl.checkpointMs).toFixed(2) : "–"} | ${s(restore)} | ${s(fl?.restoreMs)} | ${fl ? (restore / fl.restoreMs).toFixed(2) : "–"} |`,
    );
  }
  return lines.join("\n");
}

async function main(): Promise<void> {
  await cri.pullImage(node.image);
  if (workload === "torch") await referenceRun();
  if (storeDir) mkdirSync(storeDir, { recursive: true });
  if (diskFloorGib > 0) {
    mkdirSync(containerdTemp, { recursive: true });
    disk = measureDisk(containerdTemp, diskFloorGib);
    console.error(
      `[e2e] disk of ${containerdTemp}: write+fsync ${gbps(disk.writeBps)}, read ${gbps(disk.readBps)} (${diskFloorGib} GiB)`,
    );
  }
  const start = (store: boolean) =>
    startKybernate({
      nriSocket: node.nriSocket,
      args: [
        ...backendArgs,
        "--containerd-socket",
        node.containerdSocket,
        "--criu",
        node.bin.criu,
        "--gpu-budget",
        "600",
        ...(store && storeDir ? ["--page-store", storeDir, "--archive-dir", scratch] : []),
      ],
    });
  const rows: Row[] = [];
  let failure: unknown;
  const plan: Array<{ mode: Mode; sizes: number[] }> = [
    { mode: storeDir ? "store" : "self-contained", sizes },
    ...(storeDir && selfContainedSizes.length
      ? [{ mode: "self-contained" as Mode, sizes: selfContainedSizes }]
      : []),
  ];
  let kyb: KybernateProcess | undefined;
  const logs: Array<Record<string, unknown>> = [];
  try {
    for (const step of plan) {
      await kyb?.stop();
      if (kyb) logs.push(...kyb.logs);
      kyb = await start(step.mode === "store");
      for (const gib of step.sizes) rows.push(await runCase(kyb, gib, step.mode));
    }
  } catch (error) {
    failure = error;
    console.error(`[e2e] FAILED: ${(error as Error).message}`);
    console.error(
      (kyb?.logs ?? [])
        .slice(-25)
        .map((l) => JSON.stringify(l).slice(0, 600))
        .join("\n"),
    );
  } finally {
    await kyb?.stop();
    if (kyb) logs.push(...kyb.logs);
    if (opt["kybernate-log"])
      writeFileSync(opt["kybernate-log"], logs.map((l) => `${JSON.stringify(l)}\n`).join(""));
    for (const p of await cri.listPodSandbox()) {
      if (p.metadata?.namespace === "kybernate-e2e") await cri.stopAndRemovePod(p.id).catch(() => undefined);
    }
    cri.close();
  }
  const text = opt["via-image"] ? `${table(rows)}\n\n${imageTable(rows)}` : table(rows);
  console.log(text);
  if (opt.out) writeFileSync(opt.out, `${text}\n`);
  if (failure) process.exit(1);
}

await main();

/**
 * kybernate end to end with Kubernetes-shaped GPU pods (issue 12), on the test node or a GPU node:
 *
 *   inference: an HTTP inference server holding --gib GiB of weights in VRAM (the GPU double's --serve, or the CUDA
 *     inference-server), queried in a loop by a client pod over one keep-alive connection; a kubelet-shaped
 *     CheckpointContainer while requests flow; a restore into a new pod (new IP). Reports the client's failed
 *     requests and the longest request (the pause it saw), and whether the restored server answers the client's
 *     inputs bit for bit as the original did.
 *   ddp: a PyTorch distributed job (test/e2e/torch-ddp.py: 2 ranks, TCPStore + gloo on loopback) checkpointed
 *     mid-run and restored into a new pod; its losses must equal those of an uninterrupted run of the same job.
 *
 * Pods are on the node's CNI pod network (test/node/pod-network.sh). Run through test/e2e/pod-e2e.sh, which brings
 * up the node. Nothing here knows the machine: paths are options.
 */
import {
  appendFileSync,
  existsSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  rmSync,
  writeFileSync,
} from "node:fs";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { parseArgs } from "node:util";
import { packageRoot } from "../../src/base/paths.js";
import type { DeviceSpec, MountSpec } from "../../src/cri/client.js";
import type { In, PodSandboxConfig } from "../../src/cri/types.js";
import { type ClientStatus, hasPodNetwork } from "../support/gpu-node.js";
import { type KybernateProcess, startKybernate } from "../support/kybernate-process.js";
import { TestCriClient } from "../support/test-cri-client.js";
import { loadTestNode } from "../support/testnode.js";

const { values: opt } = parseArgs({
  options: {
    scenario: { type: "string", default: "inference" },
    workload: { type: "string", default: "cuda" },
    gib: { type: "string", default: "8" },
    "gpu-backend": { type: "string", default: "driver" },
    "cuda-checkpoint": { type: "string" },
    libcuda: { type: "string" },
    "server-bin": { type: "string" },
    "driver-root": { type: "string", default: "/usr/local/nvidia" },
    devices: { type: "string", default: "/dev/nvidiactl,/dev/nvidia0,/dev/nvidia-uvm,/dev/nvidia-uvm-tools" },
    python: { type: "string", default: "/opt/torch/.venv/bin/python3" },
    "python-mounts": { type: "string", default: "/usr,/opt/torch" },
    device: { type: "string", default: "cuda" },
    steps: { type: "string", default: "400" },
    "checkpoint-at": { type: "string", default: "100" },
    "memory-limit-mib": { type: "string" },
    "page-store": { type: "string" },
    scratch: { type: "string", default: "/tmp/kybernate-pod-e2e" },
    out: { type: "string" },
  },
});

const scenario = opt.scenario as "inference" | "ddp";
const workload = opt.workload as "cuda" | "double";
if (!["inference", "ddp"].includes(scenario)) throw new Error("--scenario must be inference or ddp");
if (!["cuda", "double"].includes(workload)) throw new Error("--workload must be cuda or double");
const gib = Number(opt.gib);
const node = loadTestNode();
const cri = new TestCriClient(node.criSocket);
const scratch = opt.scratch;
rmSync(scratch, { recursive: true, force: true });
mkdirSync(scratch, { recursive: true });
const doubleDir = join(packageRoot, "dist/gpu-double");
const PORT = 8080;
const ms = (t0: number) => Math.round(performance.now() - t0);
const say = (line: string) => console.error(`[pod-e2e] ${line}`);

const deviceSpecs = (list: string): DeviceSpec[] =>
  list
    .split(",")
    .filter(Boolean)
    .map((d) => ({ containerPath: d, hostPath: d, permissions: "rwm" }));

/** The mounts, devices and environment of a container that uses the GPU (or the double). */
function gpuSpec(statusDir: string): {
  mounts: MountSpec[];
  devices: DeviceSpec[];
  env: Record<string, string>;
} {
  const mounts: MountSpec[] = [
    { containerPath: "/status", hostPath: statusDir },
    { containerPath: "/kyb", hostPath: doubleDir, readonly: true },
  ];
  if (workload === "double") {
    writeFileSync(join(scratch, "nvidiactl"), "");
    mounts.push({ containerPath: "/dev/nvidiactl", hostPath: join(scratch, "nvidiactl") });
    return { mounts, devices: [], env: {} };
  }
  mounts.push({ containerPath: opt["driver-root"], hostPath: opt["driver-root"], readonly: true });
  // The busybox image has no C library: the programs load the host's, read-only.
  mounts.push({ containerPath: "/lib64", hostPath: "/usr/lib64", readonly: true });
  mounts.push({ containerPath: "/lib", hostPath: "/usr/lib", readonly: true });
  return {
    mounts,
    devices: deviceSpecs(opt.devices),
    env: {
      LD_LIBRARY_PATH: `/lib/x86_64-linux-gnu:${opt["driver-root"]}/lib64`,
      NVIDIA_VISIBLE_DEVICES: "all",
    },
  };
}

/** A pod whose containers log to <scratch>/logs/<pod>/<container>.log. */
async function newPod(name: string): Promise<{ podId: string; config: In<PodSandboxConfig> }> {
  const podName = `${name}-${Date.now() % 100000}`;
  const logDirectory = join(scratch, "logs", podName);
  mkdirSync(logDirectory, { recursive: true });
  return hasPodNetwork()
    ? cri.runPodNetworkPod(podName, "kybernate-e2e", { logDirectory })
    : cri.runHostNetworkPod(podName, "kybernate-e2e", { logDirectory });
}

/** Fails at once, with the container's output, when it is no longer running. */
async function running(id: string, what: string): Promise<void> {
  const s = (await cri.containerStatus(id).catch(() => undefined))?.status;
  if (s && s.state !== "CONTAINER_RUNNING" && s.state !== "CONTAINER_CREATED") {
    const log =
      s.logPath && existsSync(s.logPath)
        ? readFileSync(s.logPath, "utf8").split("\n").slice(-15).join("\n")
        : "";
    throw new Error(
      `${what}: the container is ${s.state} (exit ${s.exitCode} ${s.reason}); its output:\n${log}`,
    );
  }
}

async function readJson<T>(path: string): Promise<T | undefined> {
  try {
    return JSON.parse(readFileSync(path, "utf8")) as T;
  } catch {
    return undefined;
  }
}

async function until<T>(
  what: string,
  get: () => Promise<T | undefined>,
  ok: (v: T) => boolean,
  timeoutMs = 300_000,
  container?: string,
): Promise<T> {
  const end = Date.now() + timeoutMs;
  let last: T | undefined;
  while (Date.now() < end) {
    last = await get();
    if (last !== undefined && ok(last)) return last;
    if (container) await running(container, what);
    await sleep(100);
  }
  throw new Error(`${what}: not within ${timeoutMs} ms; last ${JSON.stringify(last)}`);
}

async function startDaemon(): Promise<KybernateProcess> {
  return startKybernate({
    nriSocket: node.nriSocket,
    args: [
      "--gpu-backend",
      opt["gpu-backend"],
      ...(opt["cuda-checkpoint"] ? ["--cuda-checkpoint", opt["cuda-checkpoint"]] : []),
      ...(opt.libcuda
        ? ["--libcuda", opt.libcuda]
        : workload === "double"
          ? ["--libcuda", join(doubleDir, "libcuda.so.1")]
          : []),
      "--containerd-socket",
      node.containerdSocket,
      "--criu",
      node.bin.criu,
      "--gpu-budget",
      "300",
      // With the node page store the archive carries no pages, so containerd resumes the task sooner.
      ...(opt["page-store"] ? ["--page-store", opt["page-store"], "--archive-dir", scratch] : []),
      // The double has no nvidia-smi to say what a checkpoint stages.
      ...(workload === "double" ? ["--vram-estimate-mib", String(Math.round(gib * 1024))] : []),
    ],
    env: workload === "double" ? { FAKE_CUDA_DIR: "/status" } : {},
  });
}

/** The client's inputs answered once by the server at `server`: "k answer" lines. */
function answers(clientId: string, server: string): Promise<string[]> {
  return cri.exec(clientId, ["/kyb/inference-client", "--server", server, "--print"], 60).then((r) => {
    if (r.exitCode !== 0) throw new Error(`inference-client --print ${server}: ${r.stderr}`);
    return r.stdout.trim().split("\n");
  });
}

async function clientStatus(clientId: string): Promise<ClientStatus | undefined> {
  const r = await cri.exec(clientId, ["cat", "/tmp/client.json"], 10).catch(() => undefined);
  return r?.exitCode === 0 && r.stdout.startsWith("{") ? (JSON.parse(r.stdout) as ClientStatus) : undefined;
}

async function inference(kyb: KybernateProcess): Promise<string[]> {
  const statusDir = join(scratch, "server");
  mkdirSync(statusDir, { recursive: true });
  const spec = gpuSpec(statusDir);
  const command =
    workload === "double"
      ? [
          "/kyb/fake-cuda-workload",
          "--mib",
          String(Math.round(gib * 1024)),
          "--dir",
          "/status",
          "--serve",
          String(PORT),
        ]
      : ["/kyb-server", "--gib", String(gib), "--port", String(PORT), "--status", "/status/status.json"];
  if (workload === "cuda") {
    const bin = opt["server-bin"] ?? join(packageRoot, "dist/gpu-inference/inference-server");
    spec.mounts.push({ containerPath: "/kyb-server", hostPath: bin, readonly: true });
  }
  const limit = opt["memory-limit-mib"]
    ? { memoryLimitBytes: Number(opt["memory-limit-mib"]) * 2 ** 20 }
    : {};
  const serverPod = await newPod("infer-server");
  const server = await cri.createContainer(serverPod.podId, serverPod.config, {
    name: "server",
    image: node.image,
    logPath: "server.log",
    command,
    ...spec,
    ...limit,
  });
  const t0 = performance.now();
  await cri.startContainer(server);
  const ip = (await cri.podIp(serverPod.podId)) || "127.0.0.1";
  const clientPod = await newPod("infer-client");
  const client = await cri.createContainer(clientPod.podId, clientPod.config, {
    name: "client",
    image: node.image,
    command: ["/kyb/inference-client", "--server", `${ip}:${PORT}`, "--status", "/tmp/client.json"],
    mounts: [{ containerPath: "/kyb", hostPath: doubleDir, readonly: true }],
  });
  await cri.startContainer(client);
  await until(
    "the client's first answers",
    () => clientStatus(client),
    (s) => s.ok > 20,
  );
  const loadMs = ms(t0);
  const reference = await answers(client, `${ip}:${PORT}`);
  const before = (await clientStatus(client)) as ClientStatus;
  const archive = join(scratch, "infer.tar");
  const mark = kyb.logs.length;
  const t1 = performance.now();
  await cri.checkpoint(server, archive, 600);
  const checkpointMs = ms(t1);
  await kyb.waitForLog((l) => l.containerId === server && String(l.msg).startsWith("container resumed"), {
    since: mark,
    timeoutMs: 300_000,
  });
  const after = await until(
    "the client going on",
    () => clientStatus(client),
    (s) => s.ok > before.ok + 50,
  );
  const pre = kyb.logs.slice(mark).find((l) => l.msg === "GPU state moved to host memory");

  const restoredPod = await newPod("infer-restored");
  const restoredDir = join(scratch, "restored");
  mkdirSync(restoredDir, { recursive: true });
  const restoredSpec = gpuSpec(restoredDir);
  restoredSpec.mounts = [
    ...restoredSpec.mounts.filter((m) => m.containerPath !== "/status"),
    { containerPath: "/status", hostPath: restoredDir },
  ];
  if (workload === "cuda")
    restoredSpec.mounts.push(spec.mounts.find((m) => m.containerPath === "/kyb-server") as MountSpec);
  const t2 = performance.now();
  const restored = await cri.restoreFromArchive(restoredPod.podId, restoredPod.config, archive, "server", {
    ...restoredSpec,
    ...limit,
  });
  await cri.startContainer(restored);
  const restoreMs = ms(t2);
  const newIp = (await cri.podIp(restoredPod.podId)) || "127.0.0.1";
  const t3 = performance.now();
  const restoredAnswers = await answers(client, `${newIp}:${PORT}`);
  const firstAnswerMs = ms(t3);
  const identical = restoredAnswers.join("\n") === reference.join("\n");
  // The weights themselves, checked by the server after the restore (the CUDA server every --verify-s seconds).
  const statusOf = async () => {
    const f = readdirSync(restoredDir).find((n) => n.endsWith(".json"));
    return f ? readJson<{ verified: number; verifyFailures: number }>(join(restoredDir, f)) : undefined;
  };
  const atRestore = (await until("the restored server's status", statusOf, () => true, 60_000, restored))
    .verified;
  const vram = await until(
    "the restored server checking its weights",
    statusOf,
    (v) => v.verifyFailures > 0 || v.verified > (workload === "double" ? 0 : atRestore),
    60_000,
    restored,
  );
  const configured = kyb.logs.find(
    (l) => l.id === restored && l.msg === "GPU container: CRIU hook configured",
  );
  const final = (await clientStatus(client)) as ClientStatus;
  await cri.stopAndRemovePod(clientPod.podId);
  await cri.stopAndRemovePod(serverPod.podId);
  await cri.stopAndRemovePod(restoredPod.podId);
  rmSync(archive, { force: true });
  if (!identical)
    throw new Error(`the restored server answers differently:\n${restoredAnswers[0]}\nvs\n${reference[0]}`);
  if (vram.verifyFailures) throw new Error(`the restored weights are corrupted: ${JSON.stringify(vram)}`);
  return [
    `| workload | weights | checkpoint (kubelet-shaped, while serving) | GPU stage | client: requests during | failed | longest request (pause seen) | connection kept | restore + start (new pod) | first answers after | outputs identical | VRAM verified after restore | restored connection |`,
    "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    `| ${workload} | ${gib} GiB | ${checkpointMs} ms | ${pre?.ms ?? "?"} ms | ${after.requests - before.requests} | ${after.failed - before.failed} | ${after.maxLatencyMs} ms | ${after.connects === before.connects ? "yes" : `no (${after.connects - before.connects} reconnects)`} | ${restoreMs} ms | ${firstAnswerMs} ms | ${identical ? "yes" : "NO"} | ${vram.verifyFailures === 0 ? "yes" : "NO"} | ${configured?.tcp ?? "?"} (${configured?.tcpReason ?? ""}) |`,
    "",
    `server up and first answers: ${loadMs} ms; client at the end: ${JSON.stringify(final)}`,
  ];
}

/** The DDP job in one container; resolves with its status dir once its container runs. */
async function ddpJob(name: string, statusDir: string, kybernate: boolean) {
  mkdirSync(statusDir, { recursive: true });
  const spec = gpuSpec(statusDir);
  if (opt.device === "cpu") spec.devices = [];
  for (const m of opt["python-mounts"].split(",").filter(Boolean))
    if (!spec.mounts.some((x) => x.containerPath === m))
      spec.mounts.push({ containerPath: m, hostPath: m, readonly: true });
  if (!spec.mounts.some((m) => m.containerPath === "/lib"))
    spec.mounts.push(
      { containerPath: "/lib64", hostPath: "/usr/lib64", readonly: true },
      { containerPath: "/lib", hostPath: "/usr/lib", readonly: true },
    );
  spec.mounts.push({
    containerPath: "/kyb-ddp.py",
    hostPath: join(packageRoot, "test/e2e/torch-ddp.py"),
    readonly: true,
  });
  spec.env.HOME = "/tmp";
  // Both ranks load PyTorch's libnccl, so kybernate takes them for NCCL ranks (src/checkpoint/nccl.ts); this job
  // runs gloo, and these settings, which a NCCL job needs to be checkpointed, change nothing for it.
  Object.assign(spec.env, {
    NCCL_NVLS_ENABLE: "0",
    NCCL_P2P_DISABLE: "1",
    NCCL_SHM_DISABLE: "1",
    NCCL_IB_DISABLE: "1",
  });
  const pod = await newPod(name);
  const id = await cri.createContainer(pod.podId, pod.config, {
    name: "ddp",
    image: node.image,
    logPath: "ddp.log",
    command: [
      opt.python,
      "/kyb-ddp.py",
      "--steps",
      opt.steps,
      "--device",
      opt.device,
      "--log",
      "/status/loss.jsonl",
      "--status",
      "/status/status.json",
    ],
    ...spec,
    // A CPU-only job has no GPU to make it one of kybernate's containers: opt it in.
    ...(kybernate && opt.device === "cpu" ? { annotations: { "kybernate.io/checkpoint": "true" } } : {}),
  });
  await cri.startContainer(id);
  return { pod, id, spec };
}

const losses = (dir: string): string[] =>
  existsSync(join(dir, "loss.jsonl")) ? readFileSync(join(dir, "loss.jsonl"), "utf8").trim().split("\n") : [];

async function ddp(kyb: KybernateProcess): Promise<string[]> {
  const steps = Number(opt.steps);
  const at = Number(opt["checkpoint-at"]);
  // The uninterrupted run first: its losses are what the checkpointed one must log.
  const refDir = join(scratch, "ddp-reference");
  const ref = await ddpJob("ddp-reference", refDir, true);
  await until(
    "the uninterrupted run",
    () => readJson<{ done: boolean }>(join(refDir, "status.json")),
    (s) => s.done,
    900_000,
    ref.id,
  );
  await cri.stopAndRemovePod(ref.pod.podId);
  const dir = join(scratch, "ddp");
  const job = await ddpJob("ddp", dir, true);
  await until(
    "the job reaching the checkpoint step",
    () => readJson<{ step: number }>(join(dir, "status.json")),
    (s) => s.step >= at,
    300_000,
    job.id,
  );
  const archive = join(scratch, "ddp.tar");
  // KYBERNATE_E2E_CRIU_LOG=FILE: CRIU's dump log at FILE.dump (containerd removes its own with the pod).
  const dumpLog = process.env.KYBERNATE_E2E_CRIU_LOG
    ? `${process.env.KYBERNATE_E2E_CRIU_LOG}.dump`
    : undefined;
  if (dumpLog) appendFileSync(join(kyb.stateDir, "containers", job.id, "criu.conf"), `log-file ${dumpLog}\n`);
  const t0 = performance.now();
  let refused: string | undefined;
  try {
    await cri.checkpoint(job.id, archive, 600);
  } catch (error) {
    refused = (error as Error).message;
  }
  const checkpointMs = ms(t0);
  if (refused) {
    const why = kyb.logs
      .filter((l) => l.containerId === job.id && l.level === 50)
      .map((l) => String(l.error ?? l.msg));
    await cri.stopAndRemovePod(job.pod.podId);
    return [
      `DDP (${opt.device}, 2 ranks): checkpoint REFUSED after ${checkpointMs} ms: ${refused}`,
      ...why.map((w) => `  kybernate: ${w}`),
      // CRIU names what it could not dump on its "Error" lines.
      ...(dumpLog && existsSync(dumpLog)
        ? readFileSync(dumpLog, "utf8")
            .split("\n")
            .filter((l) => /Error|error/.test(l))
            .slice(0, 12)
            .map((l) => `  criu: ${l}`)
        : []),
    ];
  }
  const stepAtCheckpoint = losses(dir).length;
  await cri.stopAndRemovePod(job.pod.podId);
  // The restored job appends to the same log: the checkpointed container's lines up to the checkpoint are kept.
  const kept = losses(dir).slice(0, stepAtCheckpoint);
  writeFileSync(join(dir, "loss.jsonl"), kept.length ? `${kept.join("\n")}\n` : "");
  const pod = await newPod("ddp-restored");
  const t1 = performance.now();
  const rid = await cri.restoreFromArchive(pod.podId, pod.config, archive, "ddp", job.spec);
  // KYBERNATE_E2E_CRIU_LOG=FILE: CRIU's restore log there (runc removes its own with the failed bundle).
  if (process.env.KYBERNATE_E2E_CRIU_LOG)
    appendFileSync(
      join(kyb.stateDir, "containers", rid, "criu.conf"),
      `log-file ${process.env.KYBERNATE_E2E_CRIU_LOG}\n`,
    );
  try {
    await cri.startContainer(rid);
  } catch (error) {
    // A refusal names its reason in kybernate's log (pre-restore); CRIU's own failure only in its restore log.
    const why = kyb.logs
      .filter((l) => l.containerId === rid && Number(l.level) >= 50)
      .map((l) => String(l.error ?? l.msg));
    await cri.stopAndRemovePod(pod.podId);
    return [
      `DDP (${opt.device}, 2 ranks): checkpoint at step ${stepAtCheckpoint} in ${checkpointMs} ms; restore into a new pod REFUSED: ${(error as Error).message}`,
      ...(why.length
        ? why.map((w) => `  kybernate: ${w}`)
        : ["  (no kybernate refusal: CRIU's own; KYBERNATE_E2E_CRIU_LOG=FILE keeps its restore log)"]),
    ];
  }
  const restoreMs = ms(t1);
  await until(
    "the restored job finishing",
    () => readJson<{ done: boolean }>(join(dir, "status.json")),
    (s) => s.done,
    900_000,
    rid,
  );
  const configured = kyb.logs.find((l) => l.id === rid && l.msg === "GPU container: CRIU hook configured");
  // The checkpointed container ran on after the checkpoint (leave-running) until it was stopped, so the log holds
  // its steps past the checkpoint and then the restored job's from the checkpoint on: every line must carry the
  // uninterrupted run's loss for its step, and every step must be there.
  const step = (line: string) => JSON.parse(line) as { step: number; loss: unknown };
  const want = new Map(losses(refDir).map((l) => [step(l).step, JSON.stringify(step(l).loss)]));
  const got = losses(dir).map(step);
  const resumedAt = got.findIndex((l, i) => i > 0 && l.step <= (got[i - 1]?.step ?? -1));
  const restoredFrom = resumedAt >= 0 ? got[resumedAt]?.step : undefined;
  const differing = got.filter((l) => want.get(l.step) !== JSON.stringify(l.loss));
  const missing = [...want.keys()].filter((k) => !got.some((l) => l.step === k));
  const equal = want.size === steps && differing.length === 0 && missing.length === 0;
  await cri.stopAndRemovePod(pod.podId);
  rmSync(archive, { force: true });
  return [
    "| job | steps | restored from step | checkpoint | restore + start (new pod) | restored connections | losses equal to the uninterrupted run |",
    "|---|---|---|---|---|---|---|",
    `| DDP, 2 ranks, gloo, ${opt.device} | ${steps} | ${restoredFrom ?? `? (${stepAtCheckpoint} logged when the checkpoint returned)`} | ${checkpointMs} ms | ${restoreMs} ms | ${configured?.tcp ?? "?"} (${configured?.tcpReason ?? ""}) | ${equal ? `yes, every step (${got.length} lines: the checkpointed job's own past the checkpoint too)` : `NO (${differing.length} lines differ, first at step ${differing[0]?.step}; ${missing.length} steps missing)`} |`,
  ];
}

const kyb = await startDaemon();
let lines: string[];
try {
  if (!hasPodNetwork())
    say(
      "the node has no pod network: pods share the host's network (connections then stay on the node's addresses)",
    );
  lines = scenario === "inference" ? await inference(kyb) : await ddp(kyb);
} catch (error) {
  for (const l of kyb.logs.filter((x) => Number(x.level) >= 40).slice(-10))
    say(`kybernate: ${JSON.stringify(l).slice(0, 600)}`);
  throw error;
} finally {
  await kyb.stop();
  cri.close();
}
const text = `${lines.join("\n")}\n`;
process.stdout.write(text);
if (opt.out) writeFileSync(opt.out, text);

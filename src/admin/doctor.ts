import { execFile } from "node:child_process";
import { existsSync } from "node:fs";
import { readFile } from "node:fs/promises";
import { connect } from "node:net";
import { promisify } from "node:util";
import { CGROUP_ROOT } from "../host/cgroup.js";
import { detectNetworkLock } from "../host/criu.js";
import { kernelConfigText } from "../host/kernel.js";
import { driverVersionFile, readDriverVersionFile } from "../host/nvidia.js";
import { describeExecError, NvidiaSmiProbe } from "../host/nvidia-smi.js";
import { checkContainerdConfig } from "./containerd-config.js";
import { atLeast, containerdVersion, parseVersion } from "./versions.js";

const run = promisify(execFile);

export type Status = "pass" | "fail" | "warn";

export interface CheckResult {
  name: string;
  status: Status;
  detail: string;
  /** What to do when the check did not pass. */
  fix?: string;
  /** A failed required check makes `kybernate doctor` exit non-zero; others only warn. */
  required: boolean;
}

export interface DoctorOptions {
  criu: string;
  runc: string;
  containerd: string;
  nriSocket: string;
  containerdConfig?: string;
  nvidiaSmi: string;
  libcuda: string;
  cudaCheckpoint: string;
  driverVersionFile: string;
  kernelConfig?: string;
  cgroupRoot: string;
}

export const defaultDoctorOptions: DoctorOptions = {
  criu: "criu",
  runc: "runc",
  containerd: "containerd",
  nriSocket: "/var/run/nri/nri.sock",
  nvidiaSmi: "nvidia-smi",
  libcuda: "libcuda.so.1",
  cudaCheckpoint: "cuda-checkpoint",
  driverVersionFile: driverVersionFile(),
  cgroupRoot: CGROUP_ROOT,
};

async function output(binary: string, args: string[], timeoutMs = 20_000): Promise<string> {
  const { stdout, stderr } = await run(binary, args, { timeout: timeoutMs });
  return `${stdout}${stderr}`;
}

const check = (name: string, ok: boolean, detail: string, fix: string, required = true): CheckResult => ({
  name,
  status: ok ? "pass" : required ? "fail" : "warn",
  detail,
  required,
  ...(ok ? {} : { fix }),
});

async function driverChecks(o: DoctorOptions): Promise<CheckResult[]> {
  const version = await readDriverVersionFile(o.driverVersionFile);
  const installFix =
    "install the NVIDIA driver 580 or later (570 is the minimum for the checkpoint API) and load its kernel module";
  if (!version)
    return [
      check("NVIDIA driver ≥ 570", false, `no driver version in ${o.driverVersionFile}`, installFix),
      check("device maps (driver ≥ 580)", false, "no NVIDIA driver", installFix, false),
    ];
  return [
    check("NVIDIA driver ≥ 570", atLeast(version, "570"), `driver ${version}`, installFix),
    check(
      "device maps (driver ≥ 580)",
      atLeast(version, "580"),
      `driver ${version}`,
      "upgrade the driver to 580+ to restore onto other GPUs of the same model (UUID device map)",
      false,
    ),
  ];
}

async function checkpointApi(o: DoctorOptions): Promise<CheckResult> {
  const name = "driver checkpoint API (libcuda) or cuda-checkpoint";
  const fix = `install driver ≥ 570 (its libcuda.so.1 exports cuCheckpointProcess*), or put NVIDIA's cuda-checkpoint on PATH (--cuda-checkpoint)`;
  let libError: string;
  try {
    const koffi = (await import("koffi")).default;
    const lib = koffi.load(o.libcuda);
    try {
      lib.func("int cuCheckpointProcessGetState(int pid, _Out_ int *state)");
      return check(name, true, `${o.libcuda} exports cuCheckpointProcessGetState`, fix);
    } catch {
      libError = `${o.libcuda} lacks cuCheckpointProcess* (driver older than 570)`;
    } finally {
      lib.unload();
    }
  } catch (error) {
    libError = `${o.libcuda} not loadable: ${(error as Error).message.split("\n")[0]}`;
  }
  try {
    const text = await output(o.cudaCheckpoint, ["--help"]);
    return check(name, /--action|--toggle/.test(text), `${o.cudaCheckpoint} present (${libError})`, fix);
  } catch (error) {
    return check(name, false, `${libError}; ${o.cudaCheckpoint}: ${describeExecError(error)}`, fix);
  }
}

async function persistence(o: DoctorOptions): Promise<CheckResult> {
  const name = "persistence mode";
  const fix = "run `nvidia-smi -pm 1` (or enable nvidia-persistenced): a restore needs it or a prior cuInit";
  const inventory = await new NvidiaSmiProbe(o.nvidiaSmi).inventory();
  if (inventory.gpus.length === 0)
    return check(name, false, inventory.error ?? "nvidia-smi lists no GPU", fix, false);
  const off = inventory.gpus.filter((g) => g.persistenceMode !== true);
  return check(
    name,
    off.length === 0,
    off.length
      ? `off on ${off.map((g) => `GPU ${g.index} (${g.name})`).join(", ")}`
      : `on for ${inventory.gpus.length} GPU(s): ${inventory.gpus.map((g) => g.name).join(", ")}`,
    fix,
    false,
  );
}

async function criuChecks(o: DoctorOptions): Promise<CheckResult[]> {
  const fix = "install CRIU 4.0 or later (Debian testing: criu 4.2) and put it on containerd's PATH (--criu)";
  let version: string | undefined;
  try {
    version = parseVersion(await output(o.criu, ["--version"]));
  } catch (error) {
    return [check("CRIU ≥ 4", false, `${o.criu}: ${describeExecError(error)}`, fix)];
  }
  const results = [check("CRIU ≥ 4", !!version && atLeast(version, "4.0"), `criu ${version ?? "?"}`, fix)];
  try {
    const text = await output(o.criu, ["check"], 60_000);
    const summary = /Looks good\./.test(text) ? "Looks good." : (text.trim().split("\n").pop() ?? "ok");
    results.push(check("criu check", true, summary, ""));
  } catch (error) {
    const e = error as { stdout?: string; stderr?: string };
    const last = `${e.stdout ?? ""}${e.stderr ?? ""}`.trim().split("\n").slice(-2).join(" / ");
    results.push(
      check(
        "criu check",
        false,
        last || describeExecError(error),
        "run `criu check` as root and fix what it reports (kernel options, running as root)",
      ),
    );
  }
  // What `kybernate run --criu-network-lock auto` will choose: pod connections are dumped under this lock.
  const lock = await detectNetworkLock(o.criu);
  results.push(
    check(
      "CRIU network lock",
      lock.method !== "skip",
      `${lock.method}: ${lock.reason}`,
      "build CRIU with libnftables (Debian's criu 4.2 is), or put iptables-restore on containerd's PATH",
      false,
    ),
  );
  return results;
}

async function runcCheck(o: DoctorOptions): Promise<CheckResult> {
  const fix =
    "install runc 1.1 or later (tried with 1.3.6): it passes the org.criu.config annotation to CRIU";
  try {
    const version = parseVersion(await output(o.runc, ["--version"]));
    return check("runc ≥ 1.1", !!version && atLeast(version, "1.1"), `runc ${version ?? "?"}`, fix);
  } catch (error) {
    return check("runc ≥ 1.1", false, `${o.runc}: ${describeExecError(error)}`, fix);
  }
}

function socketAnswers(path: string): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect(path);
    socket.once("connect", () => {
      socket.destroy();
      resolve(true);
    });
    socket.once("error", () => resolve(false));
  });
}

async function containerdChecks(o: DoctorOptions): Promise<CheckResult[]> {
  const fix =
    "install containerd 2.1–2.3 (CRI checkpoint and restore from an archive; 2.4 removed the restore)";
  let version: string | undefined;
  const results: CheckResult[] = [];
  try {
    version = await containerdVersion(o.containerd);
    const ok = !!version && atLeast(version, "2.1") && !atLeast(version, "2.4");
    results.push(check("containerd 2.1–2.3", ok, `containerd ${version ?? "?"}`, fix));
  } catch (error) {
    results.push(check("containerd 2.1–2.3", false, `${o.containerd}: ${describeExecError(error)}`, fix));
  }
  const answers = existsSync(o.nriSocket) && (await socketAnswers(o.nriSocket));
  results.push(
    check(
      "NRI socket",
      answers,
      answers ? `${o.nriSocket} accepts connections` : `${o.nriSocket} missing or not answering`,
      "enable NRI in containerd's config (see the containerd config check) and restart containerd; or point --nri-socket at it",
    ),
  );
  const configPath =
    o.containerdConfig ??
    (existsSync("/etc/containerd/config.toml") ? "/etc/containerd/config.toml" : undefined);
  if (configPath) {
    const text = await readFile(configPath, "utf8").catch(() => undefined);
    if (text === undefined)
      results.push(
        check("containerd config", false, `cannot read ${configPath}`, "give --containerd-config PATH"),
      );
    else
      for (const finding of checkContainerdConfig(text, version))
        results.push(
          check(
            `containerd config ${configPath}`,
            finding.ok,
            finding.what,
            finding.add ? `add to ${configPath} and restart containerd:\n${finding.add}` : "see the detail",
          ),
        );
  }
  return results;
}

async function kernelCheck(o: DoctorOptions): Promise<CheckResult> {
  const name = "kernel CONFIG_CHECKPOINT_RESTORE";
  const fix = "boot a kernel built with CONFIG_CHECKPOINT_RESTORE=y (every major distribution kernel has it)";
  const config = await kernelConfigText(o.kernelConfig);
  if (!config)
    return check(
      name,
      false,
      "no kernel config found (the kernel's own config.gz, nor /boot/config-$(uname -r))",
      `${fix}; or give --kernel-config PATH`,
    );
  const on = /^CONFIG_CHECKPOINT_RESTORE=y$/m.test(config.text);
  return check(name, on, `${on ? "=y" : "not set"} in ${config.source}`, fix);
}

async function freezerCheck(o: DoctorOptions): Promise<CheckResult> {
  const v1 = existsSync(`${o.cgroupRoot}/freezer`);
  const v2 =
    existsSync(`${o.cgroupRoot}/cgroup.controllers`) ||
    existsSync(`${o.cgroupRoot}/unified/cgroup.controllers`);
  return check(
    "cgroup freezer",
    v1 || v2,
    [v1 ? "v1 freezer hierarchy" : "", v2 ? "v2 (cgroup.freeze)" : ""].filter(Boolean).join(" + ") ||
      `neither ${o.cgroupRoot}/freezer nor cgroup v2`,
    "mount cgroup v2 (or the v1 freezer controller): containerd pauses a container with it before CRIU",
  );
}

async function rootCheck(): Promise<CheckResult> {
  const uid = process.getuid?.() ?? -1;
  return check(
    "running as root",
    uid === 0,
    `uid ${uid}`,
    "run kybernate as root: the driver's checkpoint calls and CRIU need it",
  );
}

/** Every check, in the order an operator fixes them. Never throws: a broken probe is a failed check. */
export async function runDoctor(options: Partial<DoctorOptions> = {}): Promise<CheckResult[]> {
  const o = { ...defaultDoctorOptions, ...options };
  const groups = await Promise.all([
    driverChecks(o),
    checkpointApi(o).then((r) => [r]),
    persistence(o).then((r) => [r]),
    kernelCheck(o).then((r) => [r]),
    freezerCheck(o).then((r) => [r]),
    criuChecks(o),
    runcCheck(o).then((r) => [r]),
    containerdChecks(o),
    rootCheck().then((r) => [r]),
  ]);
  return groups.flat();
}

export function formatReport(results: CheckResult[]): string {
  const lines: string[] = [];
  for (const r of results) {
    lines.push(`${r.status.toUpperCase().padEnd(4)}  ${r.name}: ${r.detail}`);
    if (r.fix)
      for (const [i, line] of r.fix.split("\n").entries()) lines.push(`      ${i ? "  " : "fix: "}${line}`);
  }
  const failed = results.filter((r) => r.status === "fail").length;
  const warned = results.filter((r) => r.status === "warn").length;
  lines.push(
    failed
      ? `${failed} required check(s) failed${warned ? `, ${warned} warning(s)` : ""}: kybernate cannot checkpoint GPU containers on this node until they are fixed`
      : `all required checks passed${warned ? ` (${warned} warning(s))` : ""}`,
  );
  return `${lines.join("\n")}\n`;
}

export const doctorFailed = (results: CheckResult[]): boolean => results.some((r) => r.status === "fail");

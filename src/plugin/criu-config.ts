import { mkdir, readdir, rm, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { containerIdProblem } from "../base/container-id.js";
import type { TcpMode } from "./tcp-choice.js";

export interface CriuConfigOptions {
  /** Directory holding one subdirectory per GPU container (config + action-script wrapper). */
  stateDir: string;
  /** The kybernate CRIU action hook (hooks/kybernate-criu-hook). */
  hookPath: string;
  /** Node binary that runs the hook (CRIU inherits containerd's PATH, which may not have node). */
  node: string;
  /** The daemon's unix socket the hook talks to. */
  daemonSocket: string;
  /** CRIU's network-lock method (detected at start by default); "" leaves CRIU's default (iptables). */
  networkLock: "" | "iptables" | "nftables" | "skip";
  /** CRIU's task-collection timeout, in seconds. */
  timeoutS: number;
  /** How long the hook waits for the daemon's answer (the GPU budget plus the daemon's margin). */
  hookTimeoutMs: number;
  /** kybernate runs with a page store: the hook asks the daemon at post-dump, and CRIU must never dedup. */
  pageStore?: boolean;
}

/** The file the action script touches at CRIU's post-dump when the daemon is not asked: the dump's end. */
export const POST_DUMP_STAMP = "post-dump";

export interface ContainerCriuFiles {
  dir: string;
  config: string;
  actionScript: string;
}

export function criuFilesFor(stateDir: string, containerId: string): ContainerCriuFiles {
  const problem = containerIdProblem(containerId);
  if (problem) throw new Error(`no CRIU files for this container: ${problem}`);
  const dir = join(stateDir, containerId);
  return { dir, config: join(dir, "criu.conf"), actionScript: join(dir, "action-script") };
}

/**
 * The CRIU configuration runc hands CRIU for this container (OCI annotation org.criu.config). CRIU runs the
 * action script at each stage; the wrapper names the container, so the hook needs no lookup on the hot path.
 */
export function renderCriuConfig(
  files: ContainerCriuFiles,
  options: CriuConfigOptions,
  tcp: TcpMode = "established",
): string {
  const lines = [
    "# written by kybernate for one container; removed with the container",
    `action-script ${files.actionScript}`,
    // The NVIDIA container toolkit's driver-info and driver-file mounts have master/slave sharing
    // that CRIU otherwise calls "unreachable sharing".
    "enable-external-masters",
    "external mnt[]",
    // CUDA programs keep unlinked files (POSIX semaphores in /dev/shm, JIT caches) open.
    "link-remap",
    `timeout ${Math.max(10, Math.ceil(options.timeoutS))}`,
    // Without one of these CRIU refuses a container holding an established TCP connection. Established:
    // dumped with their state (a leave-running checkpoint keeps them working); close: not dumped, restored
    // closed (the application reads end-of-stream on them).
    tcp === "close" ? "tcp-close" : "tcp-established",
  ];
  if (options.networkLock) lines.push(`network-lock ${options.networkLock}`);
  // Restored pages are hard links to the page store's copy: auto-dedup would punch holes into it. Last, so that
  // nothing before it (runc's RPC options) turns it on.
  if (options.pageStore) lines.push("no-auto-dedup");
  return `${lines.join("\n")}\n`;
}

export function renderActionScript(containerId: string, options: CriuConfigOptions): string {
  const dir = criuFilesFor(options.stateDir, containerId).dir;
  const store = options.pageStore ? ` KYBERNATE_PAGE_STORE='1'` : "";
  return [
    "#!/bin/sh",
    "# CRIU action script for one container: names it and hands over to the kybernate hook.",
    `KYBERNATE_CONTAINER_ID='${containerId}' KYBERNATE_SOCKET='${options.daemonSocket}' KYBERNATE_NODE='${options.node}' KYBERNATE_HOOK_TIMEOUT_MS='${Math.round(options.hookTimeoutMs)}' KYBERNATE_CONTAINER_DIR='${dir}'${store} exec '${options.hookPath}'`,
    "",
  ].join("\n");
}

export async function writeCriuFiles(
  containerId: string,
  options: CriuConfigOptions,
  tcp: TcpMode = "established",
): Promise<ContainerCriuFiles> {
  const files = criuFilesFor(options.stateDir, containerId);
  await mkdir(files.dir, { recursive: true, mode: 0o700 });
  await writeFile(files.config, renderCriuConfig(files, options, tcp), { mode: 0o600 });
  await writeFile(files.actionScript, renderActionScript(containerId, options), { mode: 0o700 });
  return files;
}

export async function removeCriuFiles(stateDir: string, containerId: string): Promise<void> {
  await rm(criuFilesFor(stateDir, containerId).dir, { recursive: true, force: true });
}

/** Containers with CRIU files under the state directory (one subdirectory each). */
export async function containersWithCriuFiles(stateDir: string): Promise<string[]> {
  const entries = await readdir(stateDir, { withFileTypes: true }).catch(() => []);
  return entries.filter((e) => e.isDirectory()).map((e) => e.name);
}

// What the node's CRIU can do, asked of CRIU itself.
import { execFile } from "node:child_process";
import { access, constants } from "node:fs/promises";
import { delimiter, join } from "node:path";
import { promisify } from "node:util";

export type NetworkLockMethod = "nftables" | "iptables" | "skip";

export interface NetworkLockChoice {
  method: NetworkLockMethod;
  /** Why this one, for the log and `kybernate doctor`. */
  reason: string;
}

const run = promisify(execFile);

/**
 * The network lock CRIU can use here: nftables when CRIU was built with libnftables and the kernel has set
 * concatenations (`criu check --feature network_lock_nftables`), else iptables when iptables-restore is on the
 * PATH (CRIU execs iptables-restore and iptables), else none ("skip": a dump then runs without the lock).
 * CRIU runs with containerd's PATH: give kybernate the same one.
 */
export async function detectNetworkLock(
  criu: string,
  path: string = process.env.PATH ?? "",
): Promise<NetworkLockChoice> {
  let nftables: string;
  try {
    const { stdout, stderr } = await run(criu, ["check", "--feature", "network_lock_nftables"], {
      timeout: 15_000,
    });
    if (/is supported/.test(`${stdout}${stderr}`))
      return { method: "nftables", reason: `${criu} check --feature network_lock_nftables: supported` };
    nftables = "not supported";
  } catch (error) {
    const e = error as Error & { stderr?: string; code?: string | number };
    nftables = e.code === "ENOENT" ? `${criu} not found` : (e.stderr?.trim().split("\n").pop() ?? e.message);
  }
  const iptables = await onPath("iptables-restore", path);
  if (iptables && (await onPath("iptables", path)))
    return { method: "iptables", reason: `nftables lock unavailable (${nftables}); ${iptables} found` };
  return {
    method: "skip",
    reason: `no network lock: nftables unavailable (${nftables}) and no iptables-restore on PATH`,
  };
}

async function onPath(binary: string, path: string): Promise<string | undefined> {
  for (const dir of path.split(delimiter).filter(Boolean)) {
    const candidate = join(dir, binary);
    if (
      await access(candidate, constants.X_OK).then(
        () => true,
        () => false,
      )
    )
      return candidate;
  }
  return undefined;
}

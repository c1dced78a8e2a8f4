// The TCP sockets of a process's network namespace, from /proc/PID/net/tcp and tcp6: which local addresses its
// connections and listeners use, so a restore can tell whether another pod still has them.
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { PROC_ROOT } from "./proc.js";

export interface TcpAddresses {
  /** Local addresses of ESTABLISHED connections (unique, as text). */
  established: string[];
  /** Local addresses listeners are bound to (0.0.0.0 and :: included). */
  listening: string[];
}

const ESTABLISHED = "01";
const LISTEN = "0A";

/** Undefined when the process is gone or its namespace cannot be read. */
export async function tcpAddressesOf(pid: number, procRoot = PROC_ROOT): Promise<TcpAddresses | undefined> {
  const established = new Set<string>();
  const listening = new Set<string>();
  let read = false;
  for (const file of ["tcp", "tcp6"]) {
    const text = await readFile(join(procRoot, String(pid), "net", file), "utf8").catch(() => undefined);
    if (text === undefined) continue;
    read = true;
    for (const line of text.split("\n").slice(1)) {
      const fields = line.trim().split(/\s+/);
      const [local, state] = [fields[1], fields[3]];
      if (!local || !state) continue;
      const address = hexAddress(local.slice(0, local.lastIndexOf(":")));
      if (!address) continue;
      if (state === ESTABLISHED) established.add(address);
      else if (state === LISTEN) listening.add(address);
    }
  }
  return read ? { established: [...established].sort(), listening: [...listening].sort() } : undefined;
}

/** The kernel prints addresses as 32-bit words in host (little-endian) byte order. */
export function hexAddress(hex: string): string | undefined {
  if (!/^[0-9A-Fa-f]+$/.test(hex) || (hex.length !== 8 && hex.length !== 32)) return undefined;
  const bytes: number[] = [];
  for (let w = 0; w < hex.length; w += 8) {
    const word = hex.slice(w, w + 8);
    for (let b = 6; b >= 0; b -= 2) bytes.push(Number.parseInt(word.slice(b, b + 2), 16));
  }
  if (bytes.length === 4) return bytes.join(".");
  // An IPv4-mapped IPv6 address is the IPv4 address to whoever compares it with a pod's IPs.
  if (bytes.slice(0, 10).every((b) => b === 0) && bytes[10] === 0xff && bytes[11] === 0xff)
    return bytes.slice(12).join(".");
  const groups: string[] = [];
  for (let i = 0; i < 16; i += 2) groups.push((((bytes[i] ?? 0) << 8) | (bytes[i + 1] ?? 0)).toString(16));
  return compressIpv6(groups);
}

function compressIpv6(groups: string[]): string {
  let best = { at: -1, len: 0 };
  for (let i = 0; i < groups.length; ) {
    if (groups[i] !== "0") {
      i++;
      continue;
    }
    let j = i;
    while (j < groups.length && groups[j] === "0") j++;
    if (j - i > best.len && j - i > 1) best = { at: i, len: j - i };
    i = j;
  }
  if (best.at < 0) return groups.join(":");
  return `${groups.slice(0, best.at).join(":")}::${groups.slice(best.at + best.len).join(":")}`;
}

/** Loopback addresses exist in every network namespace: a connection on them survives a move to another pod. */
export function isLoopback(address: string): boolean {
  return address.startsWith("127.") || address === "::1";
}

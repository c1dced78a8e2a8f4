import { execFile } from "node:child_process";
import { promisify } from "node:util";

/** The first dotted version number in a tool's output ("runc version 1.3.6", "Version: 4.2.1"). */
export function parseVersion(text: string): string | undefined {
  return /\b(\d+\.\d+(?:\.\d+)?)\b/.exec(text)?.[1];
}

/** Compares dotted versions numerically: <0, 0, >0. */
export function compareVersions(a: string, b: string): number {
  const pa = a.split(".").map((n) => Number.parseInt(n, 10) || 0);
  const pb = b.split(".").map((n) => Number.parseInt(n, 10) || 0);
  for (let i = 0; i < Math.max(pa.length, pb.length); i++) {
    const d = (pa[i] ?? 0) - (pb[i] ?? 0);
    if (d !== 0) return d;
  }
  return 0;
}

export const atLeast = (version: string, minimum: string): boolean => compareVersions(version, minimum) >= 0;

/** containerd's version from `containerd --version` ("containerd github.com/containerd/containerd/v2 v2.1.9 …"). */
export function parseContainerdVersion(text: string): string | undefined {
  return /\s(?:v)?(\d+\.\d+\.\d+)/.exec(text)?.[1];
}

/** Runs `BINARY --version` and reads containerd's version from it; throws when the binary cannot run. */
export async function containerdVersion(binary: string): Promise<string | undefined> {
  const { stdout, stderr } = await promisify(execFile)(binary, ["--version"], { timeout: 10_000 });
  return parseContainerdVersion(`${stdout}${stderr}`);
}

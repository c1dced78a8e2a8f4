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

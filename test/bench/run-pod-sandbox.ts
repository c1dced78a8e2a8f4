/**
 * What a registered kybernate costs a pod's lifecycle on the test node: CRI RunPodSandbox, StopPodSandbox and
 * RemovePodSandbox latency for host-network pods, without kybernate and with `kybernate run` registered. Each
 * `--kybernate` names a build (LABEL=DIST, DIST being a checkout's dist/), so an old build can be measured
 * against this one in the same run; cases are interleaved round by round, so drift on a shared machine hits
 * every case alike. Prints figures; not a test. Needs the test node (root), like the integration tests.
 *   node dist/test/bench/run-pod-sandbox.js [--pods 100] [--rounds 3] [--warmup 5]
 *        [--kybernate LABEL=DIST]...   (default: --kybernate this=<this checkout's dist>)
 */
import { randomBytes } from "node:crypto";
import { existsSync, rmSync } from "node:fs";
import { join, resolve } from "node:path";
import { performance } from "node:perf_hooks";
import { parseArgs } from "node:util";
import { packageRoot } from "../../src/base/paths.js";
import { type KybernateProcess, startKybernate } from "../support/kybernate-process.js";
import { TestCriClient } from "../support/test-cri-client.js";
import { loadTestNode } from "../support/testnode.js";

const { values } = parseArgs({
  options: {
    pods: { type: "string", default: "100" },
    rounds: { type: "string", default: "3" },
    warmup: { type: "string", default: "5" },
    kybernate: { type: "string", multiple: true },
  },
});
const podsPerRound = Number(values.pods);
const rounds = Number(values.rounds);
const warmup = Number(values.warmup);

interface Build {
  label: string;
  main: string;
}

const builds: Build[] = (values.kybernate ?? [`this=${join(packageRoot, "dist")}`]).map((spec) => {
  const at = spec.indexOf("=");
  const label = at > 0 ? spec.slice(0, at) : spec;
  const main = join(resolve(at > 0 ? spec.slice(at + 1) : spec), "src", "cli", "main.js");
  if (!existsSync(main))
    throw new Error(`--kybernate ${spec}: no ${main}; run npm run build in that checkout`);
  return { label, main };
});

const CALLS = ["RunPodSandbox", "StopPodSandbox", "RemovePodSandbox"] as const;
type Call = (typeof CALLS)[number];
type Samples = Record<Call, number[]>;

const node = loadTestNode();
const cri = new TestCriClient(node.criSocket);
const cases = ["no kybernate", ...builds.map((b) => `kybernate ${b.label}`)];
const emptySamples = (): Samples => ({ RunPodSandbox: [], StopPodSandbox: [], RemovePodSandbox: [] });
/** Per round, per case: so the spread between rounds shows how much of a difference is noise. */
const perRound: Map<string, Samples>[] = [];
const suffix = randomBytes(3).toString("hex");
let serial = 0;

/** One pod through its whole CRI lifecycle, each call timed on its own (kubelet's order). */
async function podLifecycle(into?: Samples): Promise<void> {
  const name = `bench-pod-${suffix}-${serial++}`;
  let start = performance.now();
  const { podId } = await cri.runHostNetworkPod(name, "kybernate-bench");
  const run = performance.now() - start;
  start = performance.now();
  await cri.stopPodSandbox(podId);
  const stop = performance.now() - start;
  start = performance.now();
  await cri.removePodSandbox(podId);
  const remove = performance.now() - start;
  into?.RunPodSandbox.push(run);
  into?.StopPodSandbox.push(stop);
  into?.RemovePodSandbox.push(remove);
}

async function measure(into: Samples, build: Build | undefined): Promise<void> {
  let kyb: KybernateProcess | undefined;
  try {
    if (build)
      kyb = await startKybernate({ nriSocket: node.nriSocket, command: [process.execPath, build.main] });
    for (let i = 0; i < warmup; i++) await podLifecycle();
    for (let i = 0; i < podsPerRound; i++) await podLifecycle(into);
  } finally {
    await kyb?.stop();
    if (kyb) rmSync(kyb.stateDir, { recursive: true, force: true });
  }
}

function stats(values: number[]): { n: number; p50: number; p90: number; p99: number; mean: number } {
  const sorted = [...values].sort((a, b) => a - b);
  const at = (q: number): number =>
    sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))] ?? Number.NaN;
  return {
    n: sorted.length,
    p50: at(0.5),
    p90: at(0.9),
    p99: at(0.99),
    mean: sorted.reduce((a, b) => a + b, 0) / sorted.length,
  };
}

try {
  await cri.pullImage(node.image);
  for (let round = 0; round < rounds; round++) {
    const thisRound = new Map(cases.map((c) => [c, emptySamples()]));
    perRound.push(thisRound);
    // Rotated each round: no case always runs first, right after a kybernate start or stop.
    const order = cases.map((_, i) => cases[(i + round) % cases.length] as string);
    for (const caseName of order) {
      const build = builds.find((b) => `kybernate ${b.label}` === caseName);
      const started = performance.now();
      await measure(thisRound.get(caseName) ?? emptySamples(), build);
      console.error(
        `round ${round + 1}/${rounds}: ${caseName} (${((performance.now() - started) / 1000).toFixed(1)} s)`,
      );
    }
  }
} finally {
  cri.close();
}

const all = (caseName: string, call: Call, rounds = perRound): number[] =>
  rounds.flatMap((r) => r.get(caseName)?.[call] ?? []);
const ms = (v: number): string => v.toFixed(1);

const rows = [
  `All rounds (${rounds} × ${podsPerRound} pods per case):`,
  "",
  "| call | case | n | p50 ms | p90 ms | p99 ms | mean ms | p50 ÷ none | mean ÷ none |",
  "|---|---|---|---|---|---|---|---|---|",
];
for (const call of CALLS) {
  const none = stats(all("no kybernate", call));
  for (const caseName of cases) {
    const s = stats(all(caseName, call));
    const ratio = (a: number, b: number): string => (caseName === "no kybernate" ? "–" : (a / b).toFixed(3));
    rows.push(
      `| ${call} | ${caseName} | ${s.n} | ${ms(s.p50)} | ${ms(s.p90)} | ${ms(s.p99)} | ${ms(s.mean)} | ${ratio(s.p50, none.p50)} | ${ratio(s.mean, none.mean)} |`,
    );
  }
}
rows.push(
  "",
  "Per round, p50 / mean in ms:",
  "",
  `| call | case | ${perRound.map((_, i) => `round ${i + 1}`).join(" | ")} |`,
);
rows.push(`|---|---|${perRound.map(() => "---|").join("")}`);
for (const call of CALLS) {
  for (const caseName of cases) {
    const cells = perRound.map((r) => {
      const s = stats(r.get(caseName)?.[call] ?? []);
      return `${ms(s.p50)} / ${ms(s.mean)}`;
    });
    rows.push(`| ${call} | ${caseName} | ${cells.join(" | ")} |`);
  }
}
console.log(rows.join("\n"));

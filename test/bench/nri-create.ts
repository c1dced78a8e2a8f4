// What the NRI plugin costs a container's creation. Prints figures; not a test.
// (a) kybernate's CreateContainer handling: through a fake runtime over a real unix socket (what containerd
//     waits for, under its global NRI lock) and the bare handler, for a selected and an unselected container.
// (b) CRI CreateContainer latency on the test node with and without the plugin connected.
// Usage: node dist/test/bench/nri-create.js [requests=2000] [containersPerCase=100]   (b needs the test node)
import { randomBytes } from "node:crypto";
import { performance } from "node:perf_hooks";
import { pino } from "pino";
import { NriStub } from "../../src/nri/stub.js";
import { FakeRuntime } from "../nri/fake-nri-runtime.js";
import { callContext, container, kybernateFor, pod } from "../nri/fixtures.js";
import { TestCriClient } from "../support/test-cri-client.js";
import { loadTestNode } from "../support/testnode.js";

const requests = Number(process.argv[2] ?? 2000);
const perCase = Number(process.argv[3] ?? 100);
const SELECT_KEY = "kybernate.io/bench";
// Logging as `kybernate run` does (pino, synchronous), into /dev/null.
const log = pino({ level: "info" }, pino.destination({ dest: "/dev/null", sync: true }));

interface Stats {
  n: number;
  p50: number;
  p99: number;
  mean: number;
}

function stats(samples: number[]): Stats {
  const sorted = [...samples].sort((a, b) => a - b);
  const at = (q: number): number =>
    sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))] ?? Number.NaN;
  return {
    n: sorted.length,
    p50: at(0.5),
    p99: at(0.99),
    mean: sorted.reduce((a, b) => a + b, 0) / sorted.length,
  };
}

const rows: string[] = [];
function row(what: string, unit: "µs" | "ms", s: Stats, note = ""): void {
  const f = (v: number): string => v.toFixed(unit === "µs" ? 1 : 2);
  rows.push(
    `| ${what} | ${s.n} | ${f(s.p50)} ${unit} | ${f(s.p99)} ${unit} | ${f(s.mean)} ${unit} | ${note} |`,
  );
}

async function handlerBench(): Promise<void> {
  const plugin = kybernateFor(`${SELECT_KEY}=yes`, log);
  const runtime = await FakeRuntime.start();
  const stub = new NriStub(plugin.handlers, {
    socketPath: runtime.socketPath,
    pluginName: "kybernate",
    pluginIndex: "10",
    log,
  });
  try {
    await stub.start();
    const conn = await runtime.nextConnection();
    await conn.handshake;
    const warmup = Math.min(200, Math.floor(requests / 10));
    for (const selected of [false, true]) {
      const p = pod("bench", { labels: selected ? { [SELECT_KEY]: "yes" } : {} });
      const wire: number[] = [];
      const bare: number[] = [];
      for (let i = 0; i < warmup + requests; i++) {
        const c = container(`${selected ? "s" : "u"}${i}-${randomBytes(4).toString("hex")}`, p.id, {
          env: ["PATH=/usr/bin:/bin", "HOME=/root"],
          mounts: [
            { destination: "/etc/hosts", type: "bind", source: "/var/lib/x/hosts", options: ["rbind", "ro"] },
          ],
        });
        let start = performance.now();
        const response = await conn.createContainer(p, c);
        const wireUs = (performance.now() - start) * 1000;
        if (selected !== Boolean(response.adjust))
          throw new Error(`container ${c.id}: unexpected adjustment ${JSON.stringify(response.adjust)}`);
        const ctx = callContext();
        start = performance.now();
        await plugin.handlers.createContainer?.(p, { ...c, id: `${c.id}-bare` }, ctx);
        const bareUs = (performance.now() - start) * 1000;
        if (i >= warmup) {
          wire.push(wireUs);
          bare.push(bareUs);
        }
      }
      const kind = selected ? "selected" : "not selected";
      row(
        `CreateContainer over NRI socket (fake runtime), ${kind}`,
        "µs",
        stats(wire),
        "mux + ttrpc + protobuf both ways",
      );
      row(
        `handler alone, ${kind}`,
        "µs",
        stats(bare),
        selected ? "writes the CRIU config + action script" : "selector + GPU check",
      );
    }
  } finally {
    await stub.stop();
    await runtime.close();
    plugin.cleanup();
  }
}

async function criBench(): Promise<void> {
  const node = loadTestNode();
  const cri = new TestCriClient(node.criSocket);
  const suffix = randomBytes(3).toString("hex");
  const plugin = kybernateFor(`${SELECT_KEY}=${suffix}`, log);
  await cri.pullImage(node.image);
  const pod = await cri.runHostNetworkPod(`nri-bench-${suffix}`, "kybernate-bench");
  const samples = {
    none: [] as number[],
    noop: [] as number[],
    unselected: [] as number[],
    selected: [] as number[],
  };
  let stub: NriStub | undefined;
  const createOnce = async (labels: Record<string, string>, name: string): Promise<number> => {
    const start = performance.now();
    const id = await cri.createContainer(pod.podId, pod.config, {
      name,
      image: node.image,
      command: ["sleep", "1"],
      labels,
    });
    const ms = performance.now() - start;
    await cri.removeContainer(id);
    return ms;
  };
  try {
    for (let i = 0; i < 5; i++) await createOnce({}, `warmup-${i}`);
    // Interleaved rounds, so drift on a shared 2-core machine hits every case alike.
    const rounds = 4;
    const perRound = Math.ceil(perCase / rounds);
    for (let round = 0; round < rounds; round++) {
      for (let i = 0; i < perRound; i++) samples.none.push(await createOnce({}, `none-${round}-${i}`));
      // A plugin that adjusts nothing, at once: what containerd's NRI costs by itself.
      stub = new NriStub(
        { createContainer: () => undefined },
        { socketPath: node.nriSocket, pluginName: "noop", pluginIndex: "10", log },
      );
      await stub.start();
      for (let i = 0; i < perRound; i++) samples.noop.push(await createOnce({}, `noop-${round}-${i}`));
      await stub.stop();
      stub = new NriStub(plugin.handlers, {
        socketPath: node.nriSocket,
        pluginName: "kybernate",
        pluginIndex: "10",
        log,
      });
      await stub.start();
      for (let i = 0; i < perRound; i++) {
        samples.unselected.push(await createOnce({ [SELECT_KEY]: "other" }, `unsel-${round}-${i}`));
        samples.selected.push(await createOnce({ [SELECT_KEY]: suffix }, `sel-${round}-${i}`));
      }
      await stub.stop();
      stub = undefined;
    }
  } finally {
    await stub?.stop();
    await cri
      .stopAndRemovePod(pod.podId)
      .catch((e: Error) => console.error(`cleanup of pod ${pod.podId}: ${e.message}`));
    cri.close();
    plugin.cleanup();
  }
  const none = stats(samples.none);
  for (const [what, s] of [
    ["CRI CreateContainer, no plugin", none],
    ["CRI CreateContainer, no-op NRI plugin connected", stats(samples.noop)],
    ["CRI CreateContainer, plugin connected, not selected", stats(samples.unselected)],
    ["CRI CreateContainer, plugin connected, selected", stats(samples.selected)],
  ] as const) {
    const ratio =
      s === none
        ? "baseline"
        : `ratio p50 ${(s.p50 / none.p50).toFixed(3)}, mean ${(s.mean / none.mean).toFixed(3)}`;
    row(what, "ms", s, ratio);
  }
}

rows.push("| measurement | n | p50 | p99 | mean | note |", "|---|---|---|---|---|---|");
await handlerBench();
try {
  await criBench();
} catch (error) {
  rows.push(`| CRI CreateContainer | – | – | – | – | skipped: ${(error as Error).message} |`);
}
console.log(rows.join("\n"));

// Round-trip latency of a small unary ttrpc call over the NRI multiplexer on a real unix socket.
// Prints figures; not a test. Usage: node dist/test/bench/wire-roundtrip.js [requests=5000] [payloadBytes=64]
import { mkdtempSync, rmSync } from "node:fs";
import { connect, createServer, type Socket } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Multiplexer } from "../../src/wire/mux/multiplexer.js";
import { TtrpcClient } from "../../src/wire/ttrpc/client.js";
import { TtrpcServer } from "../../src/wire/ttrpc/server.js";

const requests = Number(process.argv[2] ?? 5000);
const payloadBytes = Number(process.argv[3] ?? 64);
const warmup = Math.min(500, Math.floor(requests / 10));

const dir = mkdtempSync(join(tmpdir(), "kybernate-bench-"));
const path = join(dir, "nri.sock");
const listener = createServer();
await new Promise<void>((resolve) => listener.listen(path, resolve));
const accepted = new Promise<Socket>((resolve) => listener.once("connection", resolve));
const pluginSocket = connect(path);
const runtimeSocket = await accepted;

// Plugin side serves conn 1, as the NRI stub will; the "runtime" calls it.
const pluginMux = new Multiplexer(pluginSocket);
new TtrpcServer().register("bench.Plugin", { Echo: (payload) => payload }).serve(pluginMux.open(1));
const runtimeMux = new Multiplexer(runtimeSocket);
const client = new TtrpcClient(runtimeMux.open(1));

const payload = new Uint8Array(payloadBytes).fill(7);
const samples: number[] = [];
for (let i = 0; i < warmup + requests; i++) {
  const start = process.hrtime.bigint();
  await client.call("bench.Plugin", "Echo", payload, { timeoutMs: 2000 });
  const micros = Number(process.hrtime.bigint() - start) / 1000;
  if (i >= warmup) samples.push(micros);
}
samples.sort((a, b) => a - b);
const pick = (q: number): number =>
  samples[Math.min(samples.length - 1, Math.floor(q * samples.length))] ?? Number.NaN;
const mean = samples.reduce((a, b) => a + b, 0) / samples.length;
console.log(
  `wire round trip (mux over unix socket, ${payloadBytes}-byte payload, ${requests} sequential requests after ${warmup} warm-up): ` +
    `p50 ${pick(0.5).toFixed(1)} µs, p99 ${pick(0.99).toFixed(1)} µs, mean ${mean.toFixed(1)} µs, max ${(samples.at(-1) ?? 0).toFixed(1)} µs`,
);

pluginMux.close();
runtimeMux.close();
listener.close();
rmSync(dir, { recursive: true, force: true });

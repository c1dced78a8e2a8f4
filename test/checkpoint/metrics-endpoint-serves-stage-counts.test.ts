import assert from "node:assert/strict";
import type { AddressInfo } from "node:net";
import { test } from "node:test";
import { KybernateMetrics, type StageMetrics, startMetricsServer } from "../../src/checkpoint/metrics.js";
import type { OperationRecord } from "../../src/gpu/engine.js";

const record = (
  op: OperationRecord["op"],
  phasesMs: OperationRecord["phasesMs"],
  vramBytes: number,
): OperationRecord => ({
  op,
  backend: "test",
  pids: [1],
  ok: true,
  startedAt: new Date(0).toISOString(),
  totalMs: 10,
  phasesMs,
  vramBytes,
  processes: [],
  failures: [],
});

test("/metrics shows checkpoints and restores by result, phase histograms, VRAM moved and repairs", async () => {
  const metrics = new KybernateMetrics({ processMetrics: false });
  const ops: StageMetrics = metrics;
  ops.phase("thaw_cgroup", 2);
  ops.record(record("checkpoint", { lock: 15, checkpoint: 1500 }, 2 ** 31));
  ops.result("checkpoint", "success");
  ops.result("checkpoint", "refused");
  ops.record(record("restore", { restore: 800, unlock: 17 }, 2 ** 31));
  ops.result("restore", "success");
  ops.repaired("recovery", 2);
  const server = await startMetricsServer(metrics, 0, "127.0.0.1");
  try {
    const { port } = server.address() as AddressInfo;
    const response = await fetch(`http://127.0.0.1:${port}/metrics`);
    assert.equal(response.status, 200);
    const text = await response.text();
    for (const line of [
      'kybernate_checkpoints_total{result="success"} 1',
      'kybernate_checkpoints_total{result="refused"} 1',
      'kybernate_checkpoints_total{result="failure"} 0',
      'kybernate_restores_total{result="success"} 1',
      'kybernate_phase_duration_seconds_count{phase="checkpoint"} 1',
      'kybernate_phase_duration_seconds_bucket{le="2.5",phase="checkpoint"} 1',
      'kybernate_phase_duration_seconds_bucket{le="1",phase="checkpoint"} 0',
      'kybernate_phase_duration_seconds_count{phase="thaw_cgroup"} 1',
      `kybernate_vram_bytes_moved_total{direction="to_host"} ${2 ** 31}`,
      `kybernate_vram_bytes_moved_total{direction="to_gpu"} ${2 ** 31}`,
      'kybernate_processes_repaired_total{reason="recovery"} 2',
    ])
      assert.ok(text.includes(line), `missing: ${line}`);
    assert.equal((await fetch(`http://127.0.0.1:${port}/healthz`)).status, 200);
    assert.equal((await fetch(`http://127.0.0.1:${port}/other`)).status, 404);
  } finally {
    server.close();
  }
});

test("a busy port is refused with the option to change", async () => {
  const metrics = new KybernateMetrics({ processMetrics: false });
  const first = await startMetricsServer(metrics, 0, "127.0.0.1");
  try {
    const { port } = first.address() as AddressInfo;
    await assert.rejects(startMetricsServer(metrics, port, "127.0.0.1"), /EADDRINUSE.*--metrics-port/);
  } finally {
    first.close();
  }
});

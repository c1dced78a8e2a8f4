/** The phase breakdown and the page store on /metrics: one histogram series per phase, counters per result. */
import assert from "node:assert/strict";
import { test } from "node:test";
import { KybernateMetrics } from "../../src/checkpoint/metrics.js";

test("each checkpoint's phases land in kybernate_checkpoint_phase_seconds; page store operations are counted", async () => {
  const metrics = new KybernateMetrics({ processMetrics: false });
  metrics.checkpointPhases({
    gpuFreeze: 8400,
    criuDump: 9500,
    pageStore: 8100,
    untilResume: 1200,
    total: 27_300,
  });
  metrics.pageStore("stored", 17 * 2 ** 30);
  metrics.pageStore("refused");
  const text = await metrics.text();
  for (const line of [
    'kybernate_checkpoint_phase_seconds_count{phase="gpu_freeze"} 1',
    'kybernate_checkpoint_phase_seconds_sum{phase="criu_dump"} 9.5',
    'kybernate_checkpoint_phase_seconds_bucket{le="10",phase="page_store"} 1',
    'kybernate_checkpoint_phase_seconds_count{phase="until_resume"} 1',
    'kybernate_checkpoint_phase_seconds_sum{phase="total"} 27.3',
    'kybernate_page_store_operations_total{result="stored"} 1',
    'kybernate_page_store_operations_total{result="refused"} 1',
    'kybernate_page_store_operations_total{result="linked"} 0',
    `kybernate_page_store_bytes_total{result="stored"} ${17 * 2 ** 30}`,
  ])
    assert.ok(text.includes(line), `missing: ${line}`);
});

/**
 * Pre-restore of a thin archive over fakes, through the coordinator: the pages its manifest names are linked from
 * this node's store into the restore's image directory and held until post-resume; a node without those pages, a
 * node without a store, or a CRIU config that would let CRIU punch holes into them refuses, naming the checkpoint
 * and the node, before any process exists. A self-contained archive passes untouched.
 */
import assert from "node:assert/strict";
import { mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, test } from "node:test";
import { silentLogger } from "../../src/base/log.js";
import { Coordinator } from "../../src/daemon/coordinator.js";
import { PageStoreKeeper } from "../../src/daemon/page-store-keeper.js";
import { RateBook } from "../../src/daemon/rates.js";
import { ProcessState } from "../../src/gpu/types.js";
import { PAGES_MANIFEST } from "../../src/store/manifest.js";
import { newCheckpointId, PageStore } from "../../src/store/page-store.js";
import { hookRequest, type Rig, rig } from "./fakes.js";

let r: Rig;
let scratch: string;
afterEach(() => {
  r?.cleanup();
  rmSync(scratch, { recursive: true, force: true });
});

/**
 * A checkpoint stashed on node-a, and the restore's image directory containerd unpacked from its thin archive.
 * `store`: what the restoring daemon runs with.
 */
async function restoring(o: { store?: "same" | "empty" | "none"; dedup?: string } = {}) {
  r = await rig();
  scratch = mkdtempSync(join(tmpdir(), "kyb-pre-restore-"));
  const dump = join(scratch, "dump");
  mkdirSync(dump);
  writeFileSync(join(dump, "pages-1.img"), Buffer.alloc(8192, 3));
  writeFileSync(join(dump, "pagemap-1.img"), "pagemap");
  const origin = await PageStore.open(join(scratch, "store"));
  const checkpointId = newCheckpointId("c0ffee");
  await origin.stash({ imageDir: dump, checkpointId, containerId: "c0ffee", node: "node-a" });
  const restoreDir = join(scratch, "ctrd-restore", "checkpoint");
  mkdirSync(restoreDir, { recursive: true });
  for (const f of readdirSync(dump)) writeFileSync(join(restoreDir, f), "x");
  writeFileSync(join(restoreDir, PAGES_MANIFEST), JSON.stringify(await origin.record(checkpointId)));
  rmSync(join(restoreDir, "pagemap-1.img"));
  writeFileSync(join(restoreDir, "pagemap-1.img"), "pagemap");
  const criuConfig = join(scratch, "criu.conf");
  writeFileSync(criuConfig, o.dedup ?? "action-script /x\nno-auto-dedup\n");
  const store =
    o.store === "none"
      ? undefined
      : o.store === "empty"
        ? await PageStore.open(join(scratch, "other"))
        : origin;
  r.ctx.checkpoint = {
    node: o.store === "same" || o.store === undefined ? "node-a" : "node-b",
    ...(store
      ? {
          pages: new PageStoreKeeper(store, {
            keep: 2,
            archiveDirs: [],
            log: silentLogger,
            collectEveryMs: 0,
          }),
        }
      : {}),
    disk: { enabled: false, containerdRoot: scratch },
    deadlineHintMs: 120_000,
    rates: new RateBook(),
    criuConfigOf: () => criuConfig,
  };
  const coordinator = new Coordinator(r.ctx);
  const preRestore = () => coordinator.handle(hookRequest("pre-restore", 0, { imageDir: restoreDir }));
  return { checkpointId, restoreDir, origin, coordinator, preRestore };
}

test("same node: the pages are linked in and held until post-resume", async () => {
  const x = await restoring();
  const reply = await x.preRestore();
  assert.equal(reply.ok, true, reply.error);
  assert.deepEqual(readdirSync(x.restoreDir).sort(), [PAGES_MANIFEST, "pagemap-1.img", "pages-1.img"]);
  assert.deepEqual(
    (await x.origin.inUse()).map((u) => u.checkpointId),
    [x.checkpointId],
  );
  // CRIU restored the tasks: their CUDA process sits CHECKPOINTED until post-resume brings it back.
  const c = r.host.addContainer(500, [501]);
  r.driver.states.set(501, ProcessState.CHECKPOINTED);
  assert.equal((await x.coordinator.handle(hookRequest("post-resume", c.initPid))).ok, true);
  assert.deepEqual(await x.origin.inUse(), [], "released once CRIU has read them");
});

const refusals: Array<{
  name: string;
  options: Parameters<typeof restoring>[0];
  error: (id: string) => RegExp;
}> = [
  {
    name: "a node whose store lacks the pages",
    options: { store: "empty" },
    error: (id) =>
      new RegExp(
        `checkpoint ${id} keeps its page images in the page store of node node-a, and the page store .* of this node \\(node-b\\) does not have them: restore it on node node-a, or make it self-contained there with \`kybernate archive inline\`; nothing was restored`,
      ),
  },
  {
    name: "a node without a page store",
    options: { store: "none" },
    error: (id) =>
      new RegExp(
        `checkpoint ${id} keeps its page images in the page store of node node-a, and kybernate on this node \\(node-b\\) runs without --page-store: restore it on node node-a.*; nothing was restored`,
      ),
  },
  {
    name: "a CRIU config that turns auto-dedup on last",
    options: { dedup: "no-auto-dedup\nauto-dedup\n" },
    error: (id) => new RegExp(`refusing to link checkpoint ${id}'s pages: .*auto-dedup would punch holes`),
  },
];

for (const c of refusals) {
  test(`refused before any process exists, nothing linked: ${c.name}`, async () => {
    const x = await restoring(c.options);
    const before = readdirSync(x.restoreDir).sort();
    const reply = await x.preRestore();
    assert.equal(reply.ok, false);
    assert.match(reply.error ?? "", c.error(x.checkpointId));
    assert.deepEqual(readdirSync(x.restoreDir).sort(), before);
    assert.deepEqual(await x.origin.inUse(), []);
    assert.deepEqual(r.metrics.results, ["restore:refused"]);
  });
}

test("a self-contained archive (no manifest) passes untouched", async () => {
  const x = await restoring();
  rmSync(join(x.restoreDir, PAGES_MANIFEST));
  const before = readdirSync(x.restoreDir).sort();
  assert.equal((await x.preRestore()).ok, true);
  assert.deepEqual(readdirSync(x.restoreDir).sort(), before);
});

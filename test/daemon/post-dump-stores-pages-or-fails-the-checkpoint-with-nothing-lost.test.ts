/**
 * The post-dump stage over fakes, through the coordinator as the hook reaches it: with the page store, CRIU's page
 * images move into it and a manifest takes their place, and the checkpoint's phases are kept once containerd
 * resumes the container; a failure fails the checkpoint with every page image put back and nothing in the store,
 * and the GPU still comes back at the resume. Opted-out containers and stores on another filesystem stay
 * self-contained.
 */
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, test } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { silentLogger } from "../../src/base/log.js";
import { Coordinator } from "../../src/daemon/coordinator.js";
import { PageStoreKeeper } from "../../src/daemon/page-store-keeper.js";
import { RateBook } from "../../src/daemon/rates.js";
import { ProcessState } from "../../src/gpu/types.js";
import { PAGES_MANIFEST } from "../../src/store/manifest.js";
import { PageStore } from "../../src/store/page-store.js";
import { hookRequest, type Rig, rig, states } from "./fakes.js";

const { RUNNING, CHECKPOINTED } = ProcessState;
let r: Rig;
let coordinator: Coordinator | undefined;
let scratch: string;
afterEach(async () => {
  await coordinator?.close();
  await r?.ctx.checkpoint?.pages?.close();
  r?.cleanup();
  rmSync(scratch, { recursive: true, force: true });
});

/** A frozen GPU container mid-checkpoint, CRIU's image dir with two page images, and a daemon with a store. */
async function checkpointing(options: { store?: "same-fs" | "none"; manage?: { pageStore?: boolean } } = {}) {
  r = await rig({ frozenGraceMs: 5000 });
  scratch = mkdtempSync(join(tmpdir(), "kyb-post-dump-"));
  const imageDir = join(scratch, "ctrd-checkpoint123");
  mkdirSync(imageDir);
  for (const [name, size] of [
    ["pages-1.img", 1 << 20],
    ["pages-2.img", 4096],
    ["pagemap-1.img", 10],
  ] as const)
    writeFileSync(join(imageDir, name), Buffer.alloc(size, 7));
  const c = r.host.addContainer(100, [101]);
  c.freezer.frozen = true;
  const criu = r.host.checkpointUnderWay();
  const keeper =
    options.store === "none"
      ? undefined
      : new PageStoreKeeper(await PageStore.open(join(scratch, "store")), {
          keep: 2,
          archiveDirs: [],
          log: silentLogger,
          collectEveryMs: 0,
          archiveSearchMs: 0,
        });
  r.ctx.checkpoint = {
    node: "node-a",
    ...(keeper ? { pages: keeper } : {}),
    disk: { enabled: true, containerdRoot: scratch },
    deadlineHintMs: 120_000,
    rates: new RateBook(),
  };
  r.ctx.containers.manage({
    id: "c0ffee",
    name: "cuda",
    pod: "ns/pod",
    reason: "test",
    restored: false,
    since: new Date().toISOString(),
    ...options.manage,
  });
  coordinator = new Coordinator(r.ctx);
  const pre = await coordinator.handle(hookRequest("pre-dump", 100, { imageDir }));
  assert.equal(pre.ok, true, pre.error);
  assert.deepEqual(states(r.driver, [101]), [CHECKPOINTED]);
  // CRIU seizes the tasks and writes its images; then post-dump.
  r.host.processes.set(101, { startTime: "1", tracer: 9000 });
  const resume = async () => {
    criu.finish();
    r.host.processes.set(101, { startTime: "1", tracer: 0 });
    c.freezer.frozen = false;
    await until("the GPU back", () => states(r.driver, [101])[0] === RUNNING);
    await until("the slot freed", () => !r.ctx.containers.isBusy("c0ffee"));
  };
  return {
    imageDir,
    keeper,
    resume,
    criu,
    container: c,
    postDump: () => coordinator?.handle(hookRequest("post-dump", 100, { imageDir })),
  };
}

async function until(what: string, ok: () => boolean, ms = 3000): Promise<void> {
  const end = Date.now() + ms;
  while (!ok()) {
    if (Date.now() > end) assert.fail(`${what} did not happen within ${ms} ms`);
    await sleep(5);
  }
}

const files = (dir: string) => readdirSync(dir).sort();

test("the page images go to the store, a manifest stays; at the resume the phases are kept", async () => {
  const x = await checkpointing();
  await sleep(20);
  const reply = await x.postDump();
  assert.equal(reply?.ok, true, reply?.error);
  assert.equal(((reply?.data ?? {}) as { followed?: number }).followed, 2, "both hashed while CRIU wrote");
  assert.deepEqual(files(x.imageDir), [PAGES_MANIFEST, "pagemap-1.img"]);
  const [entry] = (await x.keeper?.store.entries()) ?? [];
  assert.ok(entry?.complete);
  assert.equal(entry?.bytes, (1 << 20) + 4096);
  // Hashed while "CRIU" wrote (followed from pre-dump's end): the digests are the files' own.
  const digest = (bytes: number) => createHash("sha256").update(Buffer.alloc(bytes, 7)).digest("hex");
  assert.deepEqual(
    entry?.record?.files.map((f) => [f.name, f.sha256]),
    [
      ["pages-1.img", digest(1 << 20)],
      ["pages-2.img", digest(4096)],
    ],
  );
  assert.equal(entry?.record?.pod, "ns/pod");
  await x.resume();
  const last = r.ctx.containers.last("c0ffee");
  assert.equal(last?.ok, true);
  assert.equal(last?.checkpointId, entry?.id);
  for (const phase of [
    "preDump",
    "gpuFreeze",
    "criuDump",
    "pageStore",
    "untilResume",
    "gpuThaw",
    "total",
  ] as const)
    assert.equal(
      typeof last?.phasesMs?.[phase],
      "number",
      `phase ${phase}: ${JSON.stringify(last?.phasesMs)}`,
    );
  assert.ok((last?.phasesMs?.criuDump ?? 0) >= 15, "CRIU's dump runs from pre-dump's end to post-dump");
});

test("the store fails at post-dump: the checkpoint fails, every page image is back, nothing stored, the GPU comes back", async () => {
  const x = await checkpointing();
  const before = files(x.imageDir);
  mkdirSync(join(x.imageDir, PAGES_MANIFEST));
  const reply = await x.postDump();
  assert.equal(reply?.ok, false);
  assert.match(
    reply?.error ?? "",
    /the page store .* could not take the checkpoint's page images: .*EISDIR.*the page images were put back.*the checkpoint fails and the container keeps running/,
  );
  assert.deepEqual(files(x.imageDir), [...before, PAGES_MANIFEST].sort());
  assert.deepEqual(await x.keeper?.store.entries(), []);
  await x.resume();
  assert.equal(r.ctx.containers.last("c0ffee")?.ok, false, "the checkpoint is reported failed");
  assert.deepEqual(r.journalEntries(), []);
});

test('a container annotated kybernate.io/page-store: "false" keeps its page images', async () => {
  const x = await checkpointing({ manage: { pageStore: false } });
  const before = files(x.imageDir);
  assert.equal((await x.postDump())?.ok, true);
  assert.deepEqual(files(x.imageDir), before);
  assert.deepEqual(await x.keeper?.store.entries(), []);
  await x.resume();
});

test("without a page store post-dump changes nothing", async () => {
  const x = await checkpointing({ store: "none" });
  const before = files(x.imageDir);
  assert.equal((await x.postDump())?.ok, true);
  assert.deepEqual(files(x.imageDir), before);
  assert.ok(!existsSync(join(x.imageDir, PAGES_MANIFEST)));
  await x.resume();
});

test("containerd abandons the checkpoint after post-dump (the caller's deadline): its pages leave the store at the resume", async () => {
  const x = await checkpointing();
  const reply = await x.postDump();
  assert.equal(reply?.ok, true, reply?.error);
  assert.equal((await x.keeper?.store.entries())?.length, 1);
  // The shim kills runc: no archive will be written; containerd's own resume is lost, kybernate resumes the task.
  r.runtime.onResume = () => {
    x.container.freezer.frozen = false;
  };
  x.criu.cut();
  await sleep(30);
  x.criu.finish();
  r.host.processes.set(101, { startTime: "1", tracer: 0 });
  await until("the GPU back", () => states(r.driver, [101])[0] === RUNNING);
  await until("the slot freed", () => !r.ctx.containers.isBusy("c0ffee"));
  assert.deepEqual(await x.keeper?.store.entries(), [], "no pages kept for an archive that never comes");
});

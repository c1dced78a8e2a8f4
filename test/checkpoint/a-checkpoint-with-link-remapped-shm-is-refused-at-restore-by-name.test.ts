/**
 * glibc's sem_open maps a temporary /dev/shm file and links it under the semaphore's name (Python's
 * multiprocessing locks, torch.multiprocessing): CRIU keeps such a mapping with a link-remap link that exists only
 * in the original pod's /dev/shm during the dump, so no restore can open it. The checkpoint records those files
 * and the restore is refused at pre-restore by name, instead of CRIU's "Can't link dev/shm/link_remap.N".
 */
import assert from "node:assert/strict";
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, test } from "node:test";
import { silentLogger } from "../../src/base/log.js";
import { buildMetadata, writeMetadata } from "../../src/checkpoint/metadata.js";
import { NodePolicy } from "../../src/checkpoint/policy.js";
import { deletedMappings } from "../../src/host/proc.js";

const root = mkdtempSync(join(tmpdir(), "kyb-shm-"));
after(() => rmSync(root, { recursive: true, force: true }));

test("/proc/PID/maps: only mappings whose path was unlinked", async () => {
  mkdirSync(join(root, "proc", "42"), { recursive: true });
  writeFileSync(
    join(root, "proc", "42", "maps"),
    [
      "7f00-7f01 rw-s 00000000 00:1a 123 /dev/shm/sem.EHgQuu (deleted)",
      "7f02-7f03 rw-s 00000000 00:1a 124 /dev/shm/kyb-traits-1",
      "7f04-7f05 r-xp 00000000 08:01 99 /usr/lib/libc.so.6",
      "7f06-7f07 rw-p 00000000 00:00 0 ",
      "",
    ].join("\n"),
  );
  assert.deepEqual(await deletedMappings(42, join(root, "proc")), ["/dev/shm/sem.EHgQuu"]);
});

test("a checkpoint recording such files is refused at restore, naming them and why", async () => {
  const dir = join(root, "image");
  mkdirSync(dir);
  await writeMetadata(
    dir,
    buildMetadata({
      version: "0.1.0",
      containerId: "c1",
      inventory: { gpus: [] },
      apps: [],
      pids: [7],
      unrestorableShm: ["/dev/shm/sem.EHgQuu", "/dev/shm/sem.v59W2b"],
    }),
  );
  const policy = new NodePolicy({
    probe: { inventory: async () => ({ gpus: [] }), computeApps: async () => [] },
    version: "0.1.0",
    log: silentLogger,
    admission: { enabled: false, headroomBytes: 0 },
  });
  const plan = await policy.planRestore({ containerId: "c1", imageDir: dir });
  assert.equal(plan.ok, false);
  assert.match(
    plan.ok ? "" : plan.error,
    /^refusing to restore: .*\/dev\/shm under names since unlinked \(\/dev\/shm\/sem\.EHgQuu, \/dev\/shm\/sem\.v59W2b: POSIX semaphores.*link-remap/,
  );
});

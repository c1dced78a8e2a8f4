import { readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { delay } from "../base/deadline.js";

/**
 * A container's cgroup freezer, as runc uses it: v1's freezer.state or v2's cgroup.freeze. containerd pauses a
 * container this way before CRIU runs. A process's freezer comes from its ProcessCgroups (host/cgroup.ts).
 */
export class Freezer {
  private constructor(
    readonly dir: string,
    private readonly version: 1 | 2,
  ) {}

  static v1(dir: string): Freezer {
    return new Freezer(dir, 1);
  }

  static v2(dir: string): Freezer {
    return new Freezer(dir, 2);
  }

  async isFrozen(): Promise<boolean> {
    if (this.version === 1) {
      const state = (await readFile(join(this.dir, "freezer.state"), "utf8")).trim();
      return state !== "THAWED";
    }
    const events = await readFile(join(this.dir, "cgroup.events"), "utf8");
    const frozenLine = events.split("\n").find((line) => line.startsWith("frozen "));
    const wanted = (await readFile(join(this.dir, "cgroup.freeze"), "utf8")).trim() === "1";
    return wanted || frozenLine === "frozen 1";
  }

  async thaw(): Promise<void> {
    await this.set(false);
  }

  /** Freezes and waits until every task is frozen, as `runc pause` does. */
  async freeze(timeoutMs = 5000): Promise<void> {
    await this.set(true);
    const until = Date.now() + timeoutMs;
    while (!(await this.fullyFrozen())) {
      if (Date.now() > until) throw new Error(`cgroup ${this.dir} did not freeze within ${timeoutMs} ms`);
      await delay(2);
      // v1 can get stuck in FREEZING when a task races a fork; asking again moves it on.
      if (this.version === 1) await this.set(true);
    }
  }

  private async fullyFrozen(): Promise<boolean> {
    if (this.version === 1)
      return (await readFile(join(this.dir, "freezer.state"), "utf8")).trim() === "FROZEN";
    return (await readFile(join(this.dir, "cgroup.events"), "utf8")).includes("frozen 1");
  }

  private async set(frozen: boolean): Promise<void> {
    if (this.version === 1) await writeFile(join(this.dir, "freezer.state"), frozen ? "FROZEN" : "THAWED");
    else await writeFile(join(this.dir, "cgroup.freeze"), frozen ? "1" : "0");
  }
}

import type { ArgumentsCamelCase, Argv, CommandModule } from "yargs";
import { askDaemon } from "../../daemon/client.js";
import type { InUse, StoreEntry } from "../../store/page-store.js";
import { CliError, exitWithError } from "../cli-error.js";
import { fetchDaemonStatus } from "../daemon-status.js";
import { openPageStore, type PageStoreArgs, withPageStore } from "../page-store-access.js";
import { humanBytes } from "../progress.js";

export interface StoreListing {
  dir: string;
  node: string;
  keep?: number;
  entries: StoreEntry[];
  inUse: InUse[];
}

interface CollectResult {
  remove: Array<{ id: string; reason: string }>;
  protected: Array<{ id: string; reason: string }>;
  freedBytes: number;
}

/**
 * The store through the daemon when it runs (it owns the store: what is being written, what a restore uses),
 * else directly: with no daemon no restore can be using it (the hook fails without one).
 */
async function viaDaemon<T>(args: PageStoreArgs, request: object): Promise<T | undefined> {
  const status = await fetchDaemonStatus(args.socket, 2000);
  if (!status.reachable || !status.pageStore) return undefined;
  if (args.pageStore && args.pageStore !== status.pageStore.dir)
    throw new CliError(
      `the running daemon owns the page store ${status.pageStore.dir}, not ${args.pageStore}: stop it to work on another store`,
      2,
    );
  const reply = await askDaemon(args.socket, { kind: "store", ...request } as never, 60_000);
  if (!reply.ok) throw new CliError(reply.error ?? "the daemon refused");
  return reply.data as T;
}

export async function listStore(args: PageStoreArgs): Promise<StoreListing> {
  const remote = await viaDaemon<StoreListing>(args, { op: "ls" });
  if (remote) return remote;
  const { store, node } = await openPageStore(args);
  return { dir: store.dir, node, entries: await store.entries(), inUse: await store.inUse() };
}

export async function collectStore(args: PageStoreArgs & { keep?: number }): Promise<CollectResult> {
  const request = { op: "gc", ...(args.keep !== undefined ? { keep: args.keep } : {}) };
  const remote = await viaDaemon<CollectResult>(args, request);
  if (remote) return remote;
  const { store } = await openPageStore(args);
  return store.collect({ keep: args.keep ?? 2 });
}

export function renderListing(l: StoreListing): string {
  const inUse = new Map<string, string[]>();
  for (const u of l.inUse)
    inUse.set(u.checkpointId, [...(inUse.get(u.checkpointId) ?? []), u.containerId.slice(0, 12)]);
  const header = ["CHECKPOINT", "CONTAINER", "POD", "SIZE", "ARCHIVE", "STATE"];
  const rows = l.entries.map((e) => [
    e.id,
    e.record ? `${e.record.container ?? "?"} (${e.record.containerId.slice(0, 12)})` : "-",
    e.record?.pod ?? "-",
    humanBytes(e.bytes),
    e.record?.archive ?? "unknown",
    !e.complete ? "incomplete" : inUse.has(e.id) ? `in use by ${inUse.get(e.id)?.join(", ")}` : "kept",
  ]);
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? "").length)));
  const line = (r: string[]) =>
    r
      .map((c, i) => c.padEnd(widths[i] ?? 0))
      .join("  ")
      .trimEnd();
  const total = l.entries.reduce((s, e) => s + e.bytes, 0);
  return [
    `page store ${l.dir} on node ${l.node}${l.keep ? `, keeps ${l.keep} per container` : ""}: ${l.entries.length} checkpoints, ${humanBytes(total)}`,
    ...(rows.length ? [line(header), ...rows.map(line)] : []),
  ].join("\n");
}

interface LsArgs extends PageStoreArgs {
  json: boolean;
}

interface GcArgs extends PageStoreArgs {
  keep?: number;
}

export const storeCommand: CommandModule<object, object> = {
  command: "store",
  describe: "The node's page store: list its checkpoints, collect what is no longer needed",
  builder: (yargs: Argv) =>
    yargs
      .command({
        command: "ls",
        describe:
          "List the checkpoints whose page images the store holds, their archives and restores using them",
        builder: (y: Argv) =>
          withPageStore(y.option("json", { type: "boolean", default: false })) as unknown as Argv<LsArgs>,
        handler: async (args: ArgumentsCamelCase<LsArgs>) => {
          try {
            const l = await listStore(args);
            process.stdout.write(`${args.json ? JSON.stringify(l, null, 2) : renderListing(l)}\n`);
          } catch (err) {
            exitWithError("store ls", err);
          }
        },
      } as CommandModule<object, LsArgs>)
      .command({
        command: "gc",
        describe:
          "Delete the pages of checkpoints beyond the newest --keep of their container, of those whose archive is gone, and of incomplete ones; never of one a restore uses",
        builder: (y: Argv) =>
          withPageStore(
            y.option("keep", {
              type: "number",
              describe: "checkpoints kept per container (default: the daemon's)",
            }),
          ) as unknown as Argv<GcArgs>,
        handler: async (args: ArgumentsCamelCase<GcArgs>) => {
          try {
            if (args.keep !== undefined && !(Number.isInteger(args.keep) && args.keep >= 0))
              throw new CliError("--keep must be a whole number >= 0", 2);
            const r = await collectStore(args);
            for (const x of r.remove) process.stdout.write(`removed\t${x.id}\t${x.reason}\n`);
            for (const x of r.protected)
              process.stdout.write(`kept\t${x.id}\t${x.reason}, but a restore uses it\n`);
            process.stdout.write(`freed ${humanBytes(r.freedBytes)}\n`);
          } catch (err) {
            exitWithError("store gc", err);
          }
        },
      } as CommandModule<object, GcArgs>)
      .demandCommand(1, "name ls or gc"),
  handler: () => undefined,
};

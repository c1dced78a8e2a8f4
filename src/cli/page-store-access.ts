import { hostname } from "node:os";
import type { Argv } from "yargs";
import { DEFAULT_DAEMON_SOCKET } from "../daemon/protocol.js";
import { PageStore } from "../store/page-store.js";
import { CliError } from "./cli-error.js";
import { fetchDaemonStatus } from "./daemon-status.js";

export interface PageStoreArgs {
  pageStore?: string;
  nodeName?: string;
  socket: string;
}

/** The options of the commands that work on the node's page store. */
export function withPageStore<T>(yargs: Argv<T>): Argv<T & PageStoreArgs> {
  return yargs
    .option("page-store", {
      type: "string",
      describe: "the page store's directory (default: the running kybernate daemon's)",
    })
    .option("node-name", {
      type: "string",
      describe: "this node's name in page manifests (default: the daemon's, else $NODE_NAME or the hostname)",
    })
    .option("socket", {
      type: "string",
      default: DEFAULT_DAEMON_SOCKET,
      describe: "the kybernate daemon's socket (kybernate run --socket)",
    }) as unknown as Argv<T & PageStoreArgs>;
}

/** The page store named by --page-store, else the one the daemon runs with; a CliError saying how to name one. */
export async function openPageStore(args: PageStoreArgs): Promise<{ store: PageStore; node: string }> {
  const daemon = await fetchDaemonStatus(args.socket, 2000);
  const fromDaemon = daemon.reachable ? daemon.pageStore : undefined;
  const dir = args.pageStore ?? fromDaemon?.dir;
  if (!dir)
    throw new CliError(
      daemon.reachable
        ? `the kybernate daemon on ${args.socket} runs without a page store: give --page-store DIR`
        : `no page store named and no daemon to ask (${daemon.error}): give --page-store DIR`,
      2,
    );
  const node = args.nodeName || fromDaemon?.node || process.env.NODE_NAME || hostname();
  return { store: await PageStore.open(dir), node };
}

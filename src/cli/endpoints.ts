import type { Argv } from "yargs";
import { CriClient, DEFAULT_CRI_SOCKET } from "../cri/client.js";
import { DEFAULT_DAEMON_SOCKET } from "../daemon/protocol.js";
import { CliError } from "./cli-error.js";

export interface EndpointArgs {
  runtimeEndpoint: string;
  socket: string;
}

/** The options every CRI-facing command shares, spelled as crictl spells the CRI one. */
export function withEndpoints<T>(yargs: Argv<T>): Argv<T & EndpointArgs> {
  return yargs
    .option("runtime-endpoint", {
      type: "string",
      default: `unix://${DEFAULT_CRI_SOCKET}`,
      describe: "containerd's CRI socket (unix:///path or a plain absolute path)",
    })
    .option("socket", {
      type: "string",
      default: DEFAULT_DAEMON_SOCKET,
      describe: "the kybernate daemon's socket (kybernate run --socket)",
    }) as unknown as Argv<T & EndpointArgs>;
}

/** A CRI client, or a CliError saying how to name the socket. */
export function openCri(endpoint: string): CriClient {
  try {
    return new CriClient(endpoint);
  } catch (err) {
    throw new CliError(`--runtime-endpoint: ${(err as Error).message}`, 2);
  }
}

/**
 * How node runs kybernate (the installed wrapper, the package's bin, the test node's daemons alike): V8's young
 * generation capped at 1 MiB semi-spaces instead of growing to 16 MiB. `kybernate run` is a small daemon that
 * lives as long as the node; the cap is ~12 MiB of its resident memory (docs/BENCHMARKS.md). V8 reads the flag
 * only at start, so it must be on node's command line.
 */
export const NODE_FLAGS: readonly string[] = ["--max-semi-space-size=1"];

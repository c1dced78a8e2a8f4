import { existsSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

function findPackageRoot(from: string): string {
  let dir = from;
  while (!existsSync(join(dir, "package.json"))) {
    const parent = dirname(dir);
    if (parent === dir) throw new Error(`kybernate: no package.json above ${from}`);
    dir = parent;
  }
  return dir;
}

/** The installed package's root: the same whether running from src/ (tsx) or dist/src/ (compiled). */
export const packageRoot = findPackageRoot(dirname(fileURLToPath(import.meta.url)));
export const protoDir = join(packageRoot, "proto");
export const hooksDir = join(packageRoot, "hooks");
/** kybernate run's state (journal, CRIU files, restore plans, limits) unless --state-dir says otherwise. */
export const DEFAULT_STATE_DIR = "/var/lib/kybernate";

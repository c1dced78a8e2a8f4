import { execFile } from "node:child_process";
import { existsSync } from "node:fs";
import { chmod, copyFile, lstat, mkdir, readdir, readFile, rm, rmdir, writeFile } from "node:fs/promises";
import { dirname, join, relative, resolve, sep } from "node:path";
import { promisify } from "node:util";
import { NODE_FLAGS } from "../base/node-flags.js";

const run = promisify(execFile);

export const MANIFEST_NAME = "install-manifest.json";
export const UNIT_NAME = "kybernate.service";

export interface InstallManifest {
  kybernateVersion: string;
  prefix: string;
  installedAt: string;
  /** Directories install created (deepest last); uninstall removes them when empty. */
  dirs: string[];
  /** Every file install wrote, absolute. */
  files: string[];
  systemd?: { unit: string; enabled: boolean };
}

export interface InstallOptions {
  prefix: string;
  /** The package to copy from (its dist/src, proto, hooks, package.json, node_modules). */
  sourceRoot: string;
  /** The node binary that will run the hook and the daemon. */
  nodeBinary: string;
  version: string;
  /** Where systemd units live; "" = do not write one. */
  unitDir: string;
  /** Whether systemd runs here (then the unit is enabled and started). */
  systemdRunning: boolean;
  /** Arguments for `kybernate run` in the unit. */
  runArgs: string[];
  /** Runs systemctl; tests substitute their own. */
  systemctl?: (args: string[]) => Promise<void>;
}

export interface InstallReport {
  manifest: InstallManifest;
  notes: string[];
}

/**
 * The production dependency closure of a package: each dependency resolved as Node would (the requiring
 * package's node_modules first, then each folder above), collected as folders relative to the root.
 */
export async function productionPackages(root: string): Promise<string[]> {
  const found = new Set<string>();
  const visit = async (fromDir: string): Promise<void> => {
    const pkg = JSON.parse(await readFile(join(fromDir, "package.json"), "utf8")) as {
      dependencies?: Record<string, string>;
      optionalDependencies?: Record<string, string>;
    };
    const names = [...Object.keys(pkg.dependencies ?? {}), ...Object.keys(pkg.optionalDependencies ?? {})];
    for (const name of names) {
      let dir = fromDir;
      let hit: string | undefined;
      for (;;) {
        const candidate = join(dir, "node_modules", name);
        if (existsSync(join(candidate, "package.json"))) {
          hit = candidate;
          break;
        }
        if (resolve(dir) === resolve(root) || dirname(dir) === dir) break;
        dir = dirname(dir);
      }
      if (!hit) {
        if (pkg.optionalDependencies?.[name]) continue;
        throw new Error(
          `dependency ${name} of ${fromDir} is not installed: run \`npm ci --omit=dev\` in ${root} first`,
        );
      }
      if (found.has(hit)) continue;
      found.add(hit);
      await visit(hit);
    }
  };
  await visit(root);
  // A package inside another collected one travels with it.
  const all = [...found].map((d) => relative(root, d)).sort();
  return all.filter((d) => !all.some((o) => o !== d && d.startsWith(`${o}${sep}`)));
}

class Recorder {
  readonly dirs: string[] = [];
  readonly files: string[] = [];

  async mkdirs(dir: string): Promise<void> {
    const missing: string[] = [];
    for (let d = resolve(dir); !existsSync(d); d = dirname(d)) missing.unshift(d);
    for (const d of missing) {
      await mkdir(d, { mode: 0o755 });
      this.dirs.push(d);
    }
  }

  private async claim(path: string, owned: Set<string>): Promise<void> {
    if (existsSync(path) && !owned.has(path))
      throw new Error(
        `${path} exists and was not installed by kybernate: remove it or choose another --prefix`,
      );
    await this.mkdirs(dirname(path));
    this.files.push(path);
  }

  async copyTree(from: string, to: string, owned: Set<string>): Promise<void> {
    const entries = await readdir(from, { withFileTypes: true });
    for (const entry of entries) {
      const src = join(from, entry.name);
      const dst = join(to, entry.name);
      if (entry.isDirectory()) await this.copyTree(src, dst, owned);
      else if (entry.isFile()) {
        await this.claim(dst, owned);
        await copyFile(src, dst);
        await chmod(dst, (await lstat(src)).mode & 0o777);
      }
      // Symlinks (node_modules/.bin) are left out: nothing at run time needs them.
    }
  }

  async write(path: string, text: string, mode: number, owned: Set<string>): Promise<void> {
    await this.claim(path, owned);
    await writeFile(path, text, { mode });
    await chmod(path, mode);
  }

  async copy(from: string, to: string, mode: number, owned: Set<string>): Promise<void> {
    await this.claim(to, owned);
    await copyFile(from, to);
    await chmod(to, mode);
  }
}

export function renderUnit(prefix: string, runArgs: string[], template: string): string {
  const exec = [join(prefix, "bin", "kybernate"), "run", ...runArgs].join(" ");
  return template.replaceAll("/opt/kybernate", prefix).replace(/^ExecStart=.*$/m, `ExecStart=${exec}`);
}

const WRAPPER = `#!/bin/sh
# kybernate with its own node: the CRIU hook and the daemon run this copy, whatever node the host has.
here=$(dirname "$(readlink -f "$0")")
exec "$here/node" ${NODE_FLAGS.join(" ")} "$here/../dist/src/cli/main.js" "$@"
`;

export async function readManifest(prefix: string): Promise<InstallManifest | undefined> {
  const text = await readFile(join(prefix, MANIFEST_NAME), "utf8").catch(() => undefined);
  return text === undefined ? undefined : (JSON.parse(text) as InstallManifest);
}

const defaultSystemctl = async (args: string[]): Promise<void> => {
  await run("systemctl", args, { timeout: 60_000 });
};

/**
 * Copies a self-contained kybernate (node, dist/src, proto, hooks, production node_modules) into the prefix,
 * and a systemd unit when systemd runs here. Every path written or created is recorded in the manifest, so
 * uninstall removes exactly that. A second install replaces the first.
 */
export async function install(options: InstallOptions): Promise<InstallReport> {
  const prefix = resolve(options.prefix);
  const src = options.sourceRoot;
  for (const needed of ["dist/src/cli/main.js", "hooks/kybernate-criu-hook", "proto", "package.json"])
    if (!existsSync(join(src, needed)))
      throw new Error(`${join(src, needed)} is missing: run \`npm run build\` in ${src} before installing`);
  const notes: string[] = [];
  const previous = await readManifest(prefix);
  if (previous) {
    notes.push(`replacing the kybernate ${previous.kybernateVersion} installed at ${previous.installedAt}`);
    await uninstall({ prefix, ...(options.systemctl ? { systemctl: options.systemctl } : {}) });
  }
  const rec = new Recorder();
  const owned = new Set<string>();
  await rec.mkdirs(prefix);
  await rec.copy(options.nodeBinary, join(prefix, "bin", "node"), 0o755, owned);
  await rec.write(join(prefix, "bin", "kybernate"), WRAPPER, 0o755, owned);
  const pkg = JSON.parse(await readFile(join(src, "package.json"), "utf8")) as Record<string, unknown>;
  // What Node and kybernate read: the module type (ESM), name, version; dependencies let this copy install
  // another (the DaemonSet's image holds one installed copy that its init container installs on the host).
  await rec.write(
    join(prefix, "package.json"),
    `${JSON.stringify({ name: pkg.name, version: pkg.version, type: pkg.type, private: true, dependencies: pkg.dependencies }, null, 2)}\n`,
    0o644,
    owned,
  );
  await rec.copyTree(join(src, "dist", "src"), join(prefix, "dist", "src"), owned);
  await rec.copyTree(join(src, "proto"), join(prefix, "proto"), owned);
  await rec.copyTree(join(src, "hooks"), join(prefix, "hooks"), owned);
  if (existsSync(join(src, "install")))
    await rec.copyTree(join(src, "install"), join(prefix, "install"), owned);
  for (const dir of await productionPackages(src))
    await rec.copyTree(join(src, dir), join(prefix, dir), owned);

  let systemd: InstallManifest["systemd"];
  if (options.unitDir) {
    const template = await readFile(join(src, "install", "systemd", UNIT_NAME), "utf8");
    const unit = join(options.unitDir, UNIT_NAME);
    if (options.systemdRunning || existsSync(options.unitDir)) {
      await rec.write(unit, renderUnit(prefix, options.runArgs, template), 0o644, owned);
      systemd = { unit, enabled: false };
    }
    if (systemd && options.systemdRunning) {
      const systemctl = options.systemctl ?? defaultSystemctl;
      await systemctl(["daemon-reload"]);
      await systemctl(["enable", "--now", UNIT_NAME]);
      systemd.enabled = true;
      notes.push(`systemd: ${UNIT_NAME} enabled and started (journalctl -u kybernate to follow it)`);
    } else
      notes.push(
        `systemd is not running here${systemd ? ` (${unit} written, not enabled)` : ""}: start kybernate with\n  ${join(prefix, "bin", "kybernate")} run ${options.runArgs.join(" ")}\nunder your init system, as root`,
      );
  }
  const manifest: InstallManifest = {
    kybernateVersion: options.version,
    prefix,
    installedAt: new Date().toISOString(),
    dirs: rec.dirs,
    files: [...rec.files, join(prefix, MANIFEST_NAME)],
    ...(systemd ? { systemd } : {}),
  };
  await writeFile(join(prefix, MANIFEST_NAME), `${JSON.stringify(manifest, null, 2)}\n`, { mode: 0o644 });
  return { manifest, notes };
}

/** Removes what the manifest lists, then the directories install created (when empty). */
export async function uninstall(options: {
  prefix: string;
  systemctl?: (args: string[]) => Promise<void>;
}): Promise<{ removed: number; kept: string[] }> {
  const prefix = resolve(options.prefix);
  const manifest = await readManifest(prefix);
  if (!manifest)
    throw new Error(
      `${join(prefix, MANIFEST_NAME)} not found: nothing was installed by kybernate at ${prefix} (give the --prefix used at install)`,
    );
  if (manifest.systemd?.enabled) {
    const systemctl = options.systemctl ?? defaultSystemctl;
    await systemctl(["disable", "--now", UNIT_NAME]).catch(() => undefined);
  }
  let removed = 0;
  for (const file of manifest.files) {
    await rm(file, { force: true });
    removed++;
  }
  if (manifest.systemd?.enabled) await (options.systemctl ?? defaultSystemctl)(["daemon-reload"]);
  const kept: string[] = [];
  // Deepest first: a file's directory before its parent.
  const dirs = [...manifest.dirs].sort((a, b) => b.length - a.length);
  for (const dir of dirs) {
    await removeEmptyTree(dir);
    if (existsSync(dir)) kept.push(dir);
  }
  return { removed, kept };
}

/** Removes a directory and its empty subdirectories; anything else in it stays (someone else's). */
async function removeEmptyTree(dir: string): Promise<void> {
  const entries = await readdir(dir, { withFileTypes: true }).catch(() => undefined);
  if (!entries) return;
  for (const e of entries) if (e.isDirectory()) await removeEmptyTree(join(dir, e.name));
  await rmdir(dir).catch(() => undefined);
}

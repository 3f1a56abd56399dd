/**
 * Where the rehearsal keeps its files. Each run (a test file's process, `npm run rehearse`) writes
 * under a folder of its own, removed when the process exits (EFFITAG_REHEARSAL_KEEP=1 keeps it), so
 * two checkouts or two runs on one machine never share or prune each other's files. What is worth
 * keeping between runs is cached per checkout, under names that say what they hold: the Lambda
 * layer's npm install by its asset hash (package.json, build script, architecture), generated
 * weights by model and seed. Cache entries are written beside their final name and renamed into
 * place, so a concurrent run sees a complete entry or none. A run's folder whose process is gone
 * (killed) is removed by the next run of the same checkout.
 */
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, renameSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { REPO_ROOT } from '../../cdk/constructs/bundling.ts';

/** This checkout's folder under the system's temporary folder (far from any node_modules). */
export const CHECKOUT_DIR = join(tmpdir(), `effitag-rehearsal-${createHash('sha256').update(REPO_ROOT).digest('hex').slice(0, 12)}`);

let runDir: string | undefined;

/** This process's own folder (created on first use, removed at exit). */
export function runRoot(): string {
  if (!runDir) {
    mkdirSync(CHECKOUT_DIR, { recursive: true });
    removeOrphans();
    const dir = mkdtempSync(join(CHECKOUT_DIR, `run-${process.pid}-`));
    runDir = dir;
    if (process.env.EFFITAG_REHEARSAL_KEEP !== '1')
      process.once('exit', () => {
        try {
          rmSync(dir, { recursive: true, force: true, maxRetries: 3 });
        } catch {
          // A child still writing into it: the next run of this checkout removes it (removeOrphans).
        }
      });
  }
  return runDir;
}

/** Folders of this checkout's runs whose process is gone (killed, or exited while a child still wrote). */
function removeOrphans(): void {
  if (process.env.EFFITAG_REHEARSAL_KEEP === '1') return;
  for (const entry of readdirSync(CHECKOUT_DIR)) {
    const pid = Number(/^run-(\d+)-/.exec(entry)?.[1]);
    if (!pid || pid === process.pid) continue;
    try {
      process.kill(pid, 0); // alive (or a reused pid): not ours to remove
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ESRCH') rmSync(join(CHECKOUT_DIR, entry), { recursive: true, force: true });
    }
  }
}

/** A new folder inside this run's own. */
export function runTemp(prefix: string): string {
  return mkdtempSync(join(runRoot(), prefix));
}

/** A per-checkout cache entry: its path, built by `build(tmp)` into a temporary folder if absent. */
export async function cached(name: string, build: (dir: string) => Promise<void> | void): Promise<string> {
  const dir = join(CHECKOUT_DIR, 'cache', name);
  if (existsSync(dir)) return dir;
  mkdirSync(join(CHECKOUT_DIR, 'cache'), { recursive: true });
  const tmp = mkdtempSync(`${dir}.building-`);
  try {
    await build(tmp);
    try {
      renameSync(tmp, dir);
    } catch (err) {
      // Another run finished the same entry first: theirs is as good.
      if (!existsSync(dir)) throw err;
    }
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
  return dir;
}

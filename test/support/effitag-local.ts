/** `effitag local` (npm start) as a user runs it, in its own process, for the tests that kill and restart it. */
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { portFlags } from './local-stack.ts';

export type LocalProcess = ChildProcess & { output(): string };

/** A loopback port free right now (the stack is started on it next). */
export async function freePort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const { port } = server.address() as { port: number };
  await new Promise((r) => server.close(r));
  return port;
}

/**
 * Runs `effitag local ARGS` and resolves at its start banner; `output()` is stdout and stderr so far.
 * The process is pushed onto `children`, for the test's `after` to kill.
 */
export async function spawnEffitagLocal(
  args: readonly string[],
  opts: { env?: NodeJS.ProcessEnv; children: ChildProcess[]; timeoutMs?: number },
): Promise<LocalProcess> {
  const child = spawn(process.execPath, ['bin/effitag.js', 'local', ...args], {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, ...opts.env },
  });
  opts.children.push(child);
  let out = '';
  const onData = (d: Buffer) => {
    out += d.toString();
  };
  child.stdout!.on('data', onData);
  child.stderr!.on('data', onData);
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no start banner: ${out}`)), opts.timeoutMs ?? 60_000);
    child.stdout!.on('data', () => {
      if (out.includes('is running')) {
        clearTimeout(timer);
        resolve();
      }
    });
    child.once('exit', (code) => reject(new Error(`exited ${code}: ${out}`)));
  });
  return Object.assign(child, { output: () => out });
}

/**
 * The stack on the given ports with its weights and data under `dir`. The commands a test runs next
 * (and EMBEDDED_CREDENTIALS) find this stack's credentials in its data directory.
 */
export async function startLocal(
  dir: string,
  ports: { s3: number; sqs: number; dynamodb?: number; gallery?: number },
  env: NodeJS.ProcessEnv = {},
  children: ChildProcess[] = [],
): Promise<LocalProcess> {
  const child = await spawnEffitagLocal(
    ['--weights', join(dir, 'weights'), '--data', join(dir, 'data'), ...portFlags(ports), '--log-level', 'warn'],
    { env, children },
  );
  process.env.EFFITAG_DATA_DIR = join(dir, 'data');
  return child;
}

/**
 * `effitag backfill URL --dry-run --json` on the test's stack, found as a user's is: through its
 * handle in EFFITAG_DATA_DIR (startTestStack and startLocal set it). The report it prints.
 */
export async function backfillDryRun(
  url: string,
): Promise<{ listed: number; enqueued: number; errors: number; skipped: Record<string, number> }> {
  const out = await promisify(execFile)(process.execPath, ['bin/effitag.js', 'backfill', url, '--dry-run', '--json'], {
    maxBuffer: 1 << 22,
  });
  return JSON.parse(out.stdout);
}

/** `effitag ARGS` in its own process; resolves with its exit code and output whatever the code. */
export function runEffitag(
  args: readonly string[],
  env: NodeJS.ProcessEnv = {},
): Promise<{ code: number; stdout: string; stderr: string }> {
  return promisify(execFile)(process.execPath, ['bin/effitag.js', ...args], {
    maxBuffer: 1 << 22,
    env: { ...process.env, ...env },
  }).then(
    (r) => ({ code: 0, ...r }),
    (e: { code: number; stdout: string; stderr: string }) => e,
  );
}

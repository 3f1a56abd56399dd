/**
 * Nothing lost across a crash of the embedded stack. Its queues live in memory (fauxqs), so a crash
 * or a stop loses every queued and in-flight task. Instead of a second, durable queue, the stack
 * keeps one fact on disk: a time before which every object in the bucket is settled (tagged, its
 * failure recorded, or not an image). It advances whenever the stack is idle: no upload event
 * being forwarded, and the intake and tier queues empty, in flight included.
 *
 * On start, a catch-up pass runs the backfill core (the router's own decisions) over the objects
 * modified since that time: untagged images are enqueued again, tagged ones are skipped by their
 * marker. A write-back changes an object's last-modified time too, so the pass re-reads what was
 * tagged since the stack was last idle: its cost grows with the work of that window, not with the
 * bucket (one LIST per 1,000 keys, plus one ranged GET per object modified since).
 */
import { mkdir, readFile, rename, writeFile } from 'node:fs/promises';
import { dirname } from 'node:path';
import type { Logger } from '../pipeline/log.ts';

/** Objects modified within this margin of the idle moment are re-examined (clock and rounding). */
const MARGIN_MS = 2_000;

export interface SettledState {
  /** Everything last modified before this is settled; undefined: never recorded (catch up on all). */
  read(): Promise<Date | undefined>;
  write(settledBefore: Date): Promise<void>;
}

export function settledState(path: string): SettledState {
  return {
    async read() {
      const text = await readFile(path, 'utf8').catch((err) => (err.code === 'ENOENT' ? undefined : Promise.reject(err)));
      if (!text) return undefined;
      const at = new Date(JSON.parse(text).settledBefore);
      return Number.isNaN(at.getTime()) ? undefined : at;
    },
    async write(settledBefore) {
      await mkdir(dirname(path), { recursive: true });
      // Written whole, then renamed over the old one: a crash never leaves half a file.
      const tmp = `${path}.${process.pid}.tmp`;
      await writeFile(tmp, `${JSON.stringify({ settledBefore: settledBefore.toISOString() })}\n`);
      await rename(tmp, path);
    },
  };
}

export interface IdleWatcher {
  /** Resolves after the next check that found the stack idle and recorded it. */
  settled(): Promise<Date>;
  stop(): Promise<void>;
}

/**
 * Every `intervalMs`, while `paused()` is false: note the time, check `isIdle()`, and if so record
 * that everything modified before that time (less a margin) is settled.
 */
export function watchIdle(opts: { state: SettledState; isIdle: () => Promise<boolean>; paused: () => boolean; intervalMs: number; log: Logger }): IdleWatcher {
  let stopped = false;
  let waiters: ((at: Date) => void)[] = [];
  let timer: NodeJS.Timeout | undefined;
  let running: Promise<void> = Promise.resolve();
  const tick = async () => {
    if (stopped || opts.paused()) return;
    const checkedAt = Date.now();
    try {
      if (!(await opts.isIdle())) return;
      const at = new Date(checkedAt - MARGIN_MS);
      await opts.state.write(at);
      for (const w of waiters) w(at);
      waiters = [];
    } catch (err) {
      opts.log.log('warn', 'idle check failed', { error: String(err) });
    }
  };
  const loop = () => {
    timer = setTimeout(() => { running = tick().finally(() => { if (!stopped) loop(); }); }, opts.intervalMs);
  };
  loop();
  return {
    settled: () => new Promise((r) => waiters.push(r)),
    async stop() {
      stopped = true;
      clearTimeout(timer);
      await running;
    },
  };
}

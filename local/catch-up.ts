/**
 * Nothing lost across a crash of the embedded stack. Its queues live in memory (fauxqs), so a crash
 * or a stop loses every queued and in-flight task. Instead of a second, durable queue, two small
 * files beside the data directory:
 *
 * - a journal of accepted uploads: the S3 stand-in appends each object-created event to it,
 *   synchronously, before the upload is answered, so an upload its client saw succeed is in it;
 * - the time the stack was last idle (no event being forwarded, intake and tier queues empty, in
 *   flight included). Each time it is idle, the journal is cut back to the events since.
 *
 * On start, a catch-up pass sends each journalled object through the router's own decisions
 * (backfill mode): untagged images are enqueued again, tagged ones are skipped by their marker,
 * deleted or overwritten ones are dropped (a newer upload has its own entry). Its cost is one ranged
 * GET per upload since the stack was last idle, whatever the bucket's size. With no record at all
 * (the first start on an existing folder), the pass lists the whole bucket once instead.
 */
import { appendFileSync, existsSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { mkdir, readFile, rename, writeFile } from 'node:fs/promises';
import { dirname } from 'node:path';
import { backfillObject, emptyReport, runBackfill, TaskBatcher, type BackfillReport } from '../pipeline/backfill.ts';
import { mapLimit } from '../pipeline/concurrency.ts';
import type { ObjectCreated } from '../pipeline/events.ts';
import type { Counters, Logger } from '../pipeline/log.ts';
import type { ModelCatalog } from '../pipeline/models.ts';
import type { MessageQueue, ObjectStore } from '../pipeline/ports.ts';
import { makeRouter } from '../pipeline/router.ts';
import type { TagIndex } from '../pipeline/tag-index.ts';
import type { TiersFile } from '../tiers/schema.ts';

/** One accepted upload, as the journal keeps it. */
export interface JournalEntry {
  /** When it was accepted (ms since the epoch). */
  t: number;
  object: ObjectCreated;
}

export interface UploadJournal {
  /** Synchronous on purpose: the entry is on disk before the upload is answered. */
  append(object: ObjectCreated): void;
  /** The latest entry of each object. */
  entries(): JournalEntry[];
  /** Drop the entries accepted before `t` (synchronously, so no append interleaves). */
  keepSince(t: number): void;
}

export function uploadJournal(path: string): UploadJournal {
  const read = (): JournalEntry[] =>
    existsSync(path)
      ? readFileSync(path, 'utf8')
          .split('\n')
          .filter(Boolean)
          .flatMap((l) => {
            try {
              return [JSON.parse(l) as JournalEntry];
            } catch {
              return [];
            } // a line cut short by a crash
          })
      : [];
  return {
    append(object) {
      appendFileSync(path, `${JSON.stringify({ t: Date.now(), object })}\n`);
    },
    entries() {
      const latest = new Map<string, JournalEntry>();
      for (const e of read()) latest.set(`${e.object.bucket}/${e.object.key}`, e);
      return [...latest.values()];
    },
    keepSince(t) {
      const kept = read().filter((e) => e.t >= t);
      const tmp = `${path}.tmp`;
      writeFileSync(tmp, kept.map((e) => `${JSON.stringify(e)}\n`).join(''));
      renameSync(tmp, path);
    },
  };
}

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
export function watchIdle(opts: {
  state: SettledState;
  journal?: UploadJournal;
  isIdle: () => Promise<boolean>;
  paused: () => boolean;
  intervalMs: number;
  log: Logger;
}): IdleWatcher {
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
      opts.journal?.keepSince(checkedAt);
      for (const w of waiters) w(at);
      waiters = [];
    } catch (err) {
      opts.log.log('warn', 'idle check failed', { error: String(err) });
    }
  };
  const loop = () => {
    timer = setTimeout(() => {
      running = tick().finally(() => {
        if (!stopped) loop();
      });
    }, opts.intervalMs);
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

/** The start-up catch-up: what it decided, from when, and how long it took. */
export interface CatchUpResult {
  since?: Date;
  report: BackfillReport;
  seconds: number;
}

/**
 * One catch-up pass: the journalled uploads since the stack was last idle (one ranged GET each),
 * or, with no record of an idle moment, the whole bucket once; each through the router's backfill
 * decisions, tasks sent in batches. Undefined when aborted (the next start does it again).
 */
export async function catchUpOnce(
  deps: {
    state: SettledState;
    journal: UploadJournal;
    store: ObjectStore;
    queues: Record<string, MessageQueue>;
    tiers: TiersFile;
    /** What index-only tiers have tagged (pipeline/tag-index.ts). */
    index?: TagIndex;
    models: Pick<ModelCatalog, 'marker'>;
    log: Logger;
    counters: Counters;
    bucket: string;
  },
  signal: AbortSignal,
): Promise<CatchUpResult | undefined> {
  const since = await deps.state.read();
  const started = performance.now();
  const batcher = new TaskBatcher(deps.queues);
  const { store, queues, tiers, models, index, log, counters } = deps;
  const router = makeRouter({ store, queues, tiers, models, index, log, counters, sink: (t) => batcher.add(t) });
  const filter = { mode: 'stale' as const };
  let report: BackfillReport;
  if (since) {
    report = emptyReport();
    await mapLimit(deps.journal.entries(), 16, async ({ object }) => {
      if (signal.aborted) return;
      report.listed++;
      await backfillObject(router, { key: object.key, eTag: object.eTag ?? '', size: object.size ?? 0 }, report, {
        bucket: object.bucket,
        filter,
      });
    });
    await batcher.flush();
    report.complete = !signal.aborted;
  } else {
    // No record (a folder from before this mechanism, or made by hand): the whole bucket, once.
    report = await runBackfill({ store, router, batcher, counters }, { bucket: deps.bucket, filter, signal });
  }
  if (signal.aborted) return undefined;
  const result = { since, report, seconds: (performance.now() - started) / 1000 };
  log.log('info', 'caught up', {
    since: since?.toISOString() ?? 'the beginning',
    listed: report.listed,
    enqueued: report.enqueued,
    skipped: report.skipped,
    seconds: result.seconds,
  });
  return result;
}

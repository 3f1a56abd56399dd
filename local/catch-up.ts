/**
 * Nothing lost across a crash of the embedded stack. Its queues live in memory (fauxqs), so a crash
 * or a stop loses every queued and in-flight task. Instead of a second, durable queue, two small
 * records beside the data directory:
 *
 * - a journal of accepted uploads (a folder of segments): the S3 stand-in appends each
 *   object-created event to it, synchronously, before the upload is answered, so an upload its
 *   client saw succeed is in it. A segment is deleted whole once the stack was idle after its last
 *   entry, or, under steady uploads (never idle), once each upload in it is confirmed settled (the
 *   router's backfill decision would not enqueue it again: tagged, overwritten, deleted, or in a
 *   dead-letter queue). So the journal stays as small as the work in flight, and trimming is an
 *   unlink, never a rewrite of a long file;
 * - the time the stack was last idle (no event being forwarded, intake and tier queues empty, in
 *   flight included); its presence says the journal covers everything since.
 *
 * On start, a catch-up pass sends each journalled object through the router's own decisions
 * (backfill mode): untagged images are enqueued again, tagged ones are skipped by their marker,
 * deleted or overwritten ones are dropped (a newer upload has its own entry). Its cost is one ranged
 * GET per unsettled upload, whatever the bucket's size. With no record at all (the first start on an
 * existing folder), the pass lists the whole bucket once instead, journalling what it enqueues. A
 * pass that fails (the stand-in answering errors) is retried by the stack with backoff.
 */
import { messageOf } from '../base/errors.ts';
import { closeSync, existsSync, mkdirSync, openSync, readdirSync, renameSync, statSync, writeSync } from 'node:fs';
import { mkdir, readFile, rename, unlink, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { backfillObject, emptyReport, runBackfill, TaskBatcher, type BackfillReport } from '../pipeline/backfill.ts';
import { mapLimit } from '../pipeline/concurrency.ts';
import type { ObjectCreated } from '../pipeline/events.ts';
import type { Counters, Logger } from '../pipeline/log.ts';
import type { ModelCatalog } from '../pipeline/models.ts';
import type { MessageQueue, ObjectStore } from '../pipeline/ports.ts';
import { makeRouter } from '../pipeline/router.ts';
import type { TagIndex } from '../pipeline/tag-index.ts';
import type { Task } from '../pipeline/task.ts';
import type { TiersFile } from '../tiers/schema.ts';

/** One accepted upload, as the journal keeps it. */
export interface JournalEntry {
  /** When it was accepted (ms since the epoch). */
  t: number;
  object: ObjectCreated;
}

/** What the journal holds now (for the status log and the benchmark). */
export interface JournalStats {
  segments: number;
  bytes: number;
  lines: number;
}

export interface UploadJournal {
  /** Synchronous on purpose: the entry is on disk before the upload is answered. */
  append(object: ObjectCreated): void;
  /** The latest entry of each object, across every segment. */
  entries(): Promise<JournalEntry[]>;
  /**
   * The stack was idle at `t`: every upload accepted before it is settled. Drops each segment whose
   * entries all precede `t` (the open one is sealed first). Unlinks only: never blocks appends.
   */
  trimIdle(t: number): Promise<number>;
  /**
   * Drops each sealed segment once every entry in it is confirmed settled (`settled`: the router
   * would not enqueue it again). Entries are checked at most `budget` per call, oldest segment
   * first; segments younger than `minAgeMs` wait (their uploads are still on their way).
   */
  trimConfirmed(settled: (e: JournalEntry) => Promise<boolean>, o?: { budget?: number; minAgeMs?: number }): Promise<number>;
  stats(): JournalStats;
  close(): void;
}

interface Segment {
  seq: number;
  path: string;
  lines: number;
  bytes: number;
  /** When its first and last entries were appended (ms). */
  firstT: number;
  lastT: number;
  sealed: boolean;
  /** Entries not yet confirmed settled (loaded at its first check). */
  unconfirmed?: JournalEntry[];
}

const SEGMENT = /^(\d{10})\.jsonl$/;

/** Parse a segment's text; a line cut short by a crash (the last one) is skipped, not fatal. */
export function parseJournal(text: string): JournalEntry[] {
  return text
    .split('\n')
    .filter(Boolean)
    .flatMap((l) => {
      try {
        const e = JSON.parse(l) as JournalEntry;
        return typeof e?.t === 'number' && e.object?.bucket && e.object.key ? [e] : [];
      } catch {
        return [];
      }
    });
}

const latestOfEach = (entries: JournalEntry[]) => {
  const latest = new Map<string, JournalEntry>();
  for (const e of entries) latest.set(`${e.object.bucket}/${e.object.key}`, e);
  return [...latest.values()];
};

/**
 * The journal of accepted uploads: a folder of segments (`0000000001.jsonl`, …). Appends go to the
 * open segment, which is sealed after `maxLines` entries or `maxAgeMs`; a sealed segment is deleted
 * whole once the stack was idle after its last entry, or once each of its uploads is confirmed
 * settled. Under steady uploads the stack is never idle, yet the journal stays bounded by what is
 * unsettled, and trimming is an unlink, never a rewrite. A new process always opens a new segment,
 * so a line a crash cut short is never glued to the next one. `legacyFile` (the single-file journal
 * of earlier versions) is taken over as the oldest segment.
 */
export function uploadJournal(dir: string, o: { legacyFile?: string; maxLines?: number; maxAgeMs?: number } = {}): UploadJournal {
  const maxLines = o.maxLines ?? 2000;
  const maxAgeMs = o.maxAgeMs ?? 10_000;
  mkdirSync(dir, { recursive: true });
  const segments: Segment[] = [];
  const seqs = readdirSync(dir)
    .map((f) => SEGMENT.exec(f)?.[1])
    .filter((s): s is string => !!s)
    .map(Number)
    .sort((a, b) => a - b);
  let nextSeq = (seqs.at(-1) ?? 0) + 1;
  const segPath = (seq: number) => join(dir, `${String(seq).padStart(10, '0')}.jsonl`);
  const known = (seq: number): Segment => {
    const path = segPath(seq);
    const { size, mtimeMs } = statSync(path);
    return { seq, path, lines: 0, bytes: size, firstT: 0, lastT: mtimeMs, sealed: true };
  };
  if (o.legacyFile && existsSync(o.legacyFile)) {
    // Taken over before anything else is written: its entries count as the oldest.
    const seq = nextSeq++;
    renameSync(o.legacyFile, segPath(seq));
    seqs.push(seq);
  }
  for (const seq of seqs) segments.push(known(seq));
  let open: (Segment & { fd: number }) | undefined;
  const seal = () => {
    if (!open) return;
    closeSync(open.fd);
    open.sealed = true;
    open = undefined;
  };
  const drop = async (s: Segment) => {
    const i = segments.indexOf(s);
    if (i < 0) return;
    segments.splice(i, 1);
    await unlink(s.path).catch((err) => (err.code === 'ENOENT' ? undefined : Promise.reject(err)));
  };
  return {
    append(object) {
      const t = Date.now();
      if (open && (open.lines >= maxLines || t - open.firstT >= maxAgeMs)) seal();
      if (!open) {
        const seq = nextSeq++;
        const path = segPath(seq);
        open = { seq, path, lines: 0, bytes: 0, firstT: t, lastT: t, sealed: false, fd: openSync(path, 'a') };
        segments.push(open);
      }
      const line = `${JSON.stringify({ t, object })}\n`;
      writeSync(open.fd, line);
      open.lines++;
      open.bytes += Buffer.byteLength(line);
      open.lastT = t;
    },
    async entries() {
      const all: JournalEntry[] = [];
      for (const s of [...segments]) {
        const text = await readFile(s.path, 'utf8').catch((err) => (err.code === 'ENOENT' ? '' : Promise.reject(err)));
        all.push(...parseJournal(text));
      }
      return latestOfEach(all);
    },
    async trimIdle(t) {
      if (open && open.lastT < t) seal();
      const done = segments.filter((s) => s.sealed && s.lastT < t);
      for (const s of done) await drop(s);
      return done.length;
    },
    async trimConfirmed(settled, { budget = 200, minAgeMs = 5_000 } = {}) {
      const now = Date.now();
      if (open && now - open.firstT >= maxAgeMs) seal();
      let dropped = 0;
      for (const s of segments.filter((x) => x.sealed && now - x.lastT >= minAgeMs)) {
        if (budget <= 0) break;
        s.unconfirmed ??= latestOfEach(parseJournal(await readFile(s.path, 'utf8').catch(() => '')));
        const batch = s.unconfirmed.slice(0, budget);
        budget -= batch.length;
        const ok = await mapLimit(batch, 4, (e) => settled(e).catch(() => false));
        const confirmed = new Set(batch.filter((_, i) => ok[i]));
        // Unconfirmed ones go to the back: a stuck upload does not hold the others' checks.
        s.unconfirmed = [...s.unconfirmed.slice(batch.length), ...batch.filter((e) => !confirmed.has(e))];
        if (!s.unconfirmed.length) {
          await drop(s);
          dropped++;
        }
      }
      return dropped;
    },
    stats() {
      return {
        segments: segments.length,
        bytes: segments.reduce((n, s) => n + s.bytes, 0),
        lines: segments.reduce((n, s) => n + s.lines, 0),
      };
    },
    close: seal,
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
 * that everything modified before that time (less a margin) is settled and drop the journal's
 * segments before it; if not idle, drop the segments whose uploads `confirm` finds settled.
 */
export function watchIdle(opts: {
  state: SettledState;
  journal?: UploadJournal;
  /** Whether a journalled upload is settled (the router would not enqueue it again). */
  confirm?: (e: JournalEntry) => Promise<boolean>;
  isIdle: () => Promise<boolean>;
  paused: () => boolean;
  intervalMs: number;
  log: Logger;
}): IdleWatcher {
  let stopped = false;
  let waiters: ((at: Date) => void)[] = [];
  let timer: NodeJS.Timeout | undefined;
  let running: Promise<void> = Promise.resolve();
  const trimmed = (how: string, segments: number, started: number) =>
    opts.log.log('debug', 'journal trimmed', { how, segments, ms: performance.now() - started, ...opts.journal?.stats() });
  const tick = async () => {
    if (stopped || opts.paused()) return;
    const checkedAt = Date.now();
    try {
      if (!(await opts.isIdle())) {
        if (opts.journal && opts.confirm) {
          const started = performance.now();
          const dropped = await opts.journal.trimConfirmed(opts.confirm);
          if (dropped) trimmed('confirmed', dropped, started);
        }
        return;
      }
      const at = new Date(checkedAt - MARGIN_MS);
      await opts.state.write(at);
      if (opts.journal) {
        const started = performance.now();
        const dropped = await opts.journal.trimIdle(checkedAt);
        if (dropped) trimmed('idle', dropped, started);
      }
      for (const w of waiters) w(at);
      waiters = [];
    } catch (err) {
      opts.log.log('warn', 'idle check failed', { error: messageOf(err) });
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
 * One catch-up pass: the journalled uploads (one ranged GET each), or, with no record of an idle
 * moment, the whole bucket once (what it enqueues is journalled, and then the record is written, so
 * the next start reads the journal only); each through the router's backfill decisions, tasks sent
 * in batches. Undefined when aborted; throws when an upload could not be decided (the stack retries).
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
  const startedAt = Date.now();
  const batcher = new TaskBatcher(deps.queues);
  const { store, queues, tiers, models, index, log, counters, journal } = deps;
  const sink = (t: Task) => {
    // A listing's tasks are journalled: a crash before they are done finds them in the journal.
    if (!since) journal.append({ bucket: t.bucket, key: t.key, eTag: t.eTag, size: t.size, kind: 'Put' });
    return batcher.add(t);
  };
  const router = makeRouter({ store, queues, tiers, models, index, log, counters, sink });
  const filter = { mode: 'stale' as const };
  let report: BackfillReport;
  if (since) {
    report = emptyReport();
    await mapLimit(await journal.entries(), 16, async ({ object }) => {
      if (signal.aborted) return;
      report.listed++;
      try {
        await backfillObject(router, { key: object.key, eTag: object.eTag ?? '', size: object.size ?? 0 }, report, {
          bucket: object.bucket,
          filter,
        });
      } catch (err) {
        report.errors++;
        if (report.errorSamples.length < 10) report.errorSamples.push(`${object.key}: ${messageOf(err)}`);
      }
    });
    await batcher.flush();
    report.complete = !signal.aborted;
  } else {
    // No record (a folder from before this mechanism, or made by hand): the whole bucket, once.
    report = await runBackfill({ store, router, batcher, counters }, { bucket: deps.bucket, filter, signal });
  }
  if (signal.aborted) return undefined;
  if (report.errors) {
    throw new Error(`${report.errors} object(s) could not be decided (${report.errorSamples.slice(0, 3).join('; ')})`);
  }
  // From here on every upload is in the journal: the next start reads it, not the bucket.
  if (!since) await deps.state.write(new Date(startedAt - MARGIN_MS));
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

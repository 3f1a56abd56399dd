/**
 * Backfill: tag what is already in a bucket, through the same router core live uploads take (tier
 * rules, dimension reads, marker checks), at a controlled rate, resumably.
 *
 * - The listing is streamed page by page (1,000 keys; the next page is fetched while this one is
 *   decided): memory does not grow with the bucket.
 * - Cheap filters use the listing alone (last-modified window, archived storage classes, folder
 *   markers); the router decides the rest from one ranged GET per object.
 * - Tasks are sent in batches of 10 per tier queue, with the FIFO deduplication id of live uploads.
 * - Keys are decided `concurrency` at a time, continuously across chunks and pages.
 * - A checkpoint (the last key such that every key up to it is done) is written as each chunk of
 *   keys completes, so a killed run resumes with `StartAfter` and redoes only the chunks that were
 *   in flight; the queue's deduplication drops those repeats.
 */
import { messageOf } from '../base/errors.ts';
import { mkdir, readFile, rename, writeFile } from 'node:fs/promises';
import { dirname } from 'node:path';
import type { Counters } from './log.ts';
import { ARCHIVED_STORAGE_CLASSES, type ListedObject, type ListPage, type MessageQueue, type ObjectStore } from './ports.ts';
import type { BackfillFilter } from './backfill-filter.ts';
import type { Router } from './router.ts';

export type { BackfillFilter };
import { taskMessage, type Task } from './task.ts';

export interface BackfillOptions {
  bucket: string;
  prefix?: string;
  filter: BackfillFilter;
  since?: Date;
  until?: Date;
  /** Objects decided per second at most. */
  rate?: number;
  dryRun?: boolean;
  /** Objects decided at once. Default 32. */
  concurrency?: number;
  /** Keys per checkpointed chunk. Default 100. */
  chunkSize?: number;
  /** Continue a checkpointed run: start after its last key, keep counting from its report. */
  resume?: Checkpoint;
  signal?: AbortSignal;
}

export interface BackfillReport {
  listed: number;
  /** Tasks sent (or, in a dry run, that would be). */
  enqueued: number;
  enqueuedByTier: Record<string, number>;
  /** Tier → variant → count, for the cost preview. */
  byTierVariant: Record<string, Record<string, number>>;
  /** Tier → variant → total bytes of those objects (decoding cost grows with size). */
  bytesByTierVariant?: Record<string, Record<string, number>>;
  skipped: Record<string, number>;
  errors: number;
  errorSamples: string[];
  lastKey?: string;
  complete: boolean;
}

export interface Checkpoint {
  version: 1;
  bucket: string;
  prefix: string;
  /** Identifies the flags; a checkpoint of a different run is not resumed. */
  runKey: string;
  lastKey?: string;
  report: BackfillReport;
  updatedAt: string;
}

export interface CheckpointStore {
  load(): Promise<Checkpoint | undefined>;
  save(c: Checkpoint): Promise<void>;
}

export function fileCheckpoint(path: string): CheckpointStore {
  return {
    async load() {
      try {
        return JSON.parse(await readFile(path, 'utf8')) as Checkpoint;
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
        throw new Error(`cannot read checkpoint ${path}: ${messageOf(err)}`);
      }
    },
    async save(c) {
      await mkdir(dirname(path), { recursive: true });
      await writeFile(`${path}.tmp`, JSON.stringify(c, null, 1));
      await rename(`${path}.tmp`, path);
    },
  };
}

export const runKeyOf = (o: Pick<BackfillOptions, 'bucket' | 'prefix' | 'filter' | 'since' | 'until'>) =>
  JSON.stringify([
    o.bucket,
    o.prefix ?? '',
    o.filter.mode,
    !!o.filter.retryFailed,
    o.since?.toISOString() ?? '',
    o.until?.toISOString() ?? '',
  ]);

export function emptyReport(): BackfillReport {
  return {
    listed: 0,
    enqueued: 0,
    enqueuedByTier: {},
    byTierVariant: {},
    bytesByTierVariant: {},
    skipped: {},
    errors: 0,
    errorSamples: [],
    complete: false,
  };
}

/** Listing-level reasons to leave an object alone (no request needed). */
export function listingSkip(o: ListedObject, opts: Pick<BackfillOptions, 'since' | 'until'>): string | undefined {
  if (o.key.endsWith('/') && o.size === 0) return 'folder-marker';
  if (opts.since && o.lastModified && o.lastModified < opts.since) return 'before-since';
  if (opts.until && o.lastModified && o.lastModified >= opts.until) return 'after-until';
  if (ARCHIVED_STORAGE_CLASSES.has(o.storageClass ?? '')) return 'archived';
  return undefined;
}

const inc = (m: Record<string, number>, k: string) => {
  m[k] = (m[k] ?? 0) + 1;
};

/**
 * One listed object through the listing filters and the router, counted into `report`. The one
 * per-object decision of every backfill (the CLI's and the Distributed Map's batch Lambda). Router
 * errors propagate; `throttle` runs before each router call.
 */
export async function backfillObject(
  router: Router,
  o: ListedObject,
  report: BackfillReport,
  opts: Pick<BackfillOptions, 'bucket' | 'filter' | 'since' | 'until' | 'dryRun'>,
  throttle?: () => Promise<void>,
): Promise<void> {
  const skip = listingSkip(o, opts);
  if (skip) {
    inc(report.skipped, skip);
    return;
  }
  await throttle?.();
  const event = { bucket: opts.bucket, key: o.key, eTag: o.eTag, size: o.size, kind: 'Put' as const };
  const outcome = opts.dryRun
    ? await router.decide(event, 'backfill', opts.filter)
    : await router.handleObject(event, 'backfill', opts.filter);
  if (outcome.action === 'enqueued') {
    report.enqueued++;
    inc(report.enqueuedByTier, outcome.task.tier);
    inc((report.byTierVariant[outcome.task.tier] ??= {}), outcome.task.variant);
    const bytes = ((report.bytesByTierVariant ??= {})[outcome.task.tier] ??= {});
    bytes[outcome.task.variant] = (bytes[outcome.task.variant] ?? 0) + outcome.task.size;
  } else {
    inc(report.skipped, outcome.reason);
  }
}

/** Sends tasks per tier queue in batches of 10 (SQS's batch limit). */
export class TaskBatcher {
  private readonly pending = new Map<string, Task[]>();
  constructor(private readonly queues: Record<string, MessageQueue>) {}
  async add(task: Task): Promise<void> {
    const list = this.pending.get(task.tier) ?? [];
    list.push(task);
    this.pending.set(task.tier, list);
    if (list.length >= 10) await this.flushTier(task.tier);
  }
  private async flushTier(tier: string): Promise<void> {
    const list = this.pending.get(tier);
    if (!list?.length) return;
    this.pending.set(tier, []);
    const queue = this.queues[tier];
    if (!queue) throw new Error(`no queue for tier ${tier}`);
    await queue.send(list.map(taskMessage));
  }
  async flush(): Promise<void> {
    for (const tier of this.pending.keys()) await this.flushTier(tier);
  }
}

class RateLimiter {
  private next = 0;
  constructor(private readonly perSecond?: number) {}
  async take(): Promise<void> {
    if (!this.perSecond) return;
    const now = performance.now();
    const at = Math.max(now, this.next);
    this.next = at + 1000 / this.perSecond;
    if (at > now) await new Promise((r) => setTimeout(r, at - now));
  }
}

export interface BackfillDeps {
  store: ObjectStore;
  /** The router core; give it `sink: (t) => batcher.add(t)` so sends go out in batches of 10. */
  router: Router;
  batcher?: TaskBatcher;
  checkpoint?: CheckpointStore;
  counters?: Counters;
  onProgress?: (report: BackfillReport) => void;
}

/** Add `part`'s counts into `into`. */
function mergeReport(into: BackfillReport, part: BackfillReport): void {
  into.listed += part.listed;
  into.enqueued += part.enqueued;
  into.errors += part.errors;
  for (const [k, v] of Object.entries(part.enqueuedByTier)) into.enqueuedByTier[k] = (into.enqueuedByTier[k] ?? 0) + v;
  for (const [k, v] of Object.entries(part.skipped)) into.skipped[k] = (into.skipped[k] ?? 0) + v;
  const addNested = (to: Record<string, Record<string, number>>, from: Record<string, Record<string, number>>) => {
    for (const [tier, variants] of Object.entries(from)) {
      const t = (to[tier] ??= {});
      for (const [k, v] of Object.entries(variants)) t[k] = (t[k] ?? 0) + v;
    }
  };
  addNested(into.byTierVariant, part.byTierVariant);
  addNested((into.bytesByTierVariant ??= {}), part.bytesByTierVariant ?? {});
  into.errorSamples.push(...part.errorSamples.slice(0, Math.max(0, 10 - into.errorSamples.length)));
}

/** Listed keys decided together and checkpointed together. */
interface Chunk {
  report: BackfillReport;
  lastKey?: string;
  started: number;
  decided: number;
  /** Every key of the chunk has been started. */
  closed: boolean;
}

export async function runBackfill(deps: BackfillDeps, opts: BackfillOptions): Promise<BackfillReport> {
  const runKey = runKeyOf(opts);
  // The report as of the checkpoint. Keys are decided `concurrency` at a time without draining at
  // chunk or page ends (against S3, each decision is mostly waiting), so later chunks may finish
  // first: a chunk's counts join the report, and its last key the checkpoint, once it and every
  // chunk before it are decided.
  const committed: BackfillReport = opts.resume ? { ...structuredClone(opts.resume.report), complete: false } : emptyReport();
  const concurrency = opts.concurrency ?? 32;
  const chunkSize = opts.chunkSize ?? 100;
  const maxOpenChunks = Math.max(8, 2 * Math.ceil(concurrency / chunkSize));
  const limiter = new RateLimiter(opts.rate);
  const throttle = () => limiter.take();
  const save = () =>
    opts.dryRun
      ? undefined
      : deps.checkpoint?.save({
          version: 1,
          bucket: opts.bucket,
          prefix: opts.prefix ?? '',
          runKey,
          lastKey: committed.lastKey,
          report: committed,
          updatedAt: new Date().toISOString(),
        });

  const open: Chunk[] = [];
  let committing: Promise<void> = Promise.resolve();
  const commitDecided = () => {
    committing = committing.then(async () => {
      while (open.length && open[0].closed && open[0].decided === open[0].started) {
        const chunk = open.shift()!;
        await deps.batcher?.flush(); // the chunk's tasks are on their queues before the checkpoint says so
        mergeReport(committed, chunk.report);
        committed.lastKey = chunk.lastKey;
        await save();
        deps.onProgress?.(committed);
      }
    });
    return committing;
  };

  async function decideOne(o: ListedObject, chunk: Chunk): Promise<void> {
    chunk.report.listed++;
    try {
      await backfillObject(deps.router, o, chunk.report, opts, throttle);
    } catch (err) {
      chunk.report.errors++;
      if (chunk.report.errorSamples.length < 10) chunk.report.errorSamples.push(`${o.key}: ${messageOf(err)}`);
    }
    chunk.decided++;
    if (chunk.closed && chunk.decided === chunk.started) void commitDecided().catch(() => {});
  }

  const inFlight = new Set<Promise<void>>();
  const list = (token?: string, startAfter?: string): Promise<ListPage> => {
    const page = deps.store.list(opts.bucket, { prefix: opts.prefix, continuationToken: token, startAfter, maxKeys: 1000 });
    page.catch(() => {}); // a prefetched page may never be awaited (abort); awaiting it still throws
    return page;
  };
  let chunk: Chunk | undefined;
  let nextPage: Promise<ListPage> | undefined = list(undefined, opts.resume?.lastKey);
  listing: while (nextPage) {
    const page: ListPage = await nextPage;
    // The next page is listed while this one is decided.
    nextPage = page.nextContinuationToken ? list(page.nextContinuationToken) : undefined;
    for (const o of page.objects) {
      // A slot, and no more than `maxOpenChunks` ahead of the checkpoint: one object that never
      // answers then stalls the run (as it would stall the checkpoint) instead of growing memory.
      // With nothing in flight, every open chunk is decided and a commit pass empties them.
      while (inFlight.size >= concurrency || open.length > maxOpenChunks) await (inFlight.size ? Promise.race(inFlight) : commitDecided());
      if (opts.signal?.aborted) break listing;
      if (!chunk) open.push((chunk = { report: emptyReport(), started: 0, decided: 0, closed: false }));
      const c = chunk;
      c.started++;
      c.lastKey = o.key;
      if (c.started === chunkSize) {
        c.closed = true;
        chunk = undefined;
      }
      const decision = decideOne(o, c).finally(() => inFlight.delete(decision));
      inFlight.add(decision);
    }
  }
  // A run stopped part-way leaves its last chunk open: not checkpointed, redone on resume.
  if (chunk && !opts.signal?.aborted) chunk.closed = true;
  await Promise.all(inFlight);
  await commitDecided();
  if (opts.signal?.aborted) {
    // What was done, for the caller's summary; the checkpoint keeps only whole chunks.
    const done = structuredClone(committed);
    for (const c of open) mergeReport(done, c.report);
    return done;
  }
  committed.complete = true;
  await save();
  return committed;
}

/** Resume: the start key and the counts so far, if the checkpoint belongs to this run and is unfinished. */
export async function resumePoint(
  store: CheckpointStore,
  opts: Pick<BackfillOptions, 'bucket' | 'prefix' | 'filter' | 'since' | 'until'>,
): Promise<Checkpoint | undefined> {
  const c = await store.load();
  if (!c) return undefined;
  if (c.runKey !== runKeyOf(opts))
    throw new Error(`the checkpoint belongs to another backfill (${c.runKey}); use the same bucket, prefix and flags, or remove it`);
  return c.report.complete ? undefined : c;
}

/**
 * `effitag backfill --index`: fill the tag index for objects tagged before it existed (or while it
 * was unreachable), from the tags their metadata already carries. No inference, no queue, no write
 * to the objects: a listing, one HEAD per object, and the index writes.
 */
import { messageOf } from '../base/errors.ts';
import { mapLimit } from './concurrency.ts';
import { indexFromMetadata } from './index-writes.ts';
import { StoreError, type ObjectStore } from './ports.ts';
import type { TagIndex } from './tag-index.ts';

export interface IndexBackfillReport {
  listed: number;
  /** Written to the index now. */
  indexed: number;
  /** Already in the index, by the same model and ETag. */
  unchanged: number;
  /** No current tagging in the metadata (untagged, failed, or changed since): a normal backfill tags these. */
  untagged: number;
  /** A newer version is already indexed. */
  stale: number;
  errors: number;
  errorSamples: string[];
  complete: boolean;
}

/**
 * `backfill --index --prune`: remove from the index the objects deleted while no ObjectRemoved event
 * reached it (the embedded stack was down, a notification was lost). Each key the index holds under
 * the prefix gets a HEAD; one that no longer answers is unindexed.
 */
export async function pruneIndex(
  deps: { store: ObjectStore; index: TagIndex; now?: () => Date },
  options: { bucket: string; prefix?: string; concurrency?: number; signal?: AbortSignal },
): Promise<{ checked: number; pruned: number; errors: number; errorSamples: string[] }> {
  const now = deps.now ?? (() => new Date());
  const r = { checked: 0, pruned: 0, errors: 0, errorSamples: [] as string[] };
  let cursor: string | undefined;
  do {
    if (options.signal?.aborted) break;
    const page = await deps.index.keys(options.bucket, { prefix: options.prefix, cursor });
    await mapLimit(page.keys, options.concurrency ?? 32, async (key) => {
      r.checked++;
      try {
        await deps.store.head({ bucket: options.bucket, key });
      } catch (err) {
        if (!(err instanceof StoreError && err.kind === 'not-found')) {
          r.errors++;
          if (r.errorSamples.length < 5) r.errorSamples.push(`${key}: ${messageOf(err)}`);
          return;
        }
        if ((await deps.index.remove(options.bucket, key, now())) > 0) r.pruned++;
      }
    });
    cursor = page.cursor;
  } while (cursor);
  return r;
}

export async function indexExisting(
  deps: { store: ObjectStore; index: TagIndex; now?: () => Date },
  options: {
    bucket: string;
    prefix?: string;
    since?: Date;
    until?: Date;
    concurrency?: number;
    signal?: AbortSignal;
    onProgress?: (r: IndexBackfillReport) => void;
  },
): Promise<IndexBackfillReport> {
  const now = deps.now ?? (() => new Date());
  const r: IndexBackfillReport = {
    listed: 0,
    indexed: 0,
    unchanged: 0,
    untagged: 0,
    stale: 0,
    errors: 0,
    errorSamples: [],
    complete: false,
  };
  let token: string | undefined;
  do {
    if (options.signal?.aborted) return r;
    const page = await deps.store.list(options.bucket, { prefix: options.prefix, continuationToken: token });
    const objects = page.objects.filter(
      (o) =>
        (!options.since || (o.lastModified && o.lastModified >= options.since)) &&
        (!options.until || (o.lastModified && o.lastModified < options.until)),
    );
    await mapLimit(objects, options.concurrency ?? 32, async (o) => {
      const ref = { bucket: options.bucket, key: o.key };
      try {
        const head = await deps.store.head(ref);
        const put = await indexFromMetadata(deps.index, ref, head, now);
        if (put.status === 'indexed') r.indexed++;
        else if (put.status === 'unchanged') r.unchanged++;
        else if (put.status === 'stale') r.stale++;
        else r.untagged++;
      } catch (err) {
        r.errors++;
        if (r.errorSamples.length < 5) r.errorSamples.push(`${o.key}: ${messageOf(err)}`);
      }
    });
    r.listed += page.objects.length;
    options.onProgress?.(r);
    token = page.nextContinuationToken;
  } while (token);
  r.complete = true;
  return r;
}

/**
 * Lambda handler: one batch of a Step Functions Distributed Map backfill. The map lists the bucket
 * (ItemReader: ListObjectsV2) and hands batches of keys here; each key goes through the same router
 * core as live uploads and `effitag backfill`, with the backfill's filter. Returns the batch's counts;
 * the counters also go to CloudWatch (EMF, Function=backfill) for the dashboard.
 */
import { s3Markers } from '../pipeline/aws/markers.ts';
import { deployed, type Deployed } from '../pipeline/aws/wiring.ts';
import { backfillObject, emptyReport, TaskBatcher } from '../pipeline/backfill.ts';
import { mapLimit } from '../pipeline/concurrency.ts';
import { Counters, jsonLogger } from '../pipeline/log.ts';
import { makeRouter, type BackfillFilter } from '../pipeline/router.ts';

/**
 * What the Distributed Map passes: S3 listing items and the execution's input. The S3 ItemReader
 * gives `Etag` (quoted) and `LastModified` in epoch seconds.
 */
export interface BatchEvent {
  Items: { Key: string; Etag?: string; ETag?: string; Size?: number; LastModified?: number | string; StorageClass?: string }[];
  BatchInput: { bucket: string; filter?: BackfillFilter; since?: string | null; until?: string | null };
}

export interface BatchResult {
  listed: number;
  enqueued: number;
  skipped: Record<string, number>;
}

const log = jsonLogger({ base: { component: 'backfill' } });

/** Epoch seconds (the ItemReader's form) or an ISO date; seconds read as milliseconds would be 1970. */
export function lastModifiedOf(value: number | string | undefined): Date | undefined {
  if (value === undefined || value === '') return undefined;
  return typeof value === 'number' || /^\d+(\.\d+)?$/.test(value) ? new Date(Number(value) * 1000) : new Date(value);
}
let ready: Promise<Deployed> | undefined;

export async function handler(event: BatchEvent): Promise<BatchResult> {
  ready ??= (async () => deployed())().catch((err) => {
    ready = undefined;
    throw err;
  });
  const { s3, store, queues, config, index } = await ready;
  // Markers learned afresh per batch (one manifest read per model it meets): a backfill started
  // right after publishing must not trust a warm instance's "not published" from a minute ago.
  const markers = s3Markers(s3, config.weightsLocation);
  const tiers = config.tiers;
  const counters = new Counters();
  const batcher = new TaskBatcher(queues);
  const router = makeRouter({ store, queues, tiers, models: markers, index, counters, log, sink: (t) => batcher.add(t) });
  const input = event.BatchInput;
  const opts = {
    bucket: input.bucket,
    filter: input.filter ?? { mode: 'stale' as const },
    since: input.since ? new Date(input.since) : undefined,
    until: input.until ? new Date(input.until) : undefined,
  };
  const report = emptyReport();
  // Transient errors throw: the map retries the whole batch (tasks are deduplicated by the FIFO queues).
  await mapLimit(event.Items, 32, async (item) => {
    report.listed++;
    const listed = {
      key: item.Key,
      eTag: (item.ETag ?? item.Etag ?? '').replace(/"/g, ''),
      size: item.Size ?? 0,
      lastModified: lastModifiedOf(item.LastModified),
      storageClass: item.StorageClass,
    };
    await backfillObject(router, listed, report, opts);
  });
  const result: BatchResult = { listed: report.listed, enqueued: report.enqueued, skipped: report.skipped };
  await batcher.flush();
  counters.inc('backfill.listed', result.listed);
  counters.inc('backfill.enqueued', result.enqueued);
  const emf = counters.emfDelta({ Function: 'backfill' });
  if (emf) process.stdout.write(`${emf}\n`);
  return result;
}

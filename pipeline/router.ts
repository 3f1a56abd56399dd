/**
 * The router: S3 events in, tagging tasks out, one per new object version, to the queue of the tier
 * that object belongs to. Pure core: `makeRouter({ store, queues, tiers, models })`; the Lambda
 * handler (functions/router.ts) and the embedded stack feed it SQS message bodies.
 *
 * Per object: drop our own write-back (a Copy event of an object already carrying the current model
 * marker), read the image header with one ranged GET (dimensions, metadata — never the whole object),
 * route by the tier rules, choose the variant by size, and send the task. Duplicate deliveries of one
 * event get the same FIFO deduplication id (its sequencer is part of it), so the queue keeps one; a
 * new upload of the same bytes has its own.
 */
import { messageOf } from '../base/errors.ts';
import { imageSize } from 'image-size';
import { sniffFormat } from '../inference/image-format.ts';
import { chooseVariant } from '../tiers/choose.ts';
import { routeObject } from '../tiers/route.ts';
import { modelsFor, type Tier, type TiersFile } from '../tiers/schema.ts';
import { backfillDrop, indexedState, taggingInIndex, type BackfillDrop, type BackfillFilter } from './backfill-filter.ts';
import { mapLimit } from './concurrency.ts';
import { tierSpaces } from './index-writes.ts';
import { parseEventBody, type ObjectCreated, type ObjectRemoved } from './events.ts';
import { Counters, silentLogger, type Logger } from './log.ts';
import { KEYS, markerModels, markerParts } from './marker.ts';
import { currentMarker, isPublished, weightsFix, type Markers } from './models.ts';
import { StoreError, type MessageQueue, type ObjectHead, type ObjectStore, type VectorIndex } from './ports.ts';
import type { TagIndex } from './tag-index.ts';
import { revisionOf, taskMessage, type Task } from './task.ts';

export type { BackfillFilter };

export type DropReason =
  | 'own-write-back'
  | 'gone'
  | 'changed'
  | 'unreadable-sse-c'
  | 'test-event'
  | 'not-an-image'
  | 'other-tier'
  /** The model its tier chose has no published weights yet: not enqueued (a backfill catches it up once they are). */
  | 'waiting-for-weights'
  | BackfillDrop;

const IMAGE_EXTENSIONS = /\.(jpe?g|jfif|png|webp|gif|tiff?|avif|heic|heif)$/i;

/**
 * Does an object claim to be an image (by its name or Content-Type)? Objects that claim to be but are
 * not (a text file named .jpg) get their failure recorded; other files are left untouched, so a
 * bucket's PDFs and JSON are never rewritten.
 */
export function claimsToBeImage(key: string, contentType?: string): boolean {
  return IMAGE_EXTENSIONS.test(key) || /^image\//i.test(contentType ?? '');
}

/** Header bytes read to find dimensions; JPEGs with large EXIF blocks get a second, larger read. */
export const HEADER_BYTES = 64 * 1024;
const SECOND_HEADER_BYTES = 512 * 1024;

export interface RouterDeps {
  store: ObjectStore;
  /** The queue of each tier, by tier name. */
  queues: Record<string, MessageQueue>;
  tiers: TiersFile;
  /** Which model is current for a variant, and whether it is published yet (`refresh`). */
  models: Markers;
  /** Where tasks go; default: the tier's queue, one message each. Backfills batch their sends here. */
  sink?: (task: Task) => Promise<void>;
  /** The tag index: ObjectRemoved events delete an object's entries. */
  index?: TagIndex;
  /** Image embeddings: ObjectRemoved events delete an object's vector too (from every space). */
  vectors?: VectorIndex;
  log?: Logger;
  counters?: Counters;
  now?: () => Date;
}

/** What the router's stages share. */
export type RouterContext = Required<Omit<RouterDeps, 'sink' | 'index' | 'vectors'>> & Pick<RouterDeps, 'sink' | 'index' | 'vectors'>;

export type RouteOutcome =
  | { object: ObjectCreated; action: 'enqueued'; task: Task }
  | { object: ObjectCreated; action: 'dropped'; reason: DropReason; tier?: string; variant?: string };

export interface Router {
  /** Route every object in one message body. Throws on transient failures (the message is retried). */
  handleBody(body: string, source?: Task['source']): Promise<RouteOutcome[]>;
  handleObject(object: ObjectCreated, source?: Task['source'], filter?: BackfillFilter): Promise<RouteOutcome>;
  /** Decide without sending (backfill dry runs). */
  decide(object: ObjectCreated, source?: Task['source'], filter?: BackfillFilter): Promise<RouteOutcome>;
}

/**
 * Is this marker current for its own models? (Markers are `<model>@<weights hash>`, joined by `+`
 * for a tagging by several: every part must be its model's current one.)
 */
export function isCurrentMarker(models: RouterContext['models'], marker: string): boolean {
  try {
    const names = markerModels(marker);
    return markerParts(marker).every((part, i) => models.marker(names[i]) === part);
  } catch {
    return false;
  }
}

/**
 * The object's head and first bytes, with one ranged GET (If-Match on the event's ETag). A Copy
 * event of an object already carrying the current marker is our own metadata write-back: a HEAD
 * recognises it without reading any bytes (`bytes` undefined).
 */
export async function readHeader(ctx: RouterContext, object: ObjectCreated): Promise<{ head: ObjectHead; bytes?: Uint8Array }> {
  const ref = { bucket: object.bucket, key: object.key, versionId: object.versionId };
  if (object.size === 0) return { head: await ctx.store.head(ref), bytes: new Uint8Array(0) };
  if (object.kind === 'Copy') {
    const head = await ctx.store.head(ref);
    const marker = head.metadata[KEYS.model];
    // Markers are learned lazily: learn this one's model first (only the tiers' own models).
    for (const model of marker ? markerModels(marker) : []) if (ctx.tiers.models.includes(model)) await isPublished(ctx.models, model);
    if (marker && isCurrentMarker(ctx.models, marker)) return { head, bytes: undefined };
  }
  return ctx.store.getRange(ref, 0, HEADER_BYTES - 1, object.kind === 'Copy' ? undefined : object.eTag);
}

/**
 * What an object's tagging is, as the backfill filters read it: its metadata, or the index's record
 * where the index holds it (a tier that writes back to the index only; an object whose user metadata
 * left no room for tags): pipeline/backfill-filter.ts.
 */
async function taggedState(
  ctx: RouterContext,
  object: ObjectCreated,
  head: ObjectHead,
  tier: Tier,
  current: string,
): Promise<Record<string, string>> {
  if (!ctx.index || !taggingInIndex(tier.writeBack, head, current)) return head.metadata;
  return indexedState(await ctx.index.get(object.bucket, object.key), head, tier.writeBack);
}

/** Width × height from an image header, EXIF rotation applied; undefined when unreadable. */
export function imageDimensions(bytes: Uint8Array): { width: number; height: number } | undefined {
  try {
    const d = imageSize(bytes);
    if (!d.width || !d.height) return undefined;
    // EXIF orientations 5–8 rotate by 90°.
    return (d.orientation ?? 1) >= 5 ? { width: d.height, height: d.width } : { width: d.width, height: d.height };
  } catch {
    return undefined;
  }
}

/** A read that failed on an object that is gone, changed or SSE-C: dropped (with its reason); anything else rethrown. */
function unreadableDrop(ctx: RouterContext, object: ObjectCreated, err: unknown): RouteOutcome {
  if (err instanceof StoreError && (err.kind === 'not-found' || err.kind === 'precondition')) {
    // Deleted, or overwritten since the event: the newer version has its own event.
    const reason = err.kind === 'not-found' ? 'gone' : 'changed';
    ctx.counters.inc(`router.dropped.${reason}`);
    ctx.log.log('info', 'event dropped', { bucket: object.bucket, key: object.key, reason });
    return { object, action: 'dropped', reason };
  }
  if (err instanceof StoreError && err.kind === 'unreadable') {
    // SSE-C: no retry can read it and no copy can record it on the object, so it is recorded
    // here (log and metric), once, instead of cycling into the DLQ.
    ctx.counters.inc('router.dropped.unreadable-sse-c');
    ctx.log.log('warn', 'cannot tag: object unreadable without its customer-provided key', {
      bucket: object.bucket,
      key: object.key,
      error: err.message,
    });
    return { object, action: 'dropped', reason: 'unreadable-sse-c' };
  }
  throw err;
}

/**
 * Decide one object: drop our own write-back, route by the tier rules, choose the variant by size,
 * apply a backfill's filter, and return the task (not sent).
 */
export async function decideObject(
  ctx: RouterContext,
  object: ObjectCreated,
  source: Task['source'] = 'upload',
  filter?: BackfillFilter,
): Promise<RouteOutcome> {
  let header: { head: ObjectHead; bytes?: Uint8Array };
  try {
    header = await readHeader(ctx, object);
  } catch (err) {
    return unreadableDrop(ctx, object, err);
  }
  const { head, bytes } = header;
  if (!bytes) {
    ctx.counters.inc('router.dropped.own-write-back');
    return { object, action: 'dropped', reason: 'own-write-back' };
  }
  const route = routeObject(ctx.tiers, { bucket: object.bucket, key: object.key, metadata: head.metadata });
  const tier = ctx.tiers.tiers[route.tier];
  let dims = imageDimensions(bytes);
  if (!dims && bytes.length === HEADER_BYTES && head.contentLength > HEADER_BYTES) {
    dims = imageDimensions((await ctx.store.getRange(object, 0, SECOND_HEADER_BYTES - 1, head.eTag)).bytes);
  }
  // Unreadable headers still go to the worker, which records the failure on the object.
  const choice = dims ? chooseVariant(tier, dims.width, dims.height, ctx.tiers.resolutionTolerance) : chooseVariant(tier, 1, 1);

  const drop = (reason: DropReason): RouteOutcome => {
    ctx.counters.inc(`router.dropped.${reason}`);
    ctx.log.log('debug', 'event dropped', { bucket: object.bucket, key: object.key, reason, source });
    return { object, action: 'dropped', reason, tier: route.tier, variant: choice.variant };
  };
  const isImage = sniffFormat(bytes.subarray(0, 32)) !== undefined;
  // Not an image and not pretending to be one: nothing to tag, nothing to record.
  if (!isImage && !claimsToBeImage(object.key, head.contentType)) return drop('not-an-image');
  if (source === 'backfill') {
    if (filter?.onlyTier && route.tier !== filter.onlyTier) return drop('other-tier');
    // Backfills leave non-images alone even when named like images (a live upload records the failure).
    if (!isImage) return drop('not-an-image');
  }
  const names = modelsFor(tier, choice.variant);
  // Every model the tier tags with must be published (ImageNet's and a custom one: both, or it waits).
  let model: string | undefined;
  for (const m of names) if (!model && !(await isPublished(ctx.models, m))) model = m;
  if (model) {
    // Deployed before its weights were published (the README's order): the object waits, untagged,
    // instead of failing into a DLQ; a backfill after publishing finds it (`weights publish --backfill`).
    ctx.counters.inc('router.dropped.waiting-for-weights');
    ctx.counters.inc(`router.waiting.${route.tier}`);
    ctx.log.log(source === 'backfill' ? 'debug' : 'warn', 'waiting for weights: not enqueued', {
      bucket: object.bucket,
      key: object.key,
      tier: route.tier,
      model,
      weights: ctx.models.location,
      fix: weightsFix(ctx.models.location, model),
      source,
    });
    return { object, action: 'dropped', reason: 'waiting-for-weights', tier: route.tier, variant: choice.variant };
  }
  if (source === 'backfill') {
    const current = currentMarker(ctx.models, names);
    const reason = backfillDrop(await taggedState(ctx, object, head, tier, current), current, filter ?? { mode: 'stale' });
    if (reason) return drop(reason);
  }
  const task: Task = {
    v: 1,
    bucket: object.bucket,
    key: object.key,
    eTag: head.eTag,
    versionId: object.versionId ?? head.versionId,
    // The upload this task answers (pipeline/task.ts): re-uploads of the same bytes are new uploads.
    ...revisionOf(object, head),
    size: head.contentLength,
    tier: route.tier,
    variant: choice.variant,
    ...(dims ?? {}),
    source,
    enqueuedAt: ctx.now().toISOString(),
  };
  return { object, action: 'enqueued', task };
}

/** Send a decided task: to the sink (backfills) or its tier's queue, deduplicated by the FIFO queue. */
export async function sendTask(ctx: RouterContext, task: Task): Promise<void> {
  if (ctx.sink) {
    await ctx.sink(task);
  } else {
    const queue = ctx.queues[task.tier];
    if (!queue) throw new Error(`no queue for tier ${task.tier}`);
    await queue.send([taskMessage(task)]);
  }
  ctx.counters.inc(`router.enqueued.${task.tier}`);
  ctx.log.log(task.source === 'backfill' ? 'debug' : 'info', 'enqueued', {
    bucket: task.bucket,
    key: task.key,
    tier: task.tier,
    variant: task.variant,
    width: task.width,
    height: task.height,
    source: task.source,
  });
}

/**
 * A removed object's index entries go, unless the key still answers: in a versioned bucket, deleting
 * an older version fires the same event while the current one stays; a delete marker makes the key
 * answer 404, so the object leaves searches. The index also ignores a removal older than what it
 * holds (a re-upload after the delete). A failure throws, so the event is retried.
 */
export async function unindex(ctx: RouterContext, removed: ObjectRemoved): Promise<void> {
  if (!ctx.index && !ctx.vectors) {
    ctx.counters.inc('router.removed.no-index');
    return;
  }
  try {
    await ctx.store.head({ bucket: removed.bucket, key: removed.key });
    ctx.counters.inc('router.removed.still-there');
    return;
  } catch (err) {
    if (!(err instanceof StoreError && err.kind === 'not-found')) throw err;
  }
  const removedAt = removed.eventTime ? new Date(removed.eventTime) : ctx.now();
  const entries = ctx.index ? await ctx.index.remove(removed.bucket, removed.key, removedAt) : 0;
  // Its vector goes from every model's space (whichever tagged it); a failure throws: the event is retried.
  if (ctx.vectors)
    for (const space of tierSpaces(ctx.tiers, ctx.models)) await ctx.vectors.remove(space, [{ bucket: removed.bucket, key: removed.key }]);
  ctx.counters.inc('router.removed');
  ctx.log.log('info', 'removed from the index', { bucket: removed.bucket, key: removed.key, entries });
}

export function makeRouter(deps: RouterDeps): Router {
  const ctx: RouterContext = {
    ...deps,
    log: deps.log ?? silentLogger,
    counters: deps.counters ?? new Counters(),
    now: deps.now ?? (() => new Date()),
  };
  const handleObject: Router['handleObject'] = async (object, source = 'upload', filter) => {
    const outcome = await decideObject(ctx, object, source, filter);
    if (outcome.action === 'enqueued') await sendTask(ctx, outcome.task);
    return outcome;
  };
  return {
    handleObject,
    decide: (object, source, filter) => decideObject(ctx, object, source, filter),
    async handleBody(body, source = 'upload') {
      const parsed = parseEventBody(body);
      if (parsed.type === 'test') {
        ctx.counters.inc('router.dropped.test-event');
        return [];
      }
      if (parsed.type === 'unrecognised') {
        // Not retryable: log loudly and let the caller delete it (or DLQ it after N receives).
        throw Object.assign(new Error(`unrecognised event body: ${parsed.reason}`), { permanent: true });
      }
      const outcomes: RouteOutcome[] = [];
      for (const object of parsed.objects) outcomes.push(await handleObject(object, source));
      for (const removed of parsed.removed ?? []) await unindex(ctx, removed);
      return outcomes;
    },
  };
}

/**
 * One batch of intake messages, as an SQS event source delivers it (the router Lambda, the embedded
 * stack's intake loop): messages routed concurrently, each on its own. Returns the ids to retry
 * (transient failures). A body that is not an S3 event is logged and counts as done: retrying it
 * cannot help.
 */
export async function routeBatch(
  router: Router,
  messages: readonly { id: string; body: string }[],
  log: Logger = silentLogger,
): Promise<string[]> {
  const retry: string[] = [];
  await mapLimit(messages, 10, async (m) => {
    try {
      await router.handleBody(m.body);
    } catch (err) {
      const permanent = (err as { permanent?: boolean }).permanent === true;
      log.log(permanent ? 'error' : 'warn', 'routing failed', { messageId: m.id, error: messageOf(err), permanent });
      if (!permanent) retry.push(m.id);
    }
  });
  return retry;
}

/**
 * The worker's rules, as named stages over a small context. Each stage is a plain function of
 * (context, input) → output, testable with in-memory ports (test/support/memory-ports.ts);
 * `pipeline/worker.ts` composes them into a batch (`handle`) and a long-polling loop (`run`).
 *
 *   parseMessages  → poison bodies and duplicates out, tasks in
 *   prepareTask    → download (If-Match on the task's ETag), skip what is archived or already
 *                    tagged by the current model, decode under byte and pixel limits
 *   inferPrepared  → the engine, grouped by model; a tier tagging with ImageNet and a custom
 *                    model runs the custom one as a head on the ImageNet pass's features when it is
 *                    head-only on the same weights (one pass), else as a second pass
 *   writeResults   → tags onto the objects (metadata / object tags), then the tag index and
 *                    the image embeddings (the vector index)
 *   deadLetter     → a failure on its last receive goes to the DLQ with its reason
 *   settle         → done messages deleted, the rest retried with backoff
 *
 * A message is deleted only once its object carries the result (or the reason it cannot).
 */
import { messageOf } from '../base/errors.ts';
import { topK, type Prediction } from '../inference/engine.ts';
import { decodeImage, ImageError, type DecodedImage } from '../inference/image.ts';
import { perceptualHash } from '../inference/perceptual-hash.ts';
import { IMAGENET_LABELS, labelsFor } from '../model/labels.ts';
import { modelsFor, type Tier, type TiersFile } from '../tiers/schema.ts';
import { mapLimit } from './concurrency.ts';
import type { Counters, Logger } from './log.ts';
import { indexedState, taggingInIndex } from './backfill-filter.ts';
import { combinedMarker, KEYS } from './marker.ts';
import { currentMarker, headProbabilities, type DenseHead, type ModelCatalog } from './models.ts';
import {
  isArchived,
  MAX_COPY_BYTES,
  StoreError,
  type DeadLetterQueue,
  type MessageQueue,
  type ObjectHead,
  type ObjectStore,
  type QueueMessage,
  type VectorIndex,
} from './ports.ts';
import { failureEntry, indexedObject, indexFromMetadata, tierSpaces, unitVector, writeVectors, type VectorWrite } from './index-writes.ts';
import type { TagIndex } from './tag-index.ts';
import { objectVersionIdentity, parseTask, taskMessage, type Task } from './task.ts';
import { writeFailure, writeTagged } from './writeback.ts';

export interface WorkerContext {
  store: ObjectStore;
  queue: MessageQueue;
  tiers: TiersFile;
  models: ModelCatalog;
  log: Logger;
  counters: Counters;
  now: () => Date;
  /** Object operations in flight at once (downloads, write-backs). */
  concurrency: number;
  /** Visibility before a failed message is retried: base · 2^(receives − 1), capped at 15 minutes. */
  retryBaseSeconds: number;
  /** Where a message goes, with its reason, when it fails on its last receive. */
  deadLetter?: DeadLetterQueue;
  /** The tag index, written with every result where the stack has one (required by `writeBack: index` tiers). */
  index?: TagIndex;
  /** Image embeddings, one space per model marker (absent: none are stored; `embeddings: false` tiers store none). */
  vectors?: VectorIndex;
}

export type Outcome =
  /** `note`: where the result is when not (all) on the object, e.g. the index only. */
  | { status: 'tagged'; tags: number; note?: string }
  | { status: 'recorded-failure'; reason: string }
  | { status: 'skipped'; reason: string }
  | { status: 'retry'; reason: string }
  | { status: 'poison'; reason: string }
  /** Failed on its last receive: moved to the dead-letter queue with its reason. */
  | { status: 'dead-lettered'; reason: string };

export interface MessageResult {
  message: QueueMessage;
  task?: Task;
  outcome: Outcome;
}

/** Outcomes after which the message is done (deleted). */
export const isDone = (o: Outcome): boolean =>
  o.status === 'tagged' || o.status === 'recorded-failure' || o.status === 'skipped' || o.status === 'dead-lettered';

/** Message attributes of a dead-lettered message. */
export const DEAD_LETTER_ATTRIBUTES = {
  reason: 'effitag-reason',
  receives: 'effitag-receives',
  source: 'effitag-source-queue',
  at: 'effitag-dead-lettered-at',
} as const;

/** A message ready for the engine. */
export interface Prepared {
  message: QueueMessage;
  task: Task;
  tier: Tier;
  head: ObjectHead;
  /** Decoded at the first model's resolution. */
  image: DecodedImage;
  /** A two-model tier's second model, where it takes another resolution: the image decoded at it. */
  second?: DecodedImage;
}

export interface PreparedBatch {
  results: MessageResult[];
  ready: Prepared[];
}

export interface Inferred {
  results: MessageResult[];
  /** `vector`: the image's L2-normalized pooled features, where its tier stores embeddings. */
  items: {
    p: Prepared;
    predictions: Prediction[];
    /** A two-model tier's custom tags (its second model's), beside ImageNet's `predictions`. */
    labels?: Prediction[];
    /** The object's marker: every model it was tagged by. */
    marker: string;
    imagenet: boolean;
    vector?: Float32Array;
    /** The vector's space: its (first) model's marker. */
    space?: string;
  }[];
}

const refOf = (t: Task) => ({ bucket: t.bucket, key: t.key, versionId: t.versionId });

/**
 * A storage failure, classified: gone, changed (a newer upload, which has its own event), archived
 * or SSE-C objects are done with; denied and anything else is retried.
 */
export function storeOutcome(err: unknown, during: string): Outcome {
  if (err instanceof StoreError) {
    if (err.kind === 'precondition') return { status: 'skipped', reason: 'changed' };
    if (err.kind === 'not-found') return { status: 'skipped', reason: 'gone' };
    if (err.kind === 'archived') return { status: 'skipped', reason: 'archived' };
    if (err.kind === 'unreadable') return { status: 'skipped', reason: 'unreadable-sse-c' };
    if (err.kind === 'denied') return { status: 'retry', reason: `access denied ${during}` };
  }
  return { status: 'retry', reason: `${during}: ${messageOf(err)}` };
}

/**
 * Parse each body; a body that is not a task is poison, a second message for the same object version
 * a duplicate (two uploads of the same bytes in one batch need one inference and one write-back).
 */
export function parseMessages(messages: readonly QueueMessage[]): {
  results: MessageResult[];
  tasks: { message: QueueMessage; task: Task }[];
} {
  const results: MessageResult[] = [];
  const tasks: { message: QueueMessage; task: Task }[] = [];
  const seen = new Set<string>();
  for (const message of messages) {
    let task: Task;
    try {
      task = parseTask(message.body);
    } catch (err) {
      results.push({ message, outcome: { status: 'poison', reason: messageOf(err) } });
      continue;
    }
    const id = objectVersionIdentity(task);
    if (seen.has(id)) {
      results.push({ message, task, outcome: { status: 'skipped', reason: 'duplicate' } });
      continue;
    }
    seen.add(id);
    tasks.push({ message, task });
  }
  return { results, tasks };
}

/** Record a permanent failure on the object (unless it changed since); the message is done either way. */
export async function recordFailure(
  ctx: WorkerContext,
  task: Task,
  tier: Tier,
  head: ObjectHead | undefined,
  reason: string,
  detail: string,
): Promise<Outcome> {
  try {
    const h = head ?? (await ctx.store.head(refOf(task)));
    if (h.eTag !== task.eTag) return { status: 'skipped', reason: 'changed' };
    const fixed = {
      model: currentMarker(ctx.models, modelsFor(tier, task.variant)),
      at: ctx.now().toISOString(),
      etag: task.eTag,
      reason: `${reason}: ${detail}`,
    };
    const written = await writeFailure(ctx.store, refOf(task), h, tier.writeBack, fixed);
    // The index lists it with its reason too (the gallery's status view; the only record in index mode).
    const indexed = ctx.index ? await ctx.index.put(failureEntry(refOf(task), h, fixed, ctx.now)) : undefined;
    return written || indexed?.status === 'indexed' || indexed?.status === 'unchanged'
      ? { status: 'recorded-failure', reason }
      : { status: 'skipped', reason: `${reason} (no room to record it)` };
  } catch (err) {
    return storeOutcome(err, `recording ${reason}`);
  }
}

/** One task up to the engine's door: its outcome if it ends here, else the decoded image. */
export async function prepareTask(ctx: WorkerContext, message: QueueMessage, task: Task): Promise<MessageResult | Prepared> {
  const ended = (outcome: Outcome): MessageResult => ({ message, task, outcome });
  const tier = ctx.tiers.tiers[task.tier];
  if (!tier) return ended({ status: 'poison', reason: `unknown tier ${task.tier}` });
  const modelIds = modelsFor(tier, task.variant);
  if (task.size > MAX_COPY_BYTES && (tier.writeBack === 'metadata' || tier.writeBack === 'both'))
    return ended({ status: 'skipped', reason: 'over-5GiB' });
  const { maxBytes, maxPixels } = tier.limits;
  if (task.size > maxBytes)
    return ended(await recordFailure(ctx, task, tier, undefined, 'too-large', `${task.size} bytes, limit ${maxBytes}`));
  if (tier.writeBack === 'index') {
    // Nothing on the object says it is tagged: the index does.
    if (!ctx.index) return ended({ status: 'retry', reason: `tier ${task.tier} writes back to the index, and this worker has none` });
    try {
      const held = await ctx.index.get(task.bucket, task.key);
      if (held && held.eTag === task.eTag && held.marker === currentMarker(ctx.models, modelIds))
        return ended({ status: 'skipped', reason: 'already-tagged' });
    } catch (err) {
      return ended({ status: 'retry', reason: `reading the index: ${messageOf(err)}` });
    }
  }
  let head: ObjectHead, bytes: Uint8Array;
  try {
    ({ head, bytes } = await ctx.store.get(refOf(task), { ifMatch: task.eTag, maxBytes }));
  } catch (err) {
    if (err instanceof StoreError && err.kind === 'too-large')
      return ended(await recordFailure(ctx, task, tier, undefined, 'too-large', err.message));
    return ended(storeOutcome(err, 'downloading'));
  }
  if (isArchived(head)) return ended({ status: 'skipped', reason: 'archived' });
  let marker: string;
  try {
    marker = currentMarker(ctx.models, modelIds);
  } catch (err) {
    return ended({ status: 'retry', reason: messageOf(err) });
  }
  if (ctx.index && tier.writeBack !== 'index' && taggingInIndex(tier.writeBack, head, marker)) {
    // No room for tags on the object: the index holds this upload's tagging, if it was done.
    try {
      const state = indexedState(await ctx.index.get(task.bucket, task.key), head, tier.writeBack);
      if (state[KEYS.model] === marker && state[KEYS.etag] === task.eTag) return ended({ status: 'skipped', reason: 'already-tagged' });
    } catch (err) {
      return ended({ status: 'retry', reason: `reading the index: ${messageOf(err)}` });
    }
  }
  if (head.metadata[KEYS.model] === marker && head.metadata[KEYS.etag] === task.eTag) {
    // Tagged already; a retry after the index write failed still owes the index its entries.
    if (ctx.index)
      try {
        await indexFromMetadata(ctx.index, refOf(task), head, ctx.now);
      } catch (err) {
        return ended({ status: 'retry', reason: `indexing: ${messageOf(err)}` });
      }
    return ended({ status: 'skipped', reason: 'already-tagged' });
  }
  try {
    const model = await ctx.models.load(modelIds[0]);
    // A second model that is a head on the first one's weights needs no graph of its own.
    const shared = modelIds[1] !== undefined && ctx.models.sharedHead ? await ctx.models.sharedHead(modelIds[1], modelIds[0]) : undefined;
    const other = modelIds[1] !== undefined && !shared ? await ctx.models.load(modelIds[1]) : undefined;
    if (model.manifest.variant !== task.variant)
      return ended({
        status: 'retry',
        reason: `model ${modelIds[0]} was trained on ${model.manifest.variant}, not ${task.variant}`,
      });
    const image = await decodeImage(bytes, model.resolution, { maxBytes, maxPixels });
    // A second model on another base takes its own resolution (a head-only one shares the first's pass).
    const second =
      other && other.resolution !== model.resolution ? await decodeImage(bytes, other.resolution, { maxBytes, maxPixels }) : undefined;
    return { message, task, tier, head, image, ...(second ? { second } : {}) };
  } catch (err) {
    if (err instanceof ImageError) return ended(await recordFailure(ctx, task, tier, head, err.reason, err.message));
    return ended({ status: 'retry', reason: `loading model or decoding: ${messageOf(err)}` });
  }
}

/** Parse a batch and prepare its tasks, `concurrency` at a time. */
export async function prepareBatch(ctx: WorkerContext, messages: readonly QueueMessage[]): Promise<PreparedBatch> {
  const { results, tasks } = parseMessages(messages);
  const ready: Prepared[] = [];
  for (const r of await mapLimit(tasks, ctx.concurrency, ({ message, task }) => prepareTask(ctx, message, task))) {
    if ('outcome' in r) results.push(r);
    else ready.push(r);
  }
  return { results, ready };
}

/**
 * The engine on a prepared batch, one call per model (variant or custom model); the tier's top-k above
 * its minimum confidence (the top one always). A tier tagging with ImageNet and a custom model: the
 * ImageNet pass first; the custom model then runs as a dense head on that pass's pooled features where
 * it is head-only on the same weights (`ModelCatalog.sharedHead`: one inference per image), else as a
 * pass of its own (two inferences).
 */
export async function inferPrepared(ctx: WorkerContext, batch: PreparedBatch): Promise<Inferred> {
  const results = [...batch.results];
  const items: Inferred['items'] = [];
  const failed = new Map<Prepared, string>();
  const fail = (group: readonly Prepared[], err: unknown) => {
    for (const p of group) if (!failed.has(p)) failed.set(p, `inference: ${messageOf(err)}`);
  };
  const ids = new Map(batch.ready.map((p) => [p, modelsFor(p.tier, p.task.variant)]));
  // Each two-model item's shared head, where its custom model has one on the first model's weights.
  const heads = new Map<Prepared, DenseHead>();
  for (const p of batch.ready) {
    const [first, second] = ids.get(p)!;
    if (!second || !ctx.models.sharedHead) continue;
    try {
      const head = await ctx.models.sharedHead(second, first);
      if (head) heads.set(p, head);
    } catch (err) {
      fail([p], err);
    }
  }
  const byModel = (which: 0 | 1, wanted: (p: Prepared) => boolean) => {
    const groups = new Map<string, Prepared[]>();
    for (const p of batch.ready) {
      const id = ids.get(p)![which];
      if (id !== undefined && wanted(p) && !failed.has(p)) groups.set(id, [...(groups.get(id) ?? []), p]);
    }
    return groups;
  };
  // First pass: every item's first model.
  const first = new Map<Prepared, { probabilities: Float32Array; features?: Float32Array; labels: readonly string[]; marker: string }>();
  for (const [id, group] of byModel(0, () => true)) {
    try {
      const model = await ctx.models.load(id);
      const labels = labelsFor(model.manifest);
      const images = group.map((p) => p.image);
      // Embeddings come out of the same inference (the export's second output), when any tier here
      // wants them; so does a shared head's input.
      const wanted = !!ctx.vectors && group.some((p) => p.tier.embeddings);
      const needFeatures = wanted || group.some((p) => heads.has(p));
      const withFeatures = needFeatures && !!model.classifyWithFeatures;
      // An engine without the features output (a test double, a custom engine): tags only, counted;
      // a shared head then runs as a pass of its own.
      if (wanted && !withFeatures) ctx.counters.inc('vectors.unsupported', group.length);
      if (!withFeatures) for (const p of group) heads.delete(p);
      const outputs: { probabilities: Float32Array; features?: Float32Array }[] = withFeatures
        ? await model.classifyWithFeatures!(images)
        : (await model.classify(images)).map((probabilities) => ({ probabilities }));
      ctx.counters.inc(`inferred.${id}`, group.length);
      const marker = ctx.models.marker(id);
      for (const [i, p] of group.entries()) first.set(p, { ...outputs[i], labels, marker });
    } catch (err) {
      fail(group, err);
    }
  }
  // Second model: on the first pass's features (shared head), else a pass of its own.
  const second = new Map<Prepared, { probabilities: Float32Array; labels: readonly string[]; marker: string }>();
  for (const [id, group] of byModel(1, (p) => first.has(p))) {
    try {
      const marker = ctx.models.marker(id);
      const own = group.filter((p) => !heads.has(p));
      for (const p of group) {
        const head = heads.get(p);
        if (head) second.set(p, { probabilities: headProbabilities(head, first.get(p)!.features!), labels: head.labels, marker });
      }
      if (group.length > own.length) ctx.counters.inc(`inferred.shared-head.${id}`, group.length - own.length);
      if (own.length) {
        const model = await ctx.models.load(id);
        const labels = labelsFor(model.manifest);
        const outputs = await model.classify(own.map((p) => p.second ?? p.image));
        ctx.counters.inc(`inferred.${id}`, own.length);
        for (const [i, p] of own.entries()) second.set(p, { probabilities: outputs[i], labels, marker });
      }
    } catch (err) {
      fail(group, err);
    }
  }
  const top = (p: Prepared, probabilities: Float32Array, labels: readonly string[]) =>
    topK(probabilities, p.tier.topK, labels).filter((x, rank) => rank === 0 || x.probability >= p.tier.minConfidence);
  for (const p of batch.ready) {
    const a = first.get(p);
    const b = second.get(p);
    const reason = failed.get(p);
    if (reason || !a || (ids.get(p)!.length > 1 && !b)) {
      results.push({ message: p.message, task: p.task, outcome: { status: 'retry', reason: reason ?? 'inference: no output' } });
      continue;
    }
    const features = p.tier.embeddings ? a.features : undefined;
    const vector = features && unitVector(features);
    if (features && !vector) ctx.counters.inc('vectors.degenerate');
    items.push({
      p,
      predictions: top(p, a.probabilities, a.labels),
      ...(b ? { labels: top(p, b.probabilities, b.labels) } : {}),
      marker: combinedMarker([a.marker, ...(b ? [b.marker] : [])]),
      imagenet: a.labels === IMAGENET_LABELS,
      ...(vector ? { vector, space: a.marker } : {}),
    });
  }
  return { results, items };
}

/** Write each result back onto its object (If-Match on the ETag that was read), then into the index. */
export async function writeResults(ctx: WorkerContext, inferred: Inferred): Promise<MessageResult[]> {
  const results = [...inferred.results];
  const vectorWrites: VectorWrite[] = [];
  await mapLimit(inferred.items, ctx.concurrency, async ({ p, predictions, labels, marker, imagenet, vector, space }) => {
    const at = ctx.now().toISOString();
    // From the pixels already decoded for the model: no second decode (well under 1 ms).
    const phash = perceptualHash(p.image);
    let outcome: Outcome;
    try {
      const w = await writeTagged(
        ctx.store,
        refOf(p.task),
        p.head,
        p.tier.writeBack,
        predictions,
        { model: marker, at, etag: p.task.eTag, phash },
        labels,
      );
      const tags = predictions.length + (labels?.length ?? 0);
      if (w.written) outcome = { status: 'tagged', tags: tags - w.tagsDropped, ...(w.note ? { note: w.note } : {}) };
      else if (ctx.index) {
        // No room on the object (the user's 2 KB of metadata, or 10 user tags): the index holds
        // the tags, and the backfill reads the index for such an object (pipeline/backfill-filter.ts).
        outcome = { status: 'tagged', tags, note: `${w.reason}: no room on the object, tagged in the index only` };
        ctx.counters.inc(`tagged.index-only.${w.reason}`);
      } else {
        // No index to hold the tags: the failure is recorded where it fits, else logged as a warning.
        const reason =
          w.reason === 'metadata-budget' ? 'no room for one tag beside the user metadata (2 KB)' : 'no room for object tags (10 user tags)';
        outcome = await recordFailure(ctx, p.task, p.tier, p.head, w.reason, reason);
      }
    } catch (err) {
      outcome = storeOutcome(err, 'writing back');
    }
    if (outcome.status === 'tagged' && ctx.index) {
      try {
        const put = await ctx.index.put(
          indexedObject(refOf(p.task), p.head, { marker, at, predictions, imagenet, phash, ...(labels ? { labels } : {}) }, ctx.now),
        );
        ctx.counters.inc(`index.${put.status}`);
      } catch (err) {
        // Retried: the object already carries the tags, so the retry indexes them from its metadata.
        outcome = { status: 'retry', reason: `indexing: ${messageOf(err)}` };
      }
    }
    // The tagged version's embedding, in its model's space (or, on a tier without embeddings, none).
    if (outcome.status === 'tagged' && ctx.vectors)
      vectorWrites.push({ ref: { bucket: p.task.bucket, key: p.task.key }, eTag: p.task.eTag, space: vector ? space : undefined, vector });
    results.push({ message: p.message, task: p.task, outcome });
  });
  if (ctx.vectors && vectorWrites.length) {
    // A vector that cannot be written loses no tags: the object is tagged and its message done; the
    // failure is logged and counted (`vectors.failed`), and `effitag backfill --embeddings` adds it later.
    // Retrying the message instead would find the object tagged and skip it, vector still missing.
    const { stored, failed } = await writeVectors(ctx.vectors, vectorWrites, tierSpaces(ctx.tiers, ctx.models));
    if (stored) ctx.counters.inc('vectors.stored', stored);
    for (const f of failed) {
      ctx.counters.inc('vectors.failed', f.refs.length);
      ctx.log.log('warn', `vector index ${f.action} failed; the tags are kept`, { space: f.space, objects: f.refs.length, error: f.error });
    }
  }
  return results;
}

/** A failure on its last receive goes to the DLQ now, with its reason (else SQS moves it, reasonless). */
export async function deadLetter(ctx: WorkerContext, results: MessageResult[]): Promise<void> {
  const dl = ctx.deadLetter;
  if (!dl) return;
  for (const r of results) {
    if (isDone(r.outcome) || r.message.receiveCount < dl.maxReceives) continue;
    const failed = r.outcome as Extract<Outcome, { status: 'retry' | 'poison' }>;
    const reason = `${failed.status}: ${failed.reason}`;
    try {
      await dl.queue.send([
        {
          body: r.message.body,
          groupId: r.message.groupId ?? (r.task ? taskMessage(r.task).groupId : 'poison'),
          // One id per source message: a delivery again after a refused delete collapses in the
          // DLQ; two messages that shared a deduplication id (sent over 5 minutes apart) do not.
          deduplicationId: `dlq-${r.message.id}`.slice(0, 128),
          attributes: {
            [DEAD_LETTER_ATTRIBUTES.reason]: reason.slice(0, 1000),
            [DEAD_LETTER_ATTRIBUTES.receives]: String(r.message.receiveCount),
            [DEAD_LETTER_ATTRIBUTES.source]: ctx.queue.name,
            [DEAD_LETTER_ATTRIBUTES.at]: ctx.now().toISOString(),
          },
        },
      ]);
      r.outcome = { status: 'dead-lettered', reason };
    } catch (err) {
      ctx.log.log('warn', 'could not dead-letter; the redrive policy will', { error: messageOf(err) });
    }
  }
}

function logResult(ctx: WorkerContext, r: MessageResult): void {
  const o = r.outcome;
  ctx.counters.inc(o.status === 'tagged' ? 'tagged' : `${o.status}.${o.reason}`);
  const fields = {
    bucket: r.task?.bucket,
    key: r.task?.key,
    tier: r.task?.tier,
    variant: r.task?.variant,
    receives: r.message.receiveCount,
    ...o,
  };
  const level =
    o.status === 'dead-lettered'
      ? 'error'
      : o.status === 'poison' ||
          o.status === 'retry' ||
          o.status === 'recorded-failure' ||
          // An outcome recorded nowhere (no index, no room on the object) is not routine.
          (o.status === 'skipped' && o.reason.includes('no room'))
        ? 'warn'
        : 'info';
  ctx.log.log(level, o.status, fields);
}

/** Dead-letter what failed for the last time, count and log every result, delete what is done, back off the rest. */
export async function settle(ctx: WorkerContext, results: MessageResult[]): Promise<void> {
  await deadLetter(ctx, results);
  for (const r of results) logResult(ctx, r);
  const finished = results.filter((r) => isDone(r.outcome)).map((r) => r.message);
  if (finished.length) await ctx.queue.delete(finished);
  for (const r of results) {
    if (isDone(r.outcome)) continue;
    const delay = Math.min(900, ctx.retryBaseSeconds * 2 ** Math.max(0, r.message.receiveCount - 1));
    await ctx.queue
      .setVisibility(r.message, delay)
      .catch((err) => ctx.log.log('warn', 'could not set visibility', { error: messageOf(err) }));
  }
}

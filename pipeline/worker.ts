/**
 * The worker: one codebase for the GPU container and the CPU Lambda tier.
 * `makeWorker({ store, queue, tiers, models })` gives
 * - `handle(messages)`: one batch, start to finish (the Lambda handler uses this), and
 * - `run()` / `stop()`: a long-polling loop that prepares the next batch (receive, download, decode)
 *   while the engine works on the current one, and on stop finishes the batch in hand and makes the
 *   prefetched messages visible again.
 *
 * Per message: parse → (dedup within the batch) → download with the ETag it was given → skip what is
 * already tagged by the current model → decode under byte and pixel limits → group by variant → infer
 * → write back → delete. A message is deleted only once its object carries the result (or the reason
 * it cannot). Transient failures leave the message for a later receive with backoff; on its last
 * receive (the queue's redrive count) the worker moves it to the DLQ itself, with the reason as a
 * message attribute, so `effitag dlq list` can say why. The redrive policy stays as the backstop.
 *
 * The long-running loop holds its messages on a lease: it receives them with `visibilitySeconds`
 * and extends that every third of it while they are in hand, so a long batch is never handed to a
 * second worker, and a worker that dies gives its messages back within one lease, not within a
 * visibility timeout sized for the longest batch.
 */
import { topK } from '../inference/engine.ts';
import { decodeImage, ImageError, type DecodedImage } from '../inference/image.ts';
import { labelsFor } from '../model/labels.ts';
import type { Tier, TiersFile } from '../tiers/schema.ts';
import { Counters, silentLogger, type Logger } from './log.ts';
import { KEYS } from './marker.ts';
import type { ModelCatalog } from './models.ts';
import { StoreError, type MessageQueue, type ObjectHead, type ObjectStore, type QueueMessage } from './ports.ts';
import { MAX_COPY_BYTES } from './aws/s3-store.ts';
import { ARCHIVED_STORAGE_CLASSES, mapLimit } from './concurrency.ts';
import { parseTask, taskIdentity, taskMessage, type Task } from './task.ts';
import { writeFailure, writeTagged } from './writeback.ts';

export interface WorkerOptions {
  /** Messages per batch (SQS returns at most 10 per receive; larger batches take several). */
  batchSize?: number;
  waitSeconds?: number;
  /** Visibility before a failed message is retried: base · 2^(receives − 1), capped at 15 minutes. */
  retryBaseSeconds?: number;
  downloadConcurrency?: number;
  /** Where CloudWatch EMF metric lines go after each batch (stdout on Lambda/ECS); none by default. */
  emitMetrics?: (line: string) => void;
  /** Dimensions of those metrics. */
  metricDimensions?: Record<string, string>;
  /** The loop's lease on received messages (seconds), renewed every third of it; default: the queue's visibility timeout, not renewed. */
  visibilitySeconds?: number;
  /** Where a message goes, with its reason, when it fails on its last receive. */
  deadLetter?: { queue: MessageQueue; maxReceives: number };
}

export interface WorkerDeps {
  store: ObjectStore;
  queue: MessageQueue;
  tiers: TiersFile;
  models: ModelCatalog;
  log?: Logger;
  counters?: Counters;
  now?: () => Date;
  options?: WorkerOptions;
}

export type Outcome =
  | { status: 'tagged'; tags: number }
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
const done = (o: Outcome) => o.status === 'tagged' || o.status === 'recorded-failure' || o.status === 'skipped' || o.status === 'dead-lettered';

/** Message attributes of a dead-lettered message. */
export const DEAD_LETTER_ATTRIBUTES = { reason: 'effitag-reason', receives: 'effitag-receives', source: 'effitag-source-queue', at: 'effitag-dead-lettered-at' } as const;

interface Prepared {
  message: QueueMessage;
  task: Task;
  tier: Tier;
  head: ObjectHead;
  image: DecodedImage;
}

interface PreparedBatch {
  results: MessageResult[];
  ready: Prepared[];
}

export interface Worker {
  handle(messages: readonly QueueMessage[]): Promise<MessageResult[]>;
  run(): Promise<void>;
  stop(): Promise<void>;
  readonly counters: Counters;
}


export function makeWorker(deps: WorkerDeps): Worker {
  const log = deps.log ?? silentLogger;
  const counters = deps.counters ?? new Counters();
  const now = deps.now ?? (() => new Date());
  const opts = { batchSize: 8, waitSeconds: 20, retryBaseSeconds: 5, downloadConcurrency: 16, ...deps.options };
  const { store, queue, models } = deps;
  let stopping = false;
  const abort = new AbortController();
  let running: Promise<void> | undefined;

  const refOf = (t: Task) => ({ bucket: t.bucket, key: t.key, versionId: t.versionId });
  const record = (r: MessageResult) => {
    const o = r.outcome;
    counters.inc(o.status === 'tagged' ? 'tagged' : `${o.status}.${o.reason}`);
    const fields = { bucket: r.task?.bucket, key: r.task?.key, tier: r.task?.tier, variant: r.task?.variant, receives: r.message.receiveCount, ...o };
    log.log(o.status === 'dead-lettered' ? 'error' : o.status === 'poison' || o.status === 'retry' || o.status === 'recorded-failure' ? 'warn' : 'info', o.status, fields);
  };

  /** Record a permanent failure on the object; the message is done either way. */
  async function recordFailure(task: Task, tier: Tier, head: ObjectHead | undefined, reason: string, detail: string): Promise<Outcome> {
    try {
      const h = head ?? await store.head(refOf(task));
      if (h.eTag !== task.eTag) return { status: 'skipped', reason: 'changed' };
      const written = await writeFailure(store, refOf(task), h, tier.writeBack, { model: models.marker(task.variant), at: now().toISOString(), etag: task.eTag, reason: `${reason}: ${detail}` });
      return written ? { status: 'recorded-failure', reason } : { status: 'skipped', reason: `${reason} (no room to record it)` };
    } catch (err) {
      return storeOutcome(err, `recording ${reason}`);
    }
  }

  function storeOutcome(err: unknown, during: string): Outcome {
    if (err instanceof StoreError) {
      if (err.kind === 'precondition') return { status: 'skipped', reason: 'changed' };
      if (err.kind === 'not-found') return { status: 'skipped', reason: 'gone' };
      if (err.kind === 'archived') return { status: 'skipped', reason: 'archived' };
      if (err.kind === 'unreadable') return { status: 'skipped', reason: 'unreadable-sse-c' };
      if (err.kind === 'denied') return { status: 'retry', reason: `access denied ${during}` };
    }
    return { status: 'retry', reason: `${during}: ${err instanceof Error ? err.message : String(err)}` };
  }

  async function prepareOne(message: QueueMessage, task: Task): Promise<MessageResult | Prepared> {
    const tier = deps.tiers.tiers[task.tier];
    if (!tier) return { message, task, outcome: { status: 'poison', reason: `unknown tier ${task.tier}` } };
    if (task.size > MAX_COPY_BYTES && tier.writeBack !== 'tags') {
      return { message, task, outcome: { status: 'skipped', reason: 'over-5GiB' } };
    }
    if (task.size > tier.limits.maxBytes) {
      return { message, task, outcome: await recordFailure(task, tier, undefined, 'too-large', `${task.size} bytes, limit ${tier.limits.maxBytes}`) };
    }
    let head: ObjectHead, bytes: Uint8Array;
    try {
      ({ head, bytes } = await store.get(refOf(task), { ifMatch: task.eTag, maxBytes: tier.limits.maxBytes }));
    } catch (err) {
      if (err instanceof StoreError && err.kind === 'too-large') return { message, task, outcome: await recordFailure(task, tier, undefined, 'too-large', err.message) };
      return { message, task, outcome: storeOutcome(err, 'downloading') };
    }
    if (ARCHIVED_STORAGE_CLASSES.has(head.storageClass ?? '') && !/ongoing-request="false"/.test(head.restore ?? '')) {
      return { message, task, outcome: { status: 'skipped', reason: 'archived' } };
    }
    let marker: string;
    try {
      marker = models.marker(task.variant);
    } catch (err) {
      return { message, task, outcome: { status: 'retry', reason: err instanceof Error ? err.message : String(err) } };
    }
    if (head.metadata[KEYS.model] === marker && head.metadata[KEYS.etag] === task.eTag) {
      return { message, task, outcome: { status: 'skipped', reason: 'already-tagged' } };
    }
    try {
      const model = await models.load(task.variant);
      const image = await decodeImage(bytes, model.resolution, { maxBytes: tier.limits.maxBytes, maxPixels: tier.limits.maxPixels });
      return { message, task, tier, head, image };
    } catch (err) {
      if (err instanceof ImageError) return { message, task, outcome: await recordFailure(task, tier, head, err.reason, err.message) };
      return { message, task, outcome: { status: 'retry', reason: `loading model or decoding: ${err instanceof Error ? err.message : String(err)}` } };
    }
  }

  async function prepare(messages: readonly QueueMessage[]): Promise<PreparedBatch> {
    const results: MessageResult[] = [];
    const todo: { message: QueueMessage; task: Task }[] = [];
    const seen = new Set<string>();
    for (const message of messages) {
      let task: Task;
      try {
        task = parseTask(message.body);
      } catch (err) {
        results.push({ message, outcome: { status: 'poison', reason: err instanceof Error ? err.message : String(err) } });
        continue;
      }
      const id = taskIdentity(task);
      if (seen.has(id)) { results.push({ message, task, outcome: { status: 'skipped', reason: 'duplicate' } }); continue; }
      seen.add(id);
      todo.push({ message, task });
    }
    const ready: Prepared[] = [];
    for (const r of await mapLimit(todo, opts.downloadConcurrency, ({ message, task }) => prepareOne(message, task))) {
      if ('outcome' in r) results.push(r); else ready.push(r);
    }
    return { results, ready };
  }

  interface Inferred { results: MessageResult[]; items: { p: Prepared; predictions: ReturnType<typeof topK>; marker: string }[] }

  /** Run the engine on a prepared batch, grouped by variant. */
  async function infer(batch: PreparedBatch): Promise<Inferred> {
    const results = [...batch.results];
    const items: Inferred['items'] = [];
    const byVariant = new Map<string, Prepared[]>();
    for (const p of batch.ready) byVariant.set(p.task.variant, [...(byVariant.get(p.task.variant) ?? []), p]);
    for (const [variant, group] of byVariant) {
      try {
        const model = await models.load(variant);
        const labels = labelsFor(model.manifest.classes);
        const probabilities = await model.classify(group.map((p) => p.image));
        counters.inc(`inferred.${variant}`, group.length);
        const marker = models.marker(variant);
        group.forEach((p, i) => items.push({
          p, marker,
          predictions: topK(probabilities[i], p.tier.topK, labels).filter((x, rank) => rank === 0 || x.probability >= p.tier.minConfidence),
        }));
      } catch (err) {
        for (const p of group) results.push({ message: p.message, task: p.task, outcome: { status: 'retry', reason: `inference: ${err instanceof Error ? err.message : String(err)}` } });
      }
    }
    return { results, items };
  }

  /** Write results back onto the objects. */
  async function write(inferred: Inferred): Promise<MessageResult[]> {
    const results = [...inferred.results];
    await mapLimit(inferred.items, opts.downloadConcurrency, async ({ p, predictions, marker }) => {
      try {
        const w = await writeTagged(store, refOf(p.task), p.head, p.tier.writeBack, predictions, { model: marker, at: now().toISOString(), etag: p.task.eTag });
        results.push({ message: p.message, task: p.task, outcome: w.written ? { status: 'tagged', tags: predictions.length - w.tagsDropped } : { status: 'skipped', reason: w.reason } });
      } catch (err) {
        results.push({ message: p.message, task: p.task, outcome: storeOutcome(err, 'writing back') });
      }
    });
    return results;
  }

  const complete = async (batch: PreparedBatch) => write(await infer(batch));

  function emitMetrics(): void {
    if (!opts.emitMetrics) return;
    const line = counters.emfDelta(opts.metricDimensions ?? { Queue: queue.name });
    if (line) opts.emitMetrics(line);
  }

  /** A failure on its last receive goes to the DLQ now, with its reason (else SQS moves it, reasonless). */
  async function deadLetter(results: MessageResult[]): Promise<void> {
    const dl = opts.deadLetter;
    if (!dl) return;
    for (const r of results) {
      if (done(r.outcome) || r.message.receiveCount < dl.maxReceives) continue;
      const failed = r.outcome as Extract<Outcome, { status: 'retry' | 'poison' }>;
      const reason = `${failed.status}: ${failed.reason}`;
      try {
        await dl.queue.send([{
          body: r.message.body,
          groupId: r.message.groupId ?? (r.task ? taskMessage(r.task).groupId : 'poison'),
          deduplicationId: `${r.message.deduplicationId ?? r.message.id}-dlq`.slice(0, 128),
          attributes: {
            [DEAD_LETTER_ATTRIBUTES.reason]: reason.slice(0, 1000), [DEAD_LETTER_ATTRIBUTES.receives]: String(r.message.receiveCount),
            [DEAD_LETTER_ATTRIBUTES.source]: queue.name, [DEAD_LETTER_ATTRIBUTES.at]: now().toISOString(),
          },
        }]);
        r.outcome = { status: 'dead-lettered', reason };
      } catch (err) {
        log.log('warn', 'could not dead-letter; the redrive policy will', { error: String(err) });
      }
    }
  }

  async function settle(results: MessageResult[]): Promise<void> {
    for (const r of results) leases.delete(r.message.id);
    await deadLetter(results);
    for (const r of results) record(r);
    const finished = results.filter((r) => done(r.outcome)).map((r) => r.message);
    if (finished.length) await queue.delete(finished);
    for (const r of results) {
      if (done(r.outcome)) continue;
      const delay = Math.min(900, opts.retryBaseSeconds * 2 ** Math.max(0, r.message.receiveCount - 1));
      await queue.setVisibility(r.message, delay).catch((err) => log.log('warn', 'could not set visibility', { error: String(err) }));
    }
  }

  async function receiveBatch(): Promise<QueueMessage[]> {
    const messages: QueueMessage[] = [];
    while (messages.length < opts.batchSize && !stopping) {
      const got = await queue.receive({ max: opts.batchSize - messages.length, waitSeconds: messages.length ? 0 : opts.waitSeconds, visibilitySeconds: opts.visibilitySeconds, signal: abort.signal })
        .catch((err) => {
          if (stopping) return [];
          throw err;
        });
      if (got.length === 0) break;
      for (const m of got) leases.set(m.id, m);
      messages.push(...got);
    }
    return messages;
  }

  /** Messages the loop holds, by id; their lease is renewed until they are settled or released. */
  const leases = new Map<string, QueueMessage>();
  let heartbeat: NodeJS.Timeout | undefined;
  function startHeartbeat(): void {
    const lease = opts.visibilitySeconds;
    if (!lease) return;
    heartbeat = setInterval(() => {
      for (const m of leases.values()) {
        queue.setVisibility(m, lease).catch((err) => log.log('warn', 'could not renew a lease', { error: String(err) }));
      }
    }, (lease * 1000) / 3);
    heartbeat.unref();
  }

  async function release(messages: readonly QueueMessage[]): Promise<void> {
    for (const m of messages) leases.delete(m.id);
    await Promise.all(messages.map((m) => queue.setVisibility(m, 0).catch(() => {})));
    if (messages.length) log.log('info', 'released on stop', { messages: messages.length });
  }

  async function loop(): Promise<void> {
    const fetch = async () => {
      const messages = await receiveBatch();
      return { messages, prepared: await prepare(messages) };
    };
    const empty = { messages: [] as QueueMessage[], prepared: { results: [], ready: [] } as PreparedBatch };
    const fetchSafely = () => fetch().catch(async (err) => {
      log.log('error', 'receive failed', { error: err instanceof Error ? err.message : String(err) });
      await new Promise((r) => setTimeout(r, 1000));
      return empty;
    });
    let next = fetchSafely();
    // The previous batch's write-back runs while the engine works on the next batch.
    let writing: Promise<void> = Promise.resolve();
    for (;;) {
      const current = await next;
      if (stopping) {
        // Received while stopping: settle what is already decided, give the rest back.
        await writing;
        await settle(current.prepared.results);
        await release(current.prepared.ready.map((p) => p.message));
        break;
      }
      // Receive, download and decode the next batch while this one is on the engine.
      next = fetchSafely();
      if (current.messages.length) {
        const inferred = await infer(current.prepared);
        await writing;
        writing = write(inferred).then(settle).then(emitMetrics).catch((err) => {
          log.log('error', 'write-back failed', { error: err instanceof Error ? err.message : String(err) });
        });
      }
    }
  }

  return {
    counters,
    async handle(messages) {
      const results = await complete(await prepare(messages));
      await settle(results);
      emitMetrics();
      return results;
    },
    run() {
      if (!running) {
        startHeartbeat();
        running = loop().finally(() => clearInterval(heartbeat));
      }
      return running;
    },
    async stop() {
      stopping = true;
      abort.abort();
      await running?.catch(() => {});
    },
  };
}

/**
 * The worker: one codebase for the GPU container and the CPU Lambda tier.
 * `makeWorker({ store, queue, tiers, models })` gives
 * - `handle(messages)`: one batch, start to finish (the Lambda handler uses this), and
 * - `run()` / `stop()`: a long-polling loop that prepares the next batch (receive, download, decode)
 *   while the engine works on the current one, and on stop finishes the batch in hand and makes the
 *   prefetched messages visible again.
 *
 * What happens to each message is decided by the stages in `worker-stages.ts` (parse, prepare,
 * infer, write back, dead-letter, settle); this module composes them and owns the queue side.
 * Transient failures leave the message for a later receive with backoff; on its last receive (the
 * queue's redrive count) the worker moves it to the DLQ itself, with the reason as a message
 * attribute, so `effitag dlq list` can say why. The redrive policy stays as the backstop.
 *
 * The long-running loop holds its messages on a lease: it receives them with `visibilitySeconds`
 * and extends that every third of it while they are in hand, so a long batch is never handed to a
 * second worker, and a worker that dies gives its messages back within one lease, not within a
 * visibility timeout sized for the longest batch.
 */
import { messageOf } from '../base/errors.ts';
import { Counters, silentLogger, type Logger } from './log.ts';
import type { ModelCatalog } from './models.ts';
import type { MessageQueue, ObjectStore, QueueMessage, VectorIndex } from './ports.ts';
import type { TagIndex } from './tag-index.ts';
import type { TiersFile } from '../tiers/schema.ts';
import {
  inferPrepared,
  prepareBatch,
  settle,
  writeResults,
  type MessageResult,
  type PreparedBatch,
  type WorkerContext,
} from './worker-stages.ts';

export { DEAD_LETTER_ATTRIBUTES, type MessageResult, type Outcome } from './worker-stages.ts';

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
  /** The tag index (pipeline/tag-index.ts): written with every result; required by `writeBack: index` tiers. */
  index?: TagIndex;
  /** Image embeddings (pipeline/ports.ts VectorIndex): one vector per tagged object, where its tier stores them. */
  vectors?: VectorIndex;
}

export interface Worker {
  handle(messages: readonly QueueMessage[]): Promise<MessageResult[]>;
  run(): Promise<void>;
  stop(): Promise<void>;
  readonly counters: Counters;
}

/**
 * Messages the loop holds, by id, on a lease renewed every third of it until they are settled or
 * released: a long batch is never handed to a second worker.
 */
function leaseKeeper(queue: MessageQueue, log: Logger, leaseSeconds: number | undefined) {
  const held = new Map<string, QueueMessage>();
  let timer: NodeJS.Timeout | undefined;
  return {
    hold(messages: readonly QueueMessage[]) {
      for (const m of messages) held.set(m.id, m);
    },
    drop(messages: readonly QueueMessage[]) {
      for (const m of messages) held.delete(m.id);
    },
    start() {
      if (!leaseSeconds) return;
      timer = setInterval(
        () => {
          for (const m of held.values())
            queue.setVisibility(m, leaseSeconds).catch((err) => log.log('warn', 'could not renew a lease', { error: messageOf(err) }));
        },
        (leaseSeconds * 1000) / 3,
      );
      timer.unref();
    },
    stop() {
      clearInterval(timer);
    },
  };
}

export function makeWorker(deps: WorkerDeps): Worker {
  const opts = { batchSize: 8, waitSeconds: 20, retryBaseSeconds: 5, downloadConcurrency: 16, ...deps.options };
  const indexOnly = deps.tiers.indexOnlyTiers;
  if (indexOnly.length && !deps.index)
    throw new Error(`tier ${indexOnly.join(', ')} writes back to the tag index, and none is configured (EFFITAG_INDEX_TABLE)`);
  const ctx: WorkerContext = {
    store: deps.store,
    queue: deps.queue,
    tiers: deps.tiers,
    models: deps.models,
    log: deps.log ?? silentLogger,
    counters: deps.counters ?? new Counters(),
    now: deps.now ?? (() => new Date()),
    concurrency: opts.downloadConcurrency,
    retryBaseSeconds: opts.retryBaseSeconds,
    deadLetter: opts.deadLetter,
    index: deps.index,
    vectors: deps.vectors,
  };
  const { queue, log, counters } = ctx;
  const leases = leaseKeeper(queue, log, opts.visibilitySeconds);
  let stopping = false;
  const abort = new AbortController();
  let running: Promise<void> | undefined;

  const settleHeld = async (results: MessageResult[]) => {
    leases.drop(results.map((r) => r.message));
    await settle(ctx, results);
  };

  function emitMetrics(): void {
    if (!opts.emitMetrics) return;
    const line = counters.emfDelta(opts.metricDimensions ?? { Queue: queue.name });
    if (line) opts.emitMetrics(line);
  }

  async function receiveBatch(): Promise<QueueMessage[]> {
    const messages: QueueMessage[] = [];
    while (messages.length < opts.batchSize && !stopping) {
      const got = await queue
        .receive({
          max: opts.batchSize - messages.length,
          waitSeconds: messages.length ? 0 : opts.waitSeconds,
          visibilitySeconds: opts.visibilitySeconds,
          signal: abort.signal,
        })
        .catch((err) => {
          if (stopping) return [];
          throw err;
        });
      if (got.length === 0) break;
      leases.hold(got);
      messages.push(...got);
    }
    return messages;
  }

  /** Give messages back at once (on stop), so another worker takes them without waiting out a lease. */
  async function release(messages: readonly QueueMessage[]): Promise<void> {
    leases.drop(messages);
    await Promise.all(messages.map((m) => queue.setVisibility(m, 0).catch(() => {})));
    if (messages.length) log.log('info', 'released on stop', { messages: messages.length });
  }

  /** Receive, download and decode the next batch while the engine works on this one; write back behind it. */
  async function loop(): Promise<void> {
    const empty = { messages: [] as QueueMessage[], prepared: { results: [], ready: [] } as PreparedBatch };
    const fetchNext = async () => {
      try {
        const messages = await receiveBatch();
        return { messages, prepared: await prepareBatch(ctx, messages) };
      } catch (err) {
        log.log('error', 'receive failed', { error: messageOf(err) });
        await new Promise((r) => setTimeout(r, 1000));
        return empty;
      }
    };
    let next = fetchNext();
    let writing: Promise<void> = Promise.resolve();
    for (;;) {
      const current = await next;
      if (stopping) {
        // Received while stopping: settle what is already decided, give the rest back.
        await writing;
        await settleHeld(current.prepared.results);
        await release(current.prepared.ready.map((p) => p.message));
        break;
      }
      next = fetchNext();
      if (current.messages.length) {
        const inferred = await inferPrepared(ctx, current.prepared);
        await writing;
        writing = writeResults(ctx, inferred)
          .then(settleHeld)
          .then(emitMetrics)
          .catch((err) => {
            log.log('error', 'write-back failed', { error: messageOf(err) });
          });
      }
    }
  }

  return {
    counters,
    async handle(messages) {
      const results = await writeResults(ctx, await inferPrepared(ctx, await prepareBatch(ctx, messages)));
      await settleHeld(results);
      emitMetrics();
      return results;
    },
    run() {
      if (!running) {
        leases.start();
        running = loop().finally(() => leases.stop());
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

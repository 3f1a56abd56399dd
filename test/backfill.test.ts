import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { EmbeddedStack } from '../local/stack.ts';
import { lastModifiedOf } from '../functions/backfill-batch.ts';
import { fileCheckpoint, resumePoint, runBackfill, TaskBatcher, type BackfillOptions, type Checkpoint } from '../pipeline/backfill.ts';
import type { ObjectStore } from '../pipeline/ports.ts';
import { makeRouter, type BackfillFilter, type Router } from '../pipeline/router.ts';
import { makeWorker } from '../pipeline/worker.ts';
import type { Task } from '../pipeline/task.ts';
import { parseTiers, type TiersFile } from '../tiers/schema.ts';
import { gradientImage, tempDir } from './support/fixtures.ts';
import { put, startTestStack } from './support/local-stack.ts';

const TIERS = {
  version: 1,
  tiers: { main: { variants: ['b0'], compute: { target: 'lambda-cpu', memoryMb: 3538 }, engine: 'ort', batchSize: 10, minConfidence: 0 } },
  routing: { default: { tier: 'main' } },
};

describe('backfill on the embedded stack', () => {
  let stack: EmbeddedStack;
  let config: TiersFile;
  let current: string;
  const OLD = 'b0@000000000000';

  /** Everything the live path enqueued while the fixtures were uploaded is drained first. */
  async function drain(): Promise<Task[]> {
    const { queue } = stack.tierQueues.main;
    const tasks: Task[] = [];
    for (let empty = 0; empty < 2; ) {
      const got = await queue.receive({ max: 10, waitSeconds: 0, visibilitySeconds: 60 });
      if (!got.length) {
        empty++;
        await new Promise((r) => setTimeout(r, 200));
        continue;
      }
      empty = 0;
      tasks.push(...got.map((m) => JSON.parse(m.body) as Task));
      await queue.delete(got);
    }
    return tasks;
  }

  /** Run a backfill collecting the tasks in memory (the router core is the same as with queues). */
  async function collect(filter: BackfillFilter, extra: Partial<BackfillOptions> = {}, tiers: TiersFile = config) {
    const tasks: Task[] = [];
    const router = makeRouter({
      store: stack.store,
      queues: {},
      tiers,
      models: stack.models,
      sink: async (t) => {
        tasks.push(t);
      },
    });
    const report = await runBackfill({ store: stack.store, router }, { bucket: stack.bucket, prefix: 'mixed/', filter, ...extra });
    return { keys: tasks.map((t) => t.key).sort(), tiers: [...new Set(tasks.map((t) => t.tier))], report };
  }

  before(async () => {
    // No live router: the fixtures' own upload events must not enqueue them (and, through the FIFO
    // deduplication window, make the backfill's identical tasks look like duplicates).
    ({ stack, config } = await startTestStack(TIERS, { runWorkers: () => false, runRouter: false }));
    current = stack.models.marker('b0');
    const jpeg = await gradientImage(300, 260, 'jpeg', 2);
    const uploads: [string, Buffer | string, Record<string, string>?][] = [
      ['mixed/new-1.jpg', jpeg],
      ['mixed/new-2.jpg', jpeg],
      ['mixed/sub/new 3.jpg', jpeg],
      ['mixed/readme.txt', 'plain text, not an image'],
      ['mixed/data.json', '{"a":1}'],
      ['mixed/empty-folder/', ''],
      ['mixed/current.jpg', jpeg, { 'effitag-model': current, 'effitag-status': 'tagged' }],
      ['mixed/older.jpg', jpeg, { 'effitag-model': OLD, 'effitag-status': 'tagged' }],
      [
        'mixed/failed-current.jpg',
        'not really a jpeg',
        { 'effitag-model': current, 'effitag-status': 'failed', 'effitag-reason': 'undecodable' },
      ],
      ['mixed/failed-current-img.jpg', jpeg, { 'effitag-model': current, 'effitag-status': 'failed', 'effitag-reason': 'transient' }],
      ['mixed/failed-older.jpg', jpeg, { 'effitag-model': OLD, 'effitag-status': 'failed' }],
    ];
    for (const [key, body, metadata] of uploads) await put(stack, key, body, { Metadata: metadata });
  });
  after(async () => {
    await stack?.stop();
  });

  it('default (stale): untagged images and older-model markers; leaves current, failed, non-images, folders', async () => {
    const { keys, report } = await collect({ mode: 'stale' });
    assert.deepEqual(keys, ['mixed/failed-older.jpg', 'mixed/new-1.jpg', 'mixed/new-2.jpg', 'mixed/older.jpg', 'mixed/sub/new 3.jpg']);
    assert.equal(report.listed, 11);
    assert.deepEqual(report.skipped, { 'folder-marker': 1, 'not-an-image': 3, current: 0 + 1, 'failed-before': 1 });
    assert.equal(report.complete, true);
  });

  it('--only-missing: only objects without a marker', async () => {
    const { keys } = await collect({ mode: 'missing' });
    assert.deepEqual(keys, ['mixed/new-1.jpg', 'mixed/new-2.jpg', 'mixed/sub/new 3.jpg']);
  });

  it('--model-older-than: only markers from another model or weights', async () => {
    const { keys } = await collect({ mode: 'older' });
    assert.deepEqual(keys, ['mixed/failed-older.jpg', 'mixed/older.jpg']);
  });

  it('--retry-failed also takes images that failed with the current model', async () => {
    const { keys } = await collect({ mode: 'stale', retryFailed: true });
    assert.ok(keys.includes('mixed/failed-current-img.jpg'));
    assert.ok(!keys.includes('mixed/failed-current.jpg'), 'a non-image stays out even when retrying failures');
  });

  it('--since/--until filter on last-modified; --tier filters on the route', async () => {
    const future = await collect({ mode: 'stale' }, { since: new Date(Date.now() + 3600_000) });
    assert.deepEqual(future.keys, []);
    assert.equal(future.report.skipped['before-since'], 10);
    const other = await collect({ mode: 'stale', onlyTier: 'nope' });
    assert.deepEqual(other.keys, []);
  });

  it('--tier keeps exactly the objects that route to that tier', async () => {
    // The same objects under a configuration with a second tier for one folder. Outside it are 7 objects
    // named like images (the filter on tiers comes before the marker rules); inside it, one.
    const twoTiers = parseTiers({
      ...TIERS,
      tiers: { ...TIERS.tiers, sub: TIERS.tiers.main },
      routing: { default: { tier: 'main' }, rules: [{ prefix: 'mixed/sub/', tier: 'sub' }] },
    });
    const run = async (onlyTier: string) => {
      const { tiers, keys, report } = await collect({ mode: 'stale', onlyTier }, {}, twoTiers);
      return { tiers, keys, otherTier: report.skipped['other-tier'] };
    };
    assert.deepEqual(await run('sub'), { tiers: ['sub'], keys: ['mixed/sub/new 3.jpg'], otherTier: 7 });
    assert.deepEqual(await run('main'), {
      tiers: ['main'],
      keys: ['mixed/failed-older.jpg', 'mixed/new-1.jpg', 'mixed/new-2.jpg', 'mixed/older.jpg'],
      otherTier: 1,
    });
  });

  it('end to end through the queue: enqueued once, tagged by the worker, a re-run enqueues nothing new', async () => {
    const router = makeRouter({ store: stack.store, queues: {}, tiers: config, models: stack.models, sink: (t) => batcher.add(t) });
    const batcher = new TaskBatcher({ main: stack.tierQueues.main.queue });
    const opts: BackfillOptions = { bucket: stack.bucket, prefix: 'mixed/', filter: { mode: 'stale' } };
    const first = await runBackfill({ store: stack.store, router, batcher }, opts);
    assert.equal(first.enqueued, 5);
    assert.deepEqual(first.enqueuedByTier, { main: 5 });
    assert.deepEqual(first.byTierVariant, { main: { b0: 5 } });
    const { queue } = stack.tierQueues.main;
    const worker = makeWorker({ store: stack.store, queue, tiers: config, models: stack.models });
    let tagged = 0;
    for (let round = 0; round < 10 && tagged < 5; round++) {
      const results = await worker.handle(await queue.receive({ max: 10, waitSeconds: 1 }));
      tagged += results.filter((r) => r.outcome.status === 'tagged').length;
    }
    assert.equal(tagged, 5);
    const again = await runBackfill({ store: stack.store, router, batcher }, opts);
    assert.equal(again.enqueued, 0);
    assert.equal(again.skipped.current, 6);
    assert.deepEqual(await drain(), []);
  });

  it('a run killed mid-way and resumed enqueues every remaining object exactly once', async () => {
    const png = await gradientImage(64, 64, 'png', 7);
    const keys = Array.from({ length: 120 }, (_, i) => `many/${String(i).padStart(4, '0')}.png`);
    for (let i = 0; i < keys.length; i += 20) await Promise.all(keys.slice(i, i + 20).map((k) => put(stack, k, png)));

    const checkpoint = fileCheckpoint(join(await tempDir(), 'cp.json'));
    const opts: BackfillOptions = { bucket: stack.bucket, prefix: 'many/', filter: { mode: 'stale' }, chunkSize: 25, concurrency: 8 };
    const abort = new AbortController();
    let sent = 0;
    const batcher = new TaskBatcher({ main: stack.tierQueues.main.queue });
    const router = makeRouter({
      store: stack.store,
      queues: {},
      tiers: config,
      models: stack.models,
      sink: async (t) => {
        if (++sent === 60) abort.abort();
        await batcher.add(t);
      },
    });
    const killed = await runBackfill({ store: stack.store, router, batcher, checkpoint }, { ...opts, signal: abort.signal });
    assert.equal(killed.complete, false);
    const saved = await resumePoint(checkpoint, opts);
    assert.ok(saved?.lastKey && saved.lastKey < keys[60], `checkpoint before the interrupted chunk (${saved?.lastKey})`);
    const resumed = await runBackfill(
      {
        store: stack.store,
        router: makeRouter({ store: stack.store, queues: {}, tiers: config, models: stack.models, sink: (t) => batcher.add(t) }),
        batcher,
        checkpoint,
      },
      { ...opts, resume: saved },
    );
    assert.equal(resumed.complete, true);
    assert.equal(resumed.listed, 120, "the report continues the interrupted run's counts");
    const queued = (await drain()).map((t) => t.key).sort();
    assert.deepEqual(queued, keys, 'every object once: the redone chunk was deduplicated by the queue');
    assert.equal(await resumePoint(checkpoint, opts), undefined, 'a finished run leaves nothing to resume');
  });

  it('dry run: counts by tier and variant, sends nothing', async () => {
    assert.deepEqual(await drain(), []);
    // The 120 'many/' objects were enqueued above but never tagged: all would be enqueued again.
    const router = makeRouter({ store: stack.store, queues: { main: stack.tierQueues.main.queue }, tiers: config, models: stack.models });
    const report = await runBackfill(
      { store: stack.store, router },
      { bucket: stack.bucket, prefix: 'many/', filter: { mode: 'stale' }, dryRun: true },
    );
    assert.equal(report.listed, 120);
    assert.equal(report.enqueued, 120);
    assert.deepEqual(report.byTierVariant, { main: { b0: 120 } });
    // The same 64×64 PNG 120 times: the cost preview prices decoding at the objects' real size.
    const png = await gradientImage(64, 64, 'png', 7);
    assert.deepEqual(report.bytesByTierVariant, { main: { b0: 120 * png.length } });
    assert.deepEqual(await drain(), [], 'nothing was sent');
  });
});

describe('backfill scheduling (in memory)', () => {
  /** A listing of `n` keys in pages of `pageSize`, and a router that enqueues everything, one key held back. */
  function fixture(n: number, pageSize: number, heldKey: string) {
    const keys = Array.from({ length: n }, (_, i) => `k${String(i).padStart(3, '0')}`);
    const decided: string[] = [];
    let release!: () => void;
    const held = new Promise<void>((r) => {
      release = r;
    });
    const store = {
      async list(_bucket: string, o: { continuationToken?: string; startAfter?: string }) {
        const from = o.continuationToken ? Number(o.continuationToken) : o.startAfter ? keys.indexOf(o.startAfter) + 1 : 0;
        const to = Math.min(keys.length, from + pageSize);
        return {
          objects: keys.slice(from, to).map((key) => ({ key, eTag: 'e', size: 10 })),
          nextContinuationToken: to < keys.length ? String(to) : undefined,
        };
      },
    } as unknown as ObjectStore;
    const router = {
      async handleObject(object: { key: string }) {
        if (object.key === heldKey) await held;
        await new Promise((r) => setTimeout(r, 1));
        decided.push(object.key);
        return { object, action: 'enqueued', task: { tier: 'main', variant: 'b0' } };
      },
      decide: () => {
        throw new Error('unused');
      },
      handleBody: () => {
        throw new Error('unused');
      },
    } as unknown as Router;
    const saves: Checkpoint[] = [];
    const checkpoint = {
      load: async () => saves.at(-1),
      save: async (c: Checkpoint) => {
        saves.push(structuredClone(c));
      },
    };
    return { keys, decided, release, store, router, saves, checkpoint };
  }

  it('one slow key holds back the checkpoint, not the other keys; counts stay exact', async () => {
    const f = fixture(95, 30, 'k003');
    const run = runBackfill(
      { store: f.store, router: f.router, checkpoint: f.checkpoint },
      { bucket: 'b', filter: { mode: 'stale' }, chunkSize: 10, concurrency: 4 },
    );
    await waitUntil(() => f.decided.length >= 60);
    assert.ok(f.decided.includes('k050'), 'keys in later chunks and pages went on while k003 was held');
    assert.equal(f.saves.length, 0, 'no checkpoint while the first chunk is undecided');
    // Only max(8, 2·⌈concurrency/chunkSize⌉) = 8 chunks run ahead of the held one, so memory stays
    // bounded: the held chunk's 9 other keys, 7 full chunks, and the first key of the 8th = 80, exactly.
    let seen = -1;
    while (seen !== f.decided.length) {
      seen = f.decided.length;
      await new Promise((r) => setTimeout(r, 100));
    }
    assert.equal(seen, 9 + 7 * 10 + 1, 'the run stops a fixed distance ahead of the held key');
    assert.ok(f.decided.includes('k080') && !f.decided.includes('k081'));
    f.release();
    const report = await run;
    assert.equal(report.complete, true);
    assert.equal(report.listed, 95);
    assert.equal(report.enqueued, 95);
    const lastKeys = f.saves.map((c) => c.lastKey);
    assert.deepEqual(
      lastKeys.slice(0, 10),
      ['k009', 'k019', 'k029', 'k039', 'k049', 'k059', 'k069', 'k079', 'k089', 'k094'],
      'chunks checkpointed in listing order',
    );
    for (const c of f.saves.slice(0, 10)) {
      assert.equal(c.report.listed, f.keys.indexOf(c.lastKey!) + 1, `the report at ${c.lastKey} counts exactly the keys up to it`);
    }
  });

  it('a stopped run checkpoints whole chunks only, and its resume decides every other key once', async () => {
    const f = fixture(50, 20, 'none');
    const abort = new AbortController();
    const stopAt = 23;
    const router = f.router;
    const stopping = {
      ...router,
      async handleObject(o: { key: string }, ...rest: unknown[]) {
        if (o.key === f.keys[stopAt]) abort.abort();
        return (router.handleObject as (...a: unknown[]) => Promise<unknown>)(o, ...rest);
      },
    } as unknown as Router;
    const opts: BackfillOptions = { bucket: 'b', filter: { mode: 'stale' }, chunkSize: 10, concurrency: 4 };
    const stopped = await runBackfill({ store: f.store, router: stopping, checkpoint: f.checkpoint }, { ...opts, signal: abort.signal });
    assert.equal(stopped.complete, false);
    const saved = f.saves.at(-1)!;
    assert.equal(saved.lastKey, 'k019', 'the chunk in progress is not checkpointed');
    assert.equal(saved.report.listed, 20);
    const before = f.decided.length;
    const resumed = await runBackfill({ store: f.store, router: f.router, checkpoint: f.checkpoint }, { ...opts, resume: saved });
    assert.equal(resumed.complete, true);
    assert.equal(resumed.listed, 50);
    assert.deepEqual(f.decided.slice(before).sort(), f.keys.slice(20), 'the resume starts after the checkpoint');
  });
});

async function waitUntil(condition: () => boolean, timeoutMs = 5000): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() > end) throw new Error('timed out');
    await new Promise((r) => setTimeout(r, 5));
  }
}

describe('backfill Lambda input (the Distributed Map S3 ItemReader)', () => {
  it('reads LastModified as the ItemReader gives it, in epoch seconds (as milliseconds it would be January 1970)', () => {
    assert.equal(lastModifiedOf(1764662400)?.toISOString(), '2025-12-02T08:00:00.000Z');
    assert.equal(lastModifiedOf('1764662400')?.toISOString(), '2025-12-02T08:00:00.000Z');
    assert.equal(lastModifiedOf('2025-12-02T08:00:00.000Z')?.toISOString(), '2025-12-02T08:00:00.000Z');
    assert.equal(lastModifiedOf(undefined), undefined);
  });
});

/**
 * The router's and worker's rules, stage by stage, on in-memory ports (no HTTP, no engine): the loop
 * guard, markers and backfill filters, the 2 KB metadata budget, the overwrite races and the failure
 * classes. The end-to-end paths stay in pipeline.test.ts, over the embedded stack.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { makeRouter, type RouteOutcome } from '../pipeline/router.ts';
import { makeWorker, DEAD_LETTER_ATTRIBUTES } from '../pipeline/worker.ts';
import { StoreError } from '../pipeline/ports.ts';
import { taskMessage, type Task } from '../pipeline/task.ts';
import { gradientImage } from './support/fixtures.ts';
import { fixedCatalog, MemoryIndex, MemoryQueue, MemoryStore, oneCpuTier } from './support/memory-ports.ts';

const BUCKET = 'photos';
// ImageNet-1k class 207 is "golden retriever" (WordNet n02099601).
const GOLDEN_RETRIEVER = 207;

const tiers = oneCpuTier;

function routerWorld() {
  const store = new MemoryStore();
  const queue = new MemoryQueue();
  const models = fixedCatalog({ topClass: GOLDEN_RETRIEVER });
  const router = makeRouter({ store, queues: { cpu: queue }, tiers: tiers(), models });
  return { store, queue, models, router };
}

const created = (key: string, eTag: string | undefined, kind: 'Put' | 'Copy' = 'Put', size = 100) => ({
  bucket: BUCKET,
  key,
  eTag,
  size,
  kind,
});

function workerWorld(options: { writeBack?: 'metadata' | 'tags' | 'index'; deadLetter?: boolean; index?: MemoryIndex } = {}) {
  const store = new MemoryStore();
  const queue = new MemoryQueue('cpu.fifo');
  const dlq = new MemoryQueue('cpu-dlq.fifo');
  const models = fixedCatalog({ topClass: GOLDEN_RETRIEVER });
  const worker = makeWorker({
    store,
    queue,
    tiers: tiers(options.writeBack),
    models,
    index: options.index,
    now: () => new Date('2026-12-02T10:00:00Z'),
    options: { retryBaseSeconds: options.index ? 0 : 5, ...(options.deadLetter ? { deadLetter: { queue: dlq, maxReceives: 3 } } : {}) },
  });
  const task = (key: string, eTag: string, size: number): Task => ({
    v: 1,
    bucket: BUCKET,
    key,
    eTag,
    size,
    tier: 'cpu',
    variant: 'b0',
    source: 'upload',
    enqueuedAt: '2026-12-02T09:59:00Z',
  });
  const enqueue = async (t: Task) => queue.send([taskMessage(t)]);
  const runOnce = async () => worker.handle(await queue.receive({ max: 10 }));
  return { store, queue, dlq, models, worker, task, enqueue, runOnce };
}

/** The UTF-8 bytes of every user-metadata key and value: S3's 2 KB rule, counted here independently of the code. */
const s3MetadataBytes = (m: Record<string, string>) =>
  Object.entries(m).reduce((n, [k, v]) => n + new TextEncoder().encode(k + v).length, 0);

describe('router rules (in-memory ports)', () => {
  it('loop guard: a Copy event of an object carrying the current marker is our own write-back, recognised from a HEAD alone', async () => {
    const { store, queue, router } = routerWorld();
    const eTag = store.put(BUCKET, 'a.png', await gradientImage(64, 48, 'png'), { metadata: { 'effitag-model': 'b0@cafe' } });
    const own = await router.handleObject(created('a.png', eTag, 'Copy'));
    assert.deepEqual([own.action, own.action === 'dropped' && own.reason], ['dropped', 'own-write-back']);
    assert.equal(store.count('getRange'), 0, 'no bytes read for our own write-back');
    assert.equal(queue.pending().length, 0);
    // A copy carrying another model's marker (older weights) is a new object to tag.
    store.put(BUCKET, 'b.png', await gradientImage(64, 48, 'png'), { metadata: { 'effitag-model': 'b0@0ld0' } });
    const other = await router.handleObject(created('b.png', undefined, 'Copy'));
    assert.equal(other.action, 'enqueued');
    assert.equal(queue.pending().length, 1);
  });

  it('an event for a version since overwritten is dropped as changed; a deleted object as gone', async () => {
    const { store, queue, router } = routerWorld();
    const first = store.put(BUCKET, 'a.png', await gradientImage(64, 48, 'png'));
    store.put(BUCKET, 'a.png', await gradientImage(64, 48, 'png', 1));
    const stale = await router.handleObject(created('a.png', first));
    assert.deepEqual([stale.action, stale.action === 'dropped' && stale.reason], ['dropped', 'changed']);
    const gone = await router.handleObject(created('missing.png', 'abc'));
    assert.deepEqual([gone.action, gone.action === 'dropped' && gone.reason], ['dropped', 'gone']);
    assert.equal(queue.pending().length, 0);
  });

  it('duplicate events of one object version become one task (FIFO deduplication id)', async () => {
    const { store, queue, router } = routerWorld();
    const eTag = store.put(BUCKET, 'a.png', await gradientImage(64, 48, 'png'));
    await router.handleObject(created('a.png', eTag));
    await router.handleObject(created('a.png', eTag));
    assert.equal(queue.messages.length, 1);
  });

  it('backfill filters decide by marker: stale, missing, older, and failures only with retryFailed', async () => {
    const { store, router } = routerWorld();
    const png = await gradientImage(64, 48, 'png');
    const put = (key: string, metadata: Record<string, string>) => store.put(BUCKET, key, png, { metadata });
    const objects = {
      untagged: put('untagged.png', {}),
      current: put('current.png', { 'effitag-model': 'b0@cafe', 'effitag-status': 'tagged' }),
      older: put('older.png', { 'effitag-model': 'b0@0ld0', 'effitag-status': 'tagged' }),
      failed: put('failed.png', { 'effitag-model': 'b0@cafe', 'effitag-status': 'failed' }),
    };
    const decide = async (filter: Parameters<typeof router.decide>[2]) => {
      const out: Record<string, string> = {};
      for (const [name, eTag] of Object.entries(objects)) {
        const o: RouteOutcome = await router.decide(created(`${name}.png`, eTag), 'backfill', filter);
        out[name] = o.action === 'enqueued' ? 'enqueued' : o.reason;
      }
      return out;
    };
    assert.deepEqual(await decide({ mode: 'stale' }), {
      untagged: 'enqueued',
      current: 'current',
      older: 'enqueued',
      failed: 'failed-before',
    });
    assert.deepEqual(await decide({ mode: 'missing' }), {
      untagged: 'enqueued',
      current: 'current',
      older: 'has-marker',
      failed: 'failed-before',
    });
    assert.deepEqual(await decide({ mode: 'older' }), {
      untagged: 'no-marker',
      current: 'current',
      older: 'enqueued',
      failed: 'failed-before',
    });
    assert.deepEqual(await decide({ mode: 'stale', retryFailed: true }), {
      untagged: 'enqueued',
      current: 'current',
      older: 'enqueued',
      failed: 'enqueued',
    });
  });

  it('non-images: other files are left alone; a text file named .jpg is routed on upload (the worker records why) but not by a backfill', async () => {
    const { store, router } = routerWorld();
    const pdf = store.put(BUCKET, 'doc.pdf', '%PDF-1.7 not an image', { contentType: 'application/pdf' });
    const fake = store.put(BUCKET, 'fake.jpg', 'just text');
    const doc = await router.handleObject(created('doc.pdf', pdf));
    assert.deepEqual([doc.action, doc.action === 'dropped' && doc.reason], ['dropped', 'not-an-image']);
    assert.equal((await router.decide(created('fake.jpg', fake))).action, 'enqueued');
    const backfill = await router.decide(created('fake.jpg', fake), 'backfill', { mode: 'stale' });
    assert.deepEqual([backfill.action, backfill.action === 'dropped' && backfill.reason], ['dropped', 'not-an-image']);
  });
});

describe('worker rules (in-memory ports)', () => {
  it('tags an image: one metadata copy with the top class first, the marker and the ETag read; the message is deleted', async () => {
    const w = workerWorld();
    const png = await gradientImage(64, 48, 'png');
    const eTag = w.store.put(BUCKET, 'dog.png', png, { metadata: { owner: 'ana' } });
    await w.enqueue(w.task('dog.png', eTag, png.length));
    const [result] = await w.runOnce();
    assert.equal(result.outcome.status, 'tagged');
    const m = w.store.metadataOf(BUCKET, 'dog.png');
    assert.equal(m.owner, 'ana', "the user's own metadata is kept");
    assert.equal(m['effitag-status'], 'tagged');
    assert.equal(m['effitag-model'], 'b0@cafe');
    assert.equal(m['effitag-etag'], eTag);
    assert.match(m['effitag-tags'], /^golden_retriever=0\.900;/);
    assert.equal(w.store.count('replaceMetadata'), 1);
    assert.equal(w.queue.pending().length, 0);
  });

  it('an object already tagged by the current model for this ETag is skipped without inference or a write', async () => {
    const w = workerWorld();
    const png = await gradientImage(64, 48, 'png');
    const eTag = w.store.put(BUCKET, 'dog.png', png, { metadata: { 'effitag-model': 'b0@cafe', 'effitag-etag': '' } });
    // Tag it once, then deliver the same task again.
    await w.enqueue(w.task('dog.png', eTag, png.length));
    await w.runOnce();
    await w.queue.send([{ ...taskMessage(w.task('dog.png', eTag, png.length)), deduplicationId: 'again' }]);
    const [again] = await w.runOnce();
    assert.deepEqual(again.outcome, { status: 'skipped', reason: 'already-tagged' });
    assert.equal(w.models.classified, 1);
    assert.equal(w.store.count('replaceMetadata'), 1);
  });

  it('overwrite races: a task for a replaced version is skipped (If-Match on download); a replacement during inference is never clobbered', async () => {
    const w = workerWorld();
    const png = await gradientImage(64, 48, 'png');
    const old = w.store.put(BUCKET, 'a.png', png);
    const newer = await gradientImage(64, 48, 'png', 3);
    w.store.put(BUCKET, 'a.png', newer);
    await w.enqueue(w.task('a.png', old, png.length));
    const [stale] = await w.runOnce();
    assert.deepEqual(stale.outcome, { status: 'skipped', reason: 'changed' });
    assert.equal(w.models.classified, 0, 'the newer bytes are never classified under the old task');

    const eTag = w.store.put(BUCKET, 'b.png', png);
    w.store.beforeCopy = (ref) => {
      if (ref.key === 'b.png') w.store.put(BUCKET, 'b.png', newer, { metadata: { fresh: 'yes' } });
    };
    await w.enqueue(w.task('b.png', eTag, png.length));
    const [raced] = await w.runOnce();
    assert.deepEqual(raced.outcome, { status: 'skipped', reason: 'changed' });
    assert.deepEqual(w.store.metadataOf(BUCKET, 'b.png'), { fresh: 'yes' }, 'the newer upload is untouched');
    assert.equal(w.queue.pending().length, 0);
  });

  it("the 2 KB metadata budget: tags are cut to fit beside the user's keys, and an object with no room is left as it is", async () => {
    const w = workerWorld();
    const png = await gradientImage(64, 48, 'png');
    const full = { notes: 'x'.repeat(1880) };
    const eTag = w.store.put(BUCKET, 'full.png', png, { metadata: full });
    await w.enqueue(w.task('full.png', eTag, png.length));
    const [fits] = await w.runOnce();
    assert.equal(fits.outcome.status, 'tagged');
    const written = w.store.metadataOf(BUCKET, 'full.png');
    assert.ok(s3MetadataBytes(written) <= 2048, `${s3MetadataBytes(written)} bytes of metadata`);
    assert.equal(written['effitag-tags'].split(';').length, (fits.outcome as { tags: number }).tags);
    assert.ok((fits.outcome as { tags: number }).tags < 3, 'fewer tags than topK: some did not fit');

    const noRoom = w.store.put(BUCKET, 'none.png', png, { metadata: { notes: 'y'.repeat(2000) } });
    await w.enqueue(w.task('none.png', noRoom, png.length));
    const [none] = await w.runOnce();
    // No index in this world: nowhere to record it but the log (a warning).
    assert.deepEqual(none.outcome, { status: 'skipped', reason: 'metadata-budget (no room to record it)' });
    assert.deepEqual(w.store.metadataOf(BUCKET, 'none.png'), { notes: 'y'.repeat(2000) });
  });

  it('failure classes: undecodable is recorded on the object, transient and denied are retried with backoff, poison and unknown tiers are not', async () => {
    const w = workerWorld();
    const text = 'not an image at all';
    const bad = w.store.put(BUCKET, 'bad.jpg', text);
    await w.enqueue(w.task('bad.jpg', bad, text.length));
    const [recorded] = await w.runOnce();
    assert.deepEqual(recorded.outcome, { status: 'recorded-failure', reason: 'unsupported-format' });
    const m = w.store.metadataOf(BUCKET, 'bad.jpg');
    assert.equal(m['effitag-status'], 'failed');
    assert.match(m['effitag-reason'], /^unsupported-format: /);

    const png = await gradientImage(64, 48, 'png');
    const ok = w.store.put(BUCKET, 'flaky.png', png);
    w.store.failNext('get', new StoreError('transient', 'SlowDown'));
    await w.enqueue(w.task('flaky.png', ok, png.length));
    const [transient] = await w.runOnce();
    assert.equal(transient.outcome.status, 'retry');
    assert.deepEqual(w.queue.visibility.at(-1), { id: transient.message.id, seconds: 5 }, 'first receive: the base backoff');
    await w.queue.setVisibility(transient.message, 0);
    w.store.failNext('get', new StoreError('denied', 'AccessDenied'));
    const [denied] = await w.runOnce();
    assert.deepEqual(denied.outcome, { status: 'retry', reason: 'access denied downloading' });
    assert.deepEqual(w.queue.visibility.at(-1), { id: denied.message.id, seconds: 10 }, 'second receive: twice the base');

    await w.queue.send([{ body: '{"not":"a task"}', deduplicationId: 'poison' }]);
    await w.enqueue({ ...w.task('x.png', ok, 1), tier: 'platinum' });
    await w.queue.setVisibility(denied.message, 3600);
    const outcomes = (await w.runOnce()).map((r) => r.outcome.status).sort();
    assert.deepEqual(outcomes, ['poison', 'poison']);
  });

  it('archived objects are skipped; on its last receive a failing message goes to the DLQ with its reason', async () => {
    const w = workerWorld({ deadLetter: true });
    const png = await gradientImage(64, 48, 'png');
    const cold = w.store.put(BUCKET, 'cold.png', png, { storageClass: 'DEEP_ARCHIVE' });
    await w.enqueue(w.task('cold.png', cold, png.length));
    assert.deepEqual((await w.runOnce())[0].outcome, { status: 'skipped', reason: 'archived' });

    const ok = w.store.put(BUCKET, 'down.png', png);
    await w.enqueue(w.task('down.png', ok, png.length));
    let last: Awaited<ReturnType<typeof w.runOnce>>[number] | undefined;
    for (let receive = 1; receive <= 3; receive++) {
      w.store.failNext('get', new StoreError('transient', 'InternalError'));
      [last] = await w.runOnce();
      if (receive < 3) await w.queue.setVisibility(last.message, 0);
    }
    assert.equal(last!.outcome.status, 'dead-lettered');
    assert.equal(w.queue.pending().length, 0, 'moved, not left to the redrive policy');
    const [moved] = w.dlq.pending();
    assert.match(moved.attributes![DEAD_LETTER_ATTRIBUTES.reason], /^retry: downloading: InternalError/);
    assert.equal(moved.attributes![DEAD_LETTER_ATTRIBUTES.receives], '3');
  });

  it("object tags mode: never rewrites the object, and never pushes out a user's tag", async () => {
    const w = workerWorld({ writeBack: 'tags' });
    const png = await gradientImage(64, 48, 'png');
    const eTag = w.store.put(BUCKET, 'dog.png', png);
    await w.store.putTags({ bucket: BUCKET, key: 'dog.png' }, Object.fromEntries(Array.from({ length: 9 }, (_, i) => [`user-${i}`, 'v'])));
    await w.enqueue(w.task('dog.png', eTag, png.length));
    assert.equal((await w.runOnce())[0].outcome.status, 'tagged');
    const tags = await w.store.getTags({ bucket: BUCKET, key: 'dog.png' });
    assert.equal(Object.keys(tags).filter((k) => k.startsWith('user-')).length, 9);
    assert.match(tags['effitag-tags'], /^golden retriever:0\.90/);
    assert.equal(w.store.count('replaceMetadata'), 0);
  });

  it('tag index: written with each result; unreachable, the message is retried and the retry indexes from metadata without inference', async () => {
    const index = new MemoryIndex();
    const w = workerWorld({ index });
    const eTag = w.store.put(BUCKET, 'dog.png', await gradientImage(64, 48, 'png'));
    index.failNextPuts(1);
    await w.enqueue(w.task('dog.png', eTag, 100));
    const [first] = await w.runOnce();
    assert.deepEqual(first.outcome, { status: 'retry', reason: 'indexing: index unreachable' });
    assert.equal(w.store.metadataOf(BUCKET, 'dog.png')['effitag-status'], 'tagged', 'the object carries its tags already');
    assert.equal(w.models.classified, 1);
    const [second] = await w.runOnce();
    assert.deepEqual(second.outcome, { status: 'skipped', reason: 'already-tagged' });
    assert.equal(w.models.classified, 1, 'no second inference');
    const held = index.objects.get(`${BUCKET}/dog.png`)!;
    assert.equal(held.eTag, eTag);
    assert.ok(held.tags.some((t) => t.tag === 'dog' && t.probability === 0.9));
    assert.equal(w.queue.pending().length, 0, 'done: deleted');
  });

  it('index write-back: nothing on the object; an object already indexed by the current model is not downloaded again', async () => {
    const index = new MemoryIndex();
    const w = workerWorld({ writeBack: 'index', index });
    const eTag = w.store.put(BUCKET, 'dog.png', await gradientImage(64, 48, 'png'), { metadata: { owner: 'me' } });
    await w.enqueue(w.task('dog.png', eTag, 100));
    const [first] = await w.runOnce();
    assert.deepEqual(first.outcome, { status: 'tagged', tags: 3 });
    assert.equal(w.store.count('replaceMetadata') + w.store.count('putTags'), 0);
    assert.deepEqual(w.store.metadataOf(BUCKET, 'dog.png'), { owner: 'me' });
    // The same version again (a duplicate event after the FIFO window, a backfill): skipped before any download.
    const gets = w.store.count('get');
    await w.queue.send([{ ...taskMessage(w.task('dog.png', eTag, 100)), deduplicationId: 'again' }]);
    const [again] = await w.runOnce();
    assert.deepEqual(again.outcome, { status: 'skipped', reason: 'already-tagged' });
    assert.equal(w.store.count('get'), gets);
    // A worker without an index refuses an index-only tier at construction.
    assert.throws(() => workerWorld({ writeBack: 'index' }), /writes back to the tag index, and none is configured/);
  });

  it('a removal unindexes only when the key no longer answers (a deleted older version leaves the current one found)', async () => {
    const index = new MemoryIndex();
    const store = new MemoryStore();
    const router = makeRouter({ store, queues: {}, tiers: tiers(), models: fixedCatalog({ topClass: GOLDEN_RETRIEVER }), index });
    const eTag = store.put(BUCKET, 'dog.png', 'png bytes');
    await index.put({
      bucket: BUCKET,
      key: 'dog.png',
      eTag,
      lastModified: new Date('2026-12-01T00:00:00Z'),
      size: 9,
      variant: 'b0',
      marker: 'b0@cafe',
      at: '2026-12-01T00:00:01Z',
      tags: [{ tag: 'dog', probability: 0.9, leaf: false }],
    });
    const removal = JSON.stringify({
      Records: [
        {
          eventSource: 'aws:s3',
          eventName: 'ObjectRemoved:Delete',
          eventTime: '2026-12-02T00:00:00Z',
          s3: { bucket: { name: BUCKET }, object: { key: 'dog.png', versionId: 'v1' } },
        },
      ],
    });
    await router.handleBody(removal);
    assert.equal((await index.search({ bucket: BUCKET, tags: ['dog'], limit: 5 })).hits.length, 1, 'the key still answers: kept');
    store.delete(BUCKET, 'dog.png');
    await router.handleBody(removal);
    assert.equal((await index.search({ bucket: BUCKET, tags: ['dog'], limit: 5 })).hits.length, 0, 'gone: unindexed');
  });
});

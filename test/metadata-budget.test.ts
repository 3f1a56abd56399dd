/**
 * A full metadata budget (issue 21): an image whose user metadata leaves no room for one tag in
 * S3's 2 KB is tagged through the index (and object tags where its tier writes them), or its
 * failure is recorded; never `effitag-status: tagged` with empty tags, never silence, and a backfill
 * does not run inference on it again. In-memory ports, then the embedded stack (DynamoDB stand-in).
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import type { EmbeddedStack } from '../local/stack.ts';
import { runBackfill } from '../pipeline/backfill.ts';
import { Counters } from '../pipeline/log.ts';
import { makeRouter } from '../pipeline/router.ts';
import { taskMessage, type Task } from '../pipeline/task.ts';
import { makeWorker } from '../pipeline/worker.ts';
import type { TiersFile } from '../tiers/schema.ts';
import { gradientImage } from './support/fixtures.ts';
import { head, put, startTestStack, waitFor } from './support/local-stack.ts';
import { fixedCatalog, MemoryIndex, MemoryQueue, MemoryStore, oneCpuTier } from './support/memory-ports.ts';

const BUCKET = 'photos';
// ImageNet-1k class 207 is "golden retriever": `golden_retriever=0.900`, 22 bytes.
const GOLDEN_RETRIEVER = 207;
/** Leaves room for EffiTag's fixed keys but not for one tag (the 1,900 bytes). */
const NEARLY_FULL = { notes: 'x'.repeat(1900) };
/** Leaves no room even for the fixed keys. */
const FULL = { notes: 'y'.repeat(2000) };

const tiers = oneCpuTier;

function world(writeBack: 'metadata' | 'both' | 'tags' = 'metadata', withIndex = true) {
  const store = new MemoryStore();
  const queue = new MemoryQueue('cpu.fifo');
  const index = withIndex ? new MemoryIndex() : undefined;
  const models = fixedCatalog({ topClass: GOLDEN_RETRIEVER });
  const counters = new Counters();
  const logged: { level: string; msg: string; fields?: Record<string, unknown> }[] = [];
  const log = { log: (level: string, msg: string, fields?: Record<string, unknown>) => logged.push({ level, msg, fields }) };
  const worker = makeWorker({
    store,
    queue,
    tiers: tiers(writeBack),
    models,
    index,
    counters,
    log: log as never,
    options: { retryBaseSeconds: 0 },
  });
  const router = makeRouter({ store, queues: { cpu: queue }, tiers: tiers(writeBack), models, index });
  const task = (key: string, eTag: string, size: number, revision = 's:01'): Task => ({
    v: 1,
    bucket: BUCKET,
    key,
    eTag,
    revision,
    size,
    tier: 'cpu',
    variant: 'b0',
    source: 'upload',
    enqueuedAt: '2026-12-06T09:59:00Z',
  });
  const runTask = async (t: Task) => {
    await queue.send([taskMessage(t)]);
    return worker.handle(await queue.receive({ max: 10 }));
  };
  const backfillDecision = async (key: string) => {
    const o = await router.decide({ bucket: BUCKET, key, kind: 'Put' }, 'backfill', { mode: 'stale' });
    return o.action === 'dropped' ? o.reason : o.action;
  };
  return { store, queue, index, models, counters, logged, worker, router, task, runTask, backfillDecision };
}

describe('a full metadata budget (in-memory ports)', () => {
  for (const [name, metadata] of [
    ['1,900 bytes of user metadata (room for the fixed keys, not one tag)', NEARLY_FULL],
    ['2,000 bytes of user metadata (no room at all)', FULL],
  ] as const) {
    it(`${name}: tagged in the index, the object untouched, a backfill leaves it alone`, async () => {
      const w = world();
      const png = await gradientImage(64, 48, 'png');
      const eTag = w.store.put(BUCKET, 'full.png', png, { metadata });
      const [r] = await w.runTask(w.task('full.png', eTag, png.length));
      assert.equal(r.outcome.status, 'tagged');
      assert.match((r.outcome as { note?: string }).note ?? '', /^metadata-budget: .*index only/);
      assert.deepEqual(w.store.metadataOf(BUCKET, 'full.png'), metadata, 'never `tagged` with empty tags: the object is untouched');
      assert.equal(w.store.count('replaceMetadata'), 0);
      const held = await w.index!.get(BUCKET, 'full.png');
      assert.ok(held && !held.failed, 'the index holds it');
      assert.equal(held.eTag, eTag);
      assert.ok(held.tags['golden retriever'] > 0.8, `tags in the index: ${JSON.stringify(held.tags)}`);
      assert.equal(w.counters.get('tagged.index-only.metadata-budget'), 1);
      assert.equal(w.models.classified, 1);

      // A backfill finds it current from the index (no inference again, ever).
      assert.equal(await w.backfillDecision('full.png'), 'current');
      // Another delivery of a task for this upload: skipped from the index, no second inference.
      const [again] = await w.runTask(w.task('full.png', eTag, png.length, 's:02'));
      assert.deepEqual(again.outcome, { status: 'skipped', reason: 'already-tagged' });
      assert.equal(w.models.classified, 1);

      // The same bytes uploaded again later: a new upload, which the backfill does not take as done.
      w.store.put(BUCKET, 'full.png', png, { metadata, lastModified: new Date(Date.now() + 2000) });
      assert.equal(await w.backfillDecision('full.png'), 'enqueued');
    });
  }

  it('a `both` tier with no room in the metadata writes the object tags, and says so', async () => {
    const w = world('both');
    const png = await gradientImage(64, 48, 'png');
    const eTag = w.store.put(BUCKET, 'both.png', png, { metadata: NEARLY_FULL });
    const [r] = await w.runTask(w.task('both.png', eTag, png.length));
    assert.deepEqual(r.outcome, { status: 'tagged', tags: 3, note: 'no room in the metadata (2 KB): object tags only' });
    assert.deepEqual(w.store.metadataOf(BUCKET, 'both.png'), NEARLY_FULL);
    const tags = await w.store.getTags({ bucket: BUCKET, key: 'both.png' });
    assert.match(tags['effitag-tags'], /^golden retriever:0\.90/);
    assert.ok(await w.index!.get(BUCKET, 'both.png'));
  });

  it('a `tags` tier: 10 user tags leave no room, the index holds the tags; a backfill re-infers no tags-tier object it holds', async () => {
    const w = world('tags');
    const png = await gradientImage(64, 48, 'png');
    const full = w.store.put(BUCKET, 'ten.png', png);
    w.store.objects.get(`${BUCKET}/ten.png`)!.tags = Object.fromEntries(Array.from({ length: 10 }, (_, i) => [`u${i}`, 'v']));
    const plain = w.store.put(BUCKET, 'plain.png', await gradientImage(64, 48, 'png', 1));
    const [r1] = await w.runTask(w.task('ten.png', full, png.length));
    assert.equal(r1.outcome.status, 'tagged');
    assert.match((r1.outcome as { note?: string }).note ?? '', /^tag-limit: .*index only/);
    assert.equal(Object.keys(await w.store.getTags({ bucket: BUCKET, key: 'ten.png' })).length, 10, "the user's tags untouched");
    const [r2] = await w.runTask(w.task('plain.png', plain, png.length));
    assert.deepEqual(r2.outcome, { status: 'tagged', tags: 3 });
    assert.equal(w.models.classified, 2);
    // Nothing in the metadata says either is tagged: the backfill asks the index.
    assert.equal(await w.backfillDecision('ten.png'), 'current');
    assert.equal(await w.backfillDecision('plain.png'), 'current');
  });

  it('without an index and no room to record anything: a warning, never `tagged` with empty tags', async () => {
    const w = world('metadata', false);
    const png = await gradientImage(64, 48, 'png');
    const eTag = w.store.put(BUCKET, 'lost.png', png, { metadata: NEARLY_FULL });
    const [r] = await w.runTask(w.task('lost.png', eTag, png.length));
    assert.deepEqual(r.outcome, { status: 'skipped', reason: 'metadata-budget (no room to record it)' });
    assert.deepEqual(w.store.metadataOf(BUCKET, 'lost.png'), NEARLY_FULL);
    const warned = w.logged.find((l) => l.level === 'warn' && l.msg === 'skipped');
    assert.equal(warned?.fields?.key, 'lost.png', 'logged as a warning');
  });
});

describe('a full metadata budget on the embedded stack', () => {
  let stack: EmbeddedStack;
  let config: TiersFile;
  before(async () => {
    ({ stack, config } = await startTestStack({
      version: 1,
      tiers: {
        main: {
          variants: ['b0'],
          compute: { target: 'lambda-cpu', memoryMb: 3538 },
          engine: 'ort',
          batchSize: 8,
          topK: 3,
          minConfidence: 0,
        },
      },
      routing: { default: { tier: 'main' } },
    }));
  });
  after(async () => {
    await stack?.stop();
  });

  it('uploads with 1,900 and 2,000 bytes of metadata end in the index and searchable; a backfill runs no inference on them', async () => {
    const jpeg = await gradientImage(240, 180, 'jpeg', 51);
    const uploads = { 'budget/1900.jpg': NEARLY_FULL, 'budget/2000.jpg': FULL };
    const eTags: Record<string, string> = {};
    for (const [key, metadata] of Object.entries(uploads))
      eTags[key] = await put(stack, key, jpeg, { ContentType: 'image/jpeg', Metadata: metadata });
    for (const key of Object.keys(uploads)) {
      const held = await waitFor(`${key} in the index`, async () => {
        const r = await stack.index.get(stack.bucket, key);
        return r?.eTag === eTags[key] ? r : undefined;
      });
      assert.equal(held.failed, false, key);
      assert.ok(Object.keys(held.tags).length >= 3, `${key}: tags in the index`);
      const h = await head(stack, key);
      assert.equal(h.Metadata?.['effitag-status'], undefined, `${key}: never \`tagged\` with empty tags`);
      assert.equal(h.Metadata?.notes, uploads[key as keyof typeof uploads].notes, `${key}: user metadata kept`);
    }
    const page = await stack.index.search({ bucket: stack.bucket, tags: [], prefix: 'budget/', limit: 10 });
    assert.deepEqual(page.hits.map((h) => h.key).sort(), Object.keys(uploads).sort(), 'searchable');

    // A backfill (as the catch-up or `effitag backfill` runs it) finds both current: nothing to do.
    const sent: Task[] = [];
    const router = makeRouter({
      store: stack.store,
      queues: {},
      tiers: config,
      models: stack.models,
      index: stack.index,
      sink: async (t) => {
        sent.push(t);
      },
    });
    const report = await runBackfill(
      { store: stack.store, router },
      { bucket: stack.bucket, prefix: 'budget/', filter: { mode: 'stale' } },
    );
    assert.deepEqual(
      sent.map((t) => t.key),
      [],
    );
    assert.equal(report.skipped.current, 2);
  });
});

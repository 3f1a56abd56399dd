/**
 * Re-uploads (issue 21): the tier queues deduplicate by what makes an upload unique (the S3 event's
 * sequencer, else the object's upload time), not by its bytes alone. A second upload of the same
 * bytes, or A → B → A, wipes the tags and must be tagged again; true duplicate deliveries of one
 * event still collapse, and our own write-back's Copy event is still dropped.
 * In-memory ports (whose FIFO models SQS's 5-minute deduplication window) and the embedded stack.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import type { EmbeddedStack } from '../local/stack.ts';
import { nextSequencer } from '../local/s3-server.ts';
import { parseEventBody, type ObjectCreated } from '../pipeline/events.ts';
import type { ObjectStore } from '../pipeline/ports.ts';
import { makeRouter } from '../pipeline/router.ts';
import { makeWorker } from '../pipeline/worker.ts';
import { parseTask, revisionOf, taskIdentity } from '../pipeline/task.ts';
import { parseTiers } from '../tiers/schema.ts';
import { gradientImage } from './support/fixtures.ts';
import { head, put, startTestStack, waitFor, waitForStatus } from './support/local-stack.ts';
import { DEDUPLICATION_WINDOW_MS, fixedCatalog, MemoryQueue, MemoryStore } from './support/memory-ports.ts';

const BUCKET = 'photos';
const TIERS = {
  version: 1,
  tiers: {
    main: { variants: ['b0'], compute: { target: 'lambda-cpu', memoryMb: 2048 }, engine: 'ort', batchSize: 8, topK: 3, minConfidence: 0 },
  },
  routing: { default: { tier: 'main' } },
};

function world() {
  const store = new MemoryStore();
  const queue = new MemoryQueue('main.fifo');
  const models = fixedCatalog({ topClass: 207 });
  const tiers = parseTiers(TIERS);
  const router = makeRouter({ store, queues: { main: queue }, tiers, models });
  const worker = makeWorker({ store, queue, tiers, models, options: { retryBaseSeconds: 0 } });
  const event = (key: string, eTag: string, sequencer?: string, kind: ObjectCreated['kind'] = 'Put'): ObjectCreated => ({
    bucket: BUCKET,
    key,
    eTag,
    size: store.objects.get(`${BUCKET}/${key}`)!.bytes.length,
    kind,
    ...(sequencer ? { sequencer } : {}),
  });
  /** Every visible message through the worker, batch by batch; the outcomes. */
  const drain = async () => {
    const out: string[] = [];
    for (let got = await queue.receive({ max: 10 }); got.length; got = await queue.receive({ max: 10 }))
      for (const r of await worker.handle(got)) out.push(r.outcome.status === 'skipped' ? `skipped:${r.outcome.reason}` : r.outcome.status);
    return out;
  };
  return { store, queue, models, router, worker, event, drain };
}

describe('re-uploads on in-memory ports (FIFO deduplication with its 5-minute window)', () => {
  it('the same bytes uploaded twice: the second upload (tags wiped) is tagged again; a second delivery of one event is not', async () => {
    const w = world();
    const png = await gradientImage(64, 48, 'png');
    const eTag = w.store.put(BUCKET, 'a.png', png, { metadata: { owner: 'x' } });
    assert.equal((await w.router.handleObject(w.event('a.png', eTag, '0055AED6DCD90281E5'))).action, 'enqueued');
    assert.deepEqual(await w.drain(), ['tagged']);
    assert.equal(w.store.metadataOf(BUCKET, 'a.png')['effitag-status'], 'tagged');

    // The same bytes again (a sync tool, a retry): S3 stores a new object without our keys.
    assert.equal(w.store.put(BUCKET, 'a.png', png, { metadata: { owner: 'x' } }), eTag);
    assert.equal(w.store.metadataOf(BUCKET, 'a.png')['effitag-status'], undefined, 'the upload wiped the tags');
    await w.router.handleObject(w.event('a.png', eTag, '0055AED6DCD90281F0'));
    assert.equal(w.queue.duplicatesDropped, 0, 'the second upload is not a duplicate of the first');
    // S3 delivers that event twice (at-least-once): the second delivery is one.
    await w.router.handleObject(w.event('a.png', eTag, '0055AED6DCD90281F0'));
    assert.equal(w.queue.duplicatesDropped, 1, 'a second delivery of one event is dropped by the queue');
    assert.deepEqual(await w.drain(), ['tagged']);
    const m = w.store.metadataOf(BUCKET, 'a.png');
    assert.equal(m['effitag-status'], 'tagged');
    assert.equal(m['effitag-etag'], eTag);
    assert.equal(m.owner, 'x');
    assert.equal(w.store.count('replaceMetadata'), 2, 'one write-back per upload');

    // Our own write-back's Copy event (with its own sequencer) is still dropped by the loop guard.
    const own = await w.router.handleObject(w.event('a.png', eTag, '0055AED6DCD90281F9', 'Copy'));
    assert.deepEqual([own.action, own.action === 'dropped' && own.reason], ['dropped', 'own-write-back']);
    assert.equal(w.queue.pending().length, 0);
  });

  it('A → B → A: every upload is tagged in turn and the object ends tagged for A', async () => {
    const w = world();
    const a = await gradientImage(64, 48, 'png', 1);
    const b = await gradientImage(64, 48, 'png', 2);
    let seq = 0x10;
    const upload = async (bytes: Uint8Array) => {
      const eTag = w.store.put(BUCKET, 'k.png', bytes);
      await w.router.handleObject(w.event('k.png', eTag, (seq++).toString(16).toUpperCase().padStart(16, '0')));
      return eTag;
    };
    const eA = await upload(a);
    assert.deepEqual(await w.drain(), ['tagged']);
    await upload(b);
    assert.deepEqual(await w.drain(), ['tagged']);
    const eA2 = await upload(a);
    assert.equal(eA2, eA);
    assert.deepEqual(await w.drain(), ['tagged'], 'the second upload of A is not dropped as a duplicate of the first');
    assert.equal(w.store.metadataOf(BUCKET, 'k.png')['effitag-etag'], eA);
    assert.equal(w.queue.duplicatesDropped, 0);

    // B → A → B → A before the router sees any event: the B events find their version gone
    // (If-Match), the two A events are both sent (neither is a duplicate of the other) and land in
    // one batch, where the same bytes need one inference.
    const eB = w.store.put(BUCKET, 'q.png', b);
    for (const bytes of [a, b, a]) w.store.put(BUCKET, 'q.png', bytes);
    const routed = [];
    for (const [eTag, seq] of [
      [eB, '0A'],
      [eA, '0B'],
      [eB, '0C'],
      [eA, '0D'],
    ])
      routed.push(await w.router.handleObject(w.event('q.png', eTag, seq)));
    assert.deepEqual(
      routed.map((r) => (r.action === 'dropped' ? r.reason : r.action)),
      ['changed', 'enqueued', 'changed', 'enqueued'],
    );
    assert.equal(w.queue.pending().length, 2, 'both A uploads have a task');
    const outcomes = await w.drain();
    assert.deepEqual(outcomes.sort(), ['skipped:duplicate', 'tagged'], 'two uploads of the same bytes in one batch: one inference');
    assert.equal(w.store.metadataOf(BUCKET, 'q.png')['effitag-etag'], eA);
  });

  it('backfills (no sequencer) deduplicate by upload time: a repeated backfill collapses, a re-upload of the same bytes does not', async () => {
    const w = world();
    const png = await gradientImage(64, 48, 'png');
    const t0 = new Date('2026-12-06T10:00:00.000Z');
    const eTag = w.store.put(BUCKET, 'b.png', png, { lastModified: t0 });
    assert.equal((await w.router.handleObject(w.event('b.png', eTag), 'backfill')).action, 'enqueued');
    // A resumed run decides the same key again before the worker ran: the queue keeps one.
    assert.equal((await w.router.handleObject(w.event('b.png', eTag), 'backfill')).action, 'enqueued');
    assert.equal(w.queue.duplicatesDropped, 1);
    const [task] = w.queue.pending().map((m) => parseTask(m.body));
    assert.equal(task.revision, `t:${t0.toISOString()}`);
    // The same bytes uploaded again later: another upload time, another task.
    w.store.put(BUCKET, 'b.png', png, { lastModified: new Date(t0.getTime() + 1000) });
    await w.router.handleObject(w.event('b.png', eTag), 'backfill');
    assert.equal(w.queue.duplicatesDropped, 1);
    assert.deepEqual((await w.drain()).sort(), ['skipped:duplicate', 'tagged']);
  });

  it('EventBridge Object Created events: their sequencer makes the id, as in S3 notifications', async () => {
    const w = world();
    const png = await gradientImage(64, 48, 'png');
    const eTag = w.store.put(BUCKET, 'eb.png', png);
    const body = (sequencer: string) =>
      JSON.stringify({
        version: '0',
        source: 'aws.s3',
        'detail-type': 'Object Created',
        time: '2026-12-06T10:00:00Z',
        detail: {
          bucket: { name: BUCKET },
          object: { key: 'eb.png', size: png.length, etag: eTag, sequencer },
          reason: 'PutObject',
        },
      });
    await w.router.handleBody(body('00A1'));
    await w.router.handleBody(body('00A1'));
    await w.router.handleBody(body('00B2'));
    assert.deepEqual(
      w.queue.messages.map((m) => parseTask(m.body).revision),
      ['s:00A1', 's:00B2'],
    );
    assert.equal(w.queue.duplicatesDropped, 1);
  });

  it('the queue forgets a deduplication id after 5 minutes, as SQS does', async () => {
    const w = world();
    let now = Date.parse('2026-12-06T10:00:00Z');
    w.queue.clock = () => now;
    const png = await gradientImage(64, 48, 'png');
    const eTag = w.store.put(BUCKET, 'c.png', png);
    const ev = w.event('c.png', eTag, '01');
    await w.router.handleObject(ev);
    now += DEDUPLICATION_WINDOW_MS - 1;
    await w.router.handleObject(ev);
    assert.equal(w.queue.messages.length, 1, 'inside the window: dropped');
    now += 2;
    await w.router.handleObject(ev);
    assert.equal(w.queue.messages.length, 2, 'after the window: accepted');
  });

  it('the deduplication id: the sequencer, else the upload time; bounded; the same event gives the same id', () => {
    const base = { bucket: BUCKET, key: 'k', eTag: 'e' };
    assert.deepEqual(revisionOf({ sequencer: '0A' }, { lastModified: new Date(0) }), { revision: 's:0A' });
    assert.deepEqual(revisionOf({}, { lastModified: new Date(0) }), { revision: 't:1970-01-01T00:00:00.000Z' });
    assert.deepEqual(revisionOf({}, {}), {});
    assert.equal(revisionOf({ sequencer: 'F'.repeat(1000) }, {}).revision!.length, 192);
    assert.equal(taskIdentity({ ...base, revision: 's:0A' }), taskIdentity({ ...base, revision: 's:0A' }));
    assert.notEqual(taskIdentity({ ...base, revision: 's:0A' }), taskIdentity({ ...base, revision: 's:0B' }));
    assert.notEqual(taskIdentity({ ...base, revision: 's:0A' }), taskIdentity(base));
  });
});

describe('re-uploads on the embedded stack (real S3 events and a FIFO queue)', () => {
  let stack: EmbeddedStack;
  const copies = new Map<string, number>();
  const counting = (inner: ObjectStore): ObjectStore => ({
    head: (r) => inner.head(r),
    getRange: (...a) => inner.getRange(...a),
    get: (...a) => inner.get(...a),
    replaceMetadata(ref, h, m, ifMatch) {
      copies.set(ref.key, (copies.get(ref.key) ?? 0) + 1);
      return inner.replaceMetadata(ref, h, m, ifMatch);
    },
    getTags: (r) => inner.getTags(r),
    putTags: (...a) => inner.putTags(...a),
    list: (...a) => inner.list(...a),
  });
  before(async () => {
    ({ stack } = await startTestStack(TIERS, { wrapStore: counting }));
  });
  after(async () => {
    await stack?.stop();
  });

  it('two PutObject of the same bytes (as `aws s3 cp` twice): tagged after each, written back once each', async () => {
    const jpeg = await gradientImage(240, 180, 'jpeg', 31);
    const key = 'same/twice.jpg';
    const eTag = await put(stack, key, jpeg, { ContentType: 'image/jpeg', Metadata: { owner: 'o' } });
    await waitForStatus(stack, key, eTag, 30_000);
    const ownBefore = stack.counters.get('router.dropped.own-write-back');
    await waitFor('the write-back Copy event dropped', async () =>
      stack.counters.get('router.dropped.own-write-back') > 0 ? true : undefined,
    );
    assert.equal(await put(stack, key, jpeg, { ContentType: 'image/jpeg', Metadata: { owner: 'o' } }), eTag);
    const h = await waitForStatus(stack, key, eTag, 30_000);
    assert.equal(h.Metadata!['effitag-status'], 'tagged');
    assert.equal(h.Metadata!.owner, 'o');
    await waitFor('the second write-back Copy event dropped by the loop guard', async () =>
      stack.counters.get('router.dropped.own-write-back') > ownBefore ? true : undefined,
    );
    await waitFor('the task queue to drain', async () => ((await stack.tierQueues.main.queue.depth()).total === 0 ? true : undefined));
    assert.equal(copies.get(key), 2, 'one write-back per upload, none for the Copy events');
  });

  it('A → B → A on five keys: every object ends tagged for A', async () => {
    const a = await gradientImage(240, 180, 'jpeg', 41);
    const b = await gradientImage(240, 180, 'jpeg', 42);
    const keys = Array.from({ length: 5 }, (_, i) => `aba/photo ${i}.jpg`);
    // One key waits for each upload to be tagged before the next (the tagged A is overwritten by
    // B, then by A again within the deduplication window); the others overwrite at once.
    const eA = await put(stack, keys[0], a, { ContentType: 'image/jpeg' });
    await waitForStatus(stack, keys[0], eA, 30_000);
    const eB = await put(stack, keys[0], b, { ContentType: 'image/jpeg' });
    await waitForStatus(stack, keys[0], eB, 30_000);
    await put(stack, keys[0], a, { ContentType: 'image/jpeg' });
    await Promise.all(
      keys.slice(1).map(async (k) => {
        for (const bytes of [a, b, a]) await put(stack, k, bytes, { ContentType: 'image/jpeg' });
      }),
    );
    for (const k of keys) {
      const h = await waitForStatus(stack, k, eA, 30_000);
      assert.equal(h.Metadata!['effitag-status'], 'tagged', k);
    }
    await waitFor('the task queue to drain', async () => ((await stack.tierQueues.main.queue.depth()).total === 0 ? true : undefined));
    assert.equal((await head(stack, keys[0])).Metadata!['effitag-etag'], eA);
    for (const { dlq } of Object.values(stack.tierQueues))
      assert.equal((await dlq.receive({ max: 10, waitSeconds: 0 })).length, 0, 'nothing in a DLQ');
  });
});

describe("the embedded S3's event sequencer", () => {
  let stack: EmbeddedStack;
  before(async () => {
    // No router: the test reads the S3 events off the intake queue itself.
    ({ stack } = await startTestStack(TIERS, { runRouter: false, runWorkers: () => false }));
  });
  after(async () => {
    await stack?.stop();
  });

  it('grows with every event, even within one millisecond', () => {
    const seen = Array.from({ length: 1000 }, () => nextSequencer());
    assert.equal(new Set(seen).size, seen.length);
    assert.ok(seen.every((x, i) => i === 0 || x > seen[i - 1]));
  });

  it('ten uploads of one key at once: ten events, ten sequencers', async () => {
    const jpeg = await gradientImage(64, 48, 'jpeg', 61);
    await Promise.all(Array.from({ length: 10 }, () => put(stack, 'seq/same.jpg', jpeg, { ContentType: 'image/jpeg' })));
    const sequencers: string[] = [];
    await waitFor('ten events on the intake queue', async () => {
      const got = await stack.intake.receive({ max: 10, waitSeconds: 0, visibilitySeconds: 60 });
      for (const m of got) {
        const parsed = parseEventBody(m.body);
        if (parsed.type === 'objects') sequencers.push(...parsed.objects.map((o) => o.sequencer ?? ''));
      }
      return sequencers.length >= 10 ? true : undefined;
    });
    assert.equal(new Set(sequencers).size, 10, `distinct: ${sequencers.join(' ')}`);
    // The stack's own sequencer (microseconds, 16 hex digits), not s3rver's milliseconds.
    for (const x of sequencers) assert.match(x, /^[0-9A-F]{16}$/);
  });
});

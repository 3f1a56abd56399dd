import assert from 'node:assert/strict';
import { DeleteObjectCommand, GetObjectCommand, GetObjectTaggingCommand, PutObjectTaggingCommand } from '@aws-sdk/client-s3';
import { createServer, type AddressInfo, type Socket } from 'node:net';
import { after, before, describe, it } from 'node:test';
import type { EmbeddedStack } from '../local/stack.ts';
import { s3Client } from '../pipeline/aws/clients.ts';
import { classifyS3Error, S3Store } from '../pipeline/aws/s3-store.ts';
import { StoreError, type ObjectStore } from '../pipeline/ports.ts';
import { encodeS3Key } from '../pipeline/events.ts';
import { decodeTags } from '../pipeline/marker.ts';
import { DEAD_LETTER_ATTRIBUTES, makeWorker } from '../pipeline/worker.ts';
import { routeBatch } from '../pipeline/router.ts';
import { stopOnSignals } from '../pipeline/shutdown.ts';
import { taskMessage, type Task } from '../pipeline/task.ts';
import { gradientImage } from './support/fixtures.ts';
import { pngBomb } from './support/png-bomb.ts';
import { heicBomb, jpegBomb } from './support/bombs.ts';
import { head, put, startTestStack, waitFor, waitForStatus, type EngineProbe } from './support/local-stack.ts';
import type { TiersFile } from '../tiers/schema.ts';

const tier = (extra: object = {}) => ({
  variants: ['b0'],
  compute: { target: 'lambda-cpu', memoryMb: 3538 },
  engine: 'ort',
  batchSize: 8,
  topK: 5,
  minConfidence: 0,
  ...extra,
});
const TIERS = {
  version: 1,
  tiers: {
    main: tier(),
    tagmode: tier({ writeBack: 'tags' }),
    manual: tier({ batchSize: 4 }),
  },
  routing: {
    default: { tier: 'main' },
    rules: [
      { prefix: 'tags/', tier: 'tagmode' },
      { prefix: 'manual/', tier: 'manual' },
    ],
  },
};

/** Store faults, switched on per key by the tests. */
const faults = {
  transientGets: new Map<string, number>(),
  beforeCopy: new Map<string, () => Promise<void>>(),
  copies: new Map<string, number>(),
};
function faultyStore(inner: ObjectStore): ObjectStore {
  return {
    head: (r) => inner.head(r),
    getRange: (r, s, e, m) => inner.getRange(r, s, e, m),
    async get(ref, options) {
      const left = faults.transientGets.get(ref.key) ?? 0;
      if (left > 0) {
        faults.transientGets.set(ref.key, left - 1);
        throw new StoreError('transient', `injected 503 SlowDown for ${ref.key}`);
      }
      return inner.get(ref, options);
    },
    async replaceMetadata(ref, h, metadata, ifMatch) {
      faults.copies.set(ref.key, (faults.copies.get(ref.key) ?? 0) + 1);
      const hook = faults.beforeCopy.get(ref.key);
      if (hook) {
        faults.beforeCopy.delete(ref.key);
        await hook();
      }
      return inner.replaceMetadata(ref, h, metadata, ifMatch);
    },
    getTags: (r) => inner.getTags(r),
    putTags: (r, t) => inner.putTags(r, t),
    list: (b, o) => inner.list(b, o),
  };
}

/** The task the router would send for an upload (tests hand it to the queue themselves). */
function uploadTask(o: Pick<Task, 'bucket' | 'key' | 'eTag' | 'size' | 'tier'>): Task {
  return { v: 1, ...o, variant: 'b0', source: 'upload', enqueuedAt: new Date().toISOString() };
}

describe('tagging pipeline on the embedded stack (real HTTP)', () => {
  let stack: EmbeddedStack;
  let probe: EngineProbe;
  let config: TiersFile;
  let jpeg: Buffer;

  before(async () => {
    ({ stack, probe, config } = await startTestStack(TIERS, {
      wrapStore: faultyStore,
      runWorkers: (t) => t !== 'manual' && t !== 'tagmode',
    }));
    jpeg = await gradientImage(320, 240, 'jpeg', 4);
  });
  after(async () => {
    await stack?.stop();
  });

  it('upload → tags in user metadata; keys with spaces, +, and unicode', async () => {
    const keys = ['plain.jpg', 'with space/a b.jpg', 'plus+sign/c+d.jpg', 'ünïcødé/写真 1.jpg', "odd/(1)!'*~.jpg"];
    const etags = await Promise.all(keys.map((k) => put(stack, k, jpeg, { ContentType: 'image/jpeg' })));
    for (const [i, key] of keys.entries()) {
      const h = await waitForStatus(stack, key, etags[i]);
      assert.equal(h.Metadata!['effitag-status'], 'tagged', key);
      const tags = decodeTags(h.Metadata!['effitag-tags']);
      assert.equal(tags.length, 5, key);
      assert.ok(tags.every((t) => t.probability >= 0 && t.probability <= 1));
      assert.match(h.Metadata!['effitag-model'], /^b0@[0-9a-f]{12}$/);
      assert.equal(h.ETag!.replace(/"/g, ''), etags[i], 'the bytes are unchanged');
    }
  });

  it('keeps user metadata, Content-Type, Cache-Control, Content-Disposition and storage class', async () => {
    const eTag = await put(stack, 'keep/meta.jpg', jpeg, {
      ContentType: 'image/jpeg',
      CacheControl: 'public, max-age=600',
      ContentDisposition: 'attachment; filename="meta.jpg"',
      ContentLanguage: 'en',
      StorageClass: 'STANDARD_IA',
      Metadata: { owner: 'alice', 'camera-model': 'X100V' },
    });
    const h = await waitForStatus(stack, 'keep/meta.jpg', eTag);
    assert.equal(h.Metadata!.owner, 'alice');
    assert.equal(h.Metadata!['camera-model'], 'X100V');
    assert.equal(h.ContentType, 'image/jpeg');
    assert.equal(h.CacheControl, 'public, max-age=600');
    assert.equal(h.ContentDisposition, 'attachment; filename="meta.jpg"');
    assert.equal(h.ContentLanguage, 'en');
    assert.equal(h.StorageClass, 'STANDARD_IA');
  });

  it("the write-back's own Copy event causes no second inference", async () => {
    const before = { images: probe.images, dropped: stack.counters.get('router.dropped.own-write-back') };
    const eTag = await put(stack, 'loop/once.jpg', jpeg);
    await waitForStatus(stack, 'loop/once.jpg', eTag);
    await waitFor('the Copy event to be routed', async () =>
      stack.counters.get('router.dropped.own-write-back') > before.dropped ? true : undefined,
    );
    await waitFor('the task queue to drain', async () => ((await stack.tierQueues.main.queue.depth()).total === 0 ? true : undefined));
    assert.equal(probe.images - before.images, 1, 'exactly one inference');
    assert.equal(faults.copies.get('loop/once.jpg'), 1, 'exactly one write');
  });

  it('a duplicate event causes one write (queue deduplication, then the marker)', async () => {
    const key = 'dup/twice.jpg';
    const eTag = await put(stack, key, jpeg);
    await waitForStatus(stack, key, eTag);
    const imagesBefore = probe.images;
    // Replay the Put notification twice, as S3's at-least-once delivery may.
    const notification = JSON.stringify({
      Records: [
        {
          eventVersion: '2.1',
          eventSource: 'aws:s3',
          eventName: 'ObjectCreated:Put',
          s3: { bucket: { name: stack.bucket }, object: { key: encodeS3Key(key), eTag, size: jpeg.length, sequencer: '0A' } },
        },
      ],
    });
    const routedBefore = stack.counters.get('router.enqueued.main');
    await stack.intake.send([{ body: notification }, { body: notification }]);
    // Both replays routed (each sent as a task), then the task queue drained: whatever reached the
    // worker has been handled by now, so the counts below are final, not a snapshot.
    await waitFor('both replays to be routed', async () =>
      stack.counters.get('router.enqueued.main') - routedBefore >= 2 ? true : undefined,
    );
    await waitFor('the task queue to drain', async () => ((await stack.tierQueues.main.queue.depth()).total === 0 ? true : undefined));
    assert.equal(stack.counters.get('router.enqueued.main') - routedBefore, 2, 'the router saw both replays');
    assert.equal(probe.images, imagesBefore, 'no second inference');
    assert.equal(faults.copies.get(key), 1, 'one write');
  });

  it('duplicates inside one batch are processed once; an already-tagged object is skipped', async () => {
    const key = 'manual/dupbatch.jpg';
    const eTag = await put(stack, key, jpeg);
    const { queue } = stack.tierQueues.manual;
    await waitFor('the router to enqueue', async () => (stack.counters.get('router.enqueued.manual') >= 1 ? true : undefined));
    const task = uploadTask({ bucket: stack.bucket, key, eTag, size: jpeg.length, tier: 'manual' });
    const worker = makeWorker({ store: stack.store, queue, tiers: config, models: stack.models });
    const routed = await queue.receive({ max: 10, waitSeconds: 1 });
    const twin = { ...routed[0], id: 'twin', receipt: routed[0].receipt };
    const results = await worker.handle([routed[0], twin]);
    assert.deepEqual(results.map((r) => r.outcome.status).sort(), ['skipped', 'tagged']);
    assert.equal(faults.copies.get(key), 1);
    // Later, another copy of the same task: the marker says it is done.
    await queue.send([{ ...taskMessage(task), deduplicationId: 'later-duplicate' }]);
    const again = await worker.handle(await queue.receive({ max: 10, waitSeconds: 1 }));
    assert.deepEqual(
      again.map((r) => r.outcome),
      [{ status: 'skipped', reason: 'already-tagged' }],
    );
  });

  it('deleted while queued: dropped quietly (message deleted, nothing in the DLQ); overwritten while queued: only the newer upload is tagged', async () => {
    const { queue, dlq } = stack.tierQueues.manual;
    const worker = makeWorker({ store: stack.store, queue, tiers: config, models: stack.models });
    const routedBefore = stack.counters.get('router.enqueued.manual');
    const older = await gradientImage(200, 200, 'jpeg', 21),
      newer = await gradientImage(200, 200, 'jpeg', 22);
    await put(stack, 'manual/queued-then-deleted.jpg', jpeg);
    const olderETag = await put(stack, 'manual/queued-then-overwritten.jpg', older, { Metadata: { version: 'one' } });
    await waitFor('both tasks enqueued', async () => (stack.counters.get('router.enqueued.manual') >= routedBefore + 2 ? true : undefined));
    await stack.s3.send(new DeleteObjectCommand({ Bucket: stack.bucket, Key: 'manual/queued-then-deleted.jpg' }));
    const newerETag = await put(stack, 'manual/queued-then-overwritten.jpg', newer, { Metadata: { version: 'two' } });
    await waitFor('the newer upload enqueued', async () =>
      stack.counters.get('router.enqueued.manual') >= routedBefore + 3 ? true : undefined,
    );
    const outcomes: Record<string, string[]> = {};
    for (
      let messages = await queue.receive({ max: 10, waitSeconds: 1 });
      messages.length;
      messages = await queue.receive({ max: 10, waitSeconds: 1 })
    ) {
      for (const r of await worker.handle(messages))
        (outcomes[`${r.task!.key} ${r.task!.eTag === newerETag ? 'newer' : r.task!.eTag === olderETag ? 'older' : ''}`.trim()] ??= []).push(
          `${r.outcome.status} ${'reason' in r.outcome ? r.outcome.reason : ''}`.trim(),
        );
    }
    assert.deepEqual(outcomes, {
      'manual/queued-then-deleted.jpg': ['skipped gone'],
      'manual/queued-then-overwritten.jpg older': ['skipped changed'],
      'manual/queued-then-overwritten.jpg newer': ['tagged'],
    });
    const h = await head(stack, 'manual/queued-then-overwritten.jpg');
    assert.deepEqual(
      [h.Metadata!['effitag-etag'], h.Metadata!.version],
      [newerETag, 'two'],
      "the older task's result never landed on the newer upload",
    );
    const body = await (
      await stack.s3.send(new GetObjectCommand({ Bucket: stack.bucket, Key: 'manual/queued-then-overwritten.jpg' }))
    ).Body!.transformToByteArray();
    assert.deepEqual(Buffer.from(body), newer);
    assert.equal((await dlq.receive({ max: 10, waitSeconds: 0 })).length, 0);
  });

  it('a long batch keeps its lease (heartbeat): a second worker never gets its messages', async () => {
    const { queue } = stack.tierQueues.manual;
    const key = 'manual/slow batch.jpg';
    const routedBefore = stack.counters.get('router.enqueued.manual');
    await put(stack, key, jpeg);
    await waitFor('the task enqueued', async () => (stack.counters.get('router.enqueued.manual') > routedBefore ? true : undefined));
    // A lease of 2 s, and an engine that takes 7 s: without renewals the message would be visible
    // again three times over while the first worker still holds it.
    let inEngine!: () => void;
    const engineStarted = new Promise<void>((r) => {
      inEngine = r;
    });
    probe.beforeClassify = async () => {
      inEngine();
      await new Promise((r) => setTimeout(r, 7000));
    };
    const leasedWorker = () =>
      makeWorker({
        store: stack.store,
        queue,
        tiers: config,
        models: stack.models,
        options: { visibilitySeconds: 2, waitSeconds: 1, batchSize: 4 },
      });
    const first = leasedWorker();
    const second = leasedWorker();
    const copiesBefore = faults.copies.get(key) ?? 0;
    try {
      void first.run();
      await engineStarted;
      probe.beforeClassify = undefined;
      void second.run();
      await waitFor(
        'the slow batch tagged',
        async () => ((await head(stack, key)).Metadata?.['effitag-status'] === 'tagged' ? true : undefined),
        30_000,
      );
      await new Promise((r) => setTimeout(r, 2500));
    } finally {
      probe.beforeClassify = undefined;
      await Promise.all([first.stop(), second.stop()]);
    }
    assert.equal(first.counters.get('tagged'), 1);
    assert.equal(second.counters.get('tagged') + second.counters.get('skipped.already-tagged'), 0, 'the second worker never received it');
    assert.equal((faults.copies.get(key) ?? 0) - copiesBefore, 1, 'written back once');
  });

  it('an object overwritten between read and write is left as the newer upload', async () => {
    const key = 'race/photo.jpg';
    const newer = await gradientImage(300, 300, 'jpeg', 9);
    let newerETag = '';
    // Just before the first write-back, someone uploads new bytes: the If-Match copy must fail.
    faults.beforeCopy.set(key, async () => {
      newerETag = await put(stack, key, newer, { Metadata: { version: 'two' } });
    });
    await put(stack, key, jpeg, { Metadata: { version: 'one' } });
    const h = await waitFor('the newer upload to be tagged', async () => {
      const x = await head(stack, key);
      return newerETag && x.Metadata?.['effitag-etag'] === newerETag ? x : undefined;
    });
    assert.equal(h.Metadata!.version, 'two');
    const body = await (await stack.s3.send(new GetObjectCommand({ Bucket: stack.bucket, Key: key }))).Body!.transformToByteArray();
    assert.deepEqual(Buffer.from(body), newer, 'the newer bytes survived');
    assert.ok(stack.counters.get('skipped.changed') >= 1, 'the stale write was skipped');
  });

  it('bad inputs get a status on the object and the worker keeps going', async () => {
    const good = await gradientImage(256, 256, 'png', 1);
    const cases: [string, Buffer, RegExp][] = [
      ['bad/corrupt.jpg', Buffer.concat([jpeg.subarray(0, 200), Buffer.alloc(500, 0x55)]), /^(undecodable|unsupported-format): /],
      ['bad/empty.jpg', Buffer.alloc(0), /^empty: /],
      ['bad/text.jpg', Buffer.from('this is not a JPEG, only named like one'), /^unsupported-format: /],
      ['bad/truncated.png', good.subarray(0, Math.floor(good.length / 2)), /^undecodable: /],
      ['bad/bomb.png', pngBomb(30000, 30000), /^too-many-pixels: /],
      ['bad/bomb.heic', heicBomb(), /^too-many-pixels: /],
      ['bad/bomb.jpg', jpegBomb(jpeg), /^too-many-pixels: /],
    ];
    const etags = await Promise.all(cases.map(([k, b]) => put(stack, k, b)));
    const okETag = await put(stack, 'bad/after-the-bad-ones.png', good);
    for (const [i, [key, , reason]] of cases.entries()) {
      const h = await waitForStatus(stack, key, etags[i]);
      assert.equal(h.Metadata!['effitag-status'], 'failed', key);
      assert.match(h.Metadata!['effitag-reason'], reason, key);
    }
    assert.equal((await waitForStatus(stack, 'bad/after-the-bad-ones.png', okETag)).Metadata!['effitag-status'], 'tagged');
  });

  it('files that are not images and do not claim to be are left untouched', async () => {
    const before = stack.counters.get('router.dropped.not-an-image');
    await put(stack, 'docs/report.pdf', '%PDF-1.7 not an image', { ContentType: 'application/pdf' });
    await put(stack, 'docs/data.json', '{"a":1}', { ContentType: 'application/json' });
    await waitFor('both dropped by the router', async () =>
      stack.counters.get('router.dropped.not-an-image') - before >= 2 ? true : undefined,
    );
    for (const key of ['docs/report.pdf', 'docs/data.json']) {
      assert.equal((await head(stack, key)).Metadata?.['effitag-status'], undefined, key);
      assert.equal(faults.copies.get(key), undefined, `${key} was not rewritten`);
    }
  });

  it('transient S3 errors are retried with backoff until the object is tagged', async () => {
    const key = 'flaky/retry.jpg';
    faults.transientGets.set(key, 2);
    const eTag = await put(stack, key, jpeg);
    const h = await waitForStatus(stack, key, eTag);
    assert.equal(h.Metadata!['effitag-status'], 'tagged');
    assert.equal(faults.transientGets.get(key), 0, 'both injected failures were hit');
    assert.ok(stack.counters.get('retry.downloading: injected 503 SlowDown for flaky/retry.jpg') >= 2);
  });

  it('an SSE-C object is recorded once by the router, and a task for one is skipped by the worker: neither reaches a DLQ', async () => {
    const key = 'secret/ssec photo.jpg';
    const sseC = { SSECustomerAlgorithm: 'AES256', SSECustomerKey: Buffer.alloc(32, 1).toString('base64') };
    const eTag = await put(stack, key, jpeg, { ContentType: 'image/jpeg', ...sseC });
    await waitFor('the router to record the SSE-C object', async () =>
      stack.counters.get('router.dropped.unreadable-sse-c') >= 1 ? true : undefined,
    );
    // A task for it reaching a worker anyway (say, encrypted after routing): skipped, the message deleted.
    const task = uploadTask({ bucket: stack.bucket, key, eTag, size: jpeg.length, tier: 'main' });
    await stack.tierQueues.main.queue.send([taskMessage(task)]);
    await waitFor('the worker to skip it', async () => (stack.counters.get('skipped.unreadable-sse-c') >= 1 ? true : undefined));
    assert.equal(stack.counters.get('router.dropped.unreadable-sse-c'), 1, 'recorded once, not retried');
    assert.equal((await stack.intake.receive({ max: 10, waitSeconds: 0 })).length, 0);
    assert.equal((await stack.tierQueues.main.dlq.receive({ max: 10, waitSeconds: 0 })).length, 0);
    assert.equal(
      (await stack.tierQueues.main.queue.receive({ max: 10, waitSeconds: 0, visibilitySeconds: 0 })).filter((m) => m.body.includes('ssec'))
        .length,
      0,
    );
  });

  it('a poison message lands in the DLQ after N receives', async () => {
    const { queue, dlq } = stack.tierQueues.main;
    await queue.send([{ body: '{"v":1,"bucket":"x"', deduplicationId: 'poison-1', groupId: 'poison' }]);
    const dead = await waitFor(
      'the poison message in the DLQ',
      async () => {
        const got = await dlq.receive({ max: 1, waitSeconds: 1 });
        return got.length ? got : undefined;
      },
      20_000,
    );
    assert.equal(dead[0].body, '{"v":1,"bucket":"x"');
    assert.equal(stack.counters.get('poison.task body is not JSON'), 2, 'failed on its first two receives');
    // On its last receive (maxReceiveCount 3) the worker moved it, saying why.
    assert.equal(dead[0].attributes?.[DEAD_LETTER_ATTRIBUTES.reason], 'poison: task body is not JSON');
    assert.equal(dead[0].attributes?.[DEAD_LETTER_ATTRIBUTES.receives], '3');
    assert.equal(dead[0].attributes?.[DEAD_LETTER_ATTRIBUTES.source], stack.tierQueues.main.queue.name);
  });

  it("tags mode merges with the user's tags without dropping any", async () => {
    const key = 'tags/tagged.jpg';
    const before = stack.counters.get('router.enqueued.tagmode');
    const eTag = await put(stack, key, jpeg);
    // (s3rver ignores x-amz-tagging on PUT, so the user's nine tags are set afterwards.)
    const userTags = 'abcdefghi'.split('').map((k, i) => ({ Key: k, Value: String(i) }));
    await stack.s3.send(new PutObjectTaggingCommand({ Bucket: stack.bucket, Key: key, Tagging: { TagSet: userTags } }));
    await waitFor('the task', async () => (stack.counters.get('router.enqueued.tagmode') > before ? true : undefined));
    const { queue } = stack.tierQueues.tagmode;
    const worker = makeWorker({ store: stack.store, queue, tiers: config, models: stack.models });
    const results = await worker.handle(await queue.receive({ max: 10, waitSeconds: 1 }));
    assert.deepEqual(
      results.map((r) => r.outcome.status),
      ['tagged'],
    );
    const t = await stack.s3.send(new GetObjectTaggingCommand({ Bucket: stack.bucket, Key: key }));
    const keys = t.TagSet!.map((x) => x.Key).sort();
    assert.deepEqual(
      keys,
      ['a', 'b', 'c', 'd', 'e', 'effitag-tags', 'f', 'g', 'h', 'i'],
      'one slot left: only effitag-tags fits, no user tag dropped',
    );
    assert.ok(t.TagSet!.find((x) => x.Key === 'effitag-tags')!.Value!.length > 0);
    const h = await head(stack, key);
    assert.equal(h.ETag!.replace(/"/g, ''), eTag);
    assert.equal(h.Metadata?.['effitag-status'], undefined, 'tags mode does not rewrite the object');
  });

  it("the metadata write-back keeps the object's tags", async () => {
    const key = 'manual/keep-tags.jpg';
    const before = stack.counters.get('router.enqueued.manual');
    const eTag = await put(stack, key, jpeg);
    // s3rver ignores x-amz-tagging on PUT, so the tags are set on their own, before the task runs.
    await stack.s3.send(
      new PutObjectTaggingCommand({
        Bucket: stack.bucket,
        Key: key,
        Tagging: {
          TagSet: [
            { Key: 'team', Value: 'photo-desk' },
            { Key: 'pii', Value: 'no' },
          ],
        },
      }),
    );
    await waitFor('the router to enqueue', async () => (stack.counters.get('router.enqueued.manual') > before ? true : undefined));
    const { queue } = stack.tierQueues.manual;
    const worker = makeWorker({ store: stack.store, queue, tiers: config, models: stack.models });
    const results = await worker.handle(await queue.receive({ max: 10, waitSeconds: 1 }));
    assert.deepEqual(
      results.map((r) => [r.task?.key, r.outcome.status]),
      [[key, 'tagged']],
    );
    const h = await head(stack, key);
    assert.equal(h.Metadata!['effitag-etag'], eTag, 'written back');
    const tags = (await stack.s3.send(new GetObjectTaggingCommand({ Bucket: stack.bucket, Key: key }))).TagSet ?? [];
    assert.deepEqual(tags.map((t) => `${t.Key}=${t.Value}`).sort(), ['pii=no', 'team=photo-desk']);
  });

  it('SIGTERM mid-batch: every message is either written back or visible again', async () => {
    const { queue } = stack.tierQueues.manual;
    const before = stack.counters.get('router.enqueued.manual');
    const keys = Array.from({ length: 8 }, (_, i) => `manual/sigterm-${i}.jpg`);
    const etags = await Promise.all(keys.map((k) => put(stack, k, jpeg)));
    await waitFor('8 tasks enqueued', async () => (stack.counters.get('router.enqueued.manual') - before >= 8 ? true : undefined));
    let signalled = false;
    const worker = makeWorker({
      store: stack.store,
      queue,
      tiers: config,
      models: stack.models,
      options: { batchSize: 4, waitSeconds: 1 },
    });
    const unhook = stopOnSignals([worker]);
    probe.beforeClassify = async () => {
      if (!signalled) {
        signalled = true;
        process.emit('SIGTERM');
      }
      await new Promise((r) => setTimeout(r, 300));
    };
    try {
      await worker.run();
    } finally {
      probe.beforeClassify = undefined;
      unhook();
    }
    assert.ok(signalled, 'the signal arrived during inference');
    const tagged = [];
    for (const [i, key] of keys.entries()) {
      const h = await head(stack, key);
      if (h.Metadata?.['effitag-etag'] === etags[i]) tagged.push(key);
    }
    const visible = new Set<string>();
    for (let round = 0; round < 5 && tagged.length + visible.size < keys.length; round++) {
      for (const m of await queue.receive({ max: 10, waitSeconds: 1, visibilitySeconds: 30 })) visible.add(JSON.parse(m.body).key);
    }
    assert.ok(tagged.length >= 1 && tagged.length < keys.length, `the batch in hand finished (${tagged.length} tagged)`);
    assert.deepEqual([...tagged, ...visible].sort(), [...keys].sort(), 'nothing lost: tagged or back on the queue');
  });
});

describe('routing a batch of intake messages (the router Lambda and the embedded intake loop)', () => {
  it('routes the messages concurrently; only transient failures are retried, unreadable bodies are dropped', async () => {
    let inFlight = 0,
      most = 0;
    const routed: string[] = [];
    const router = {
      async handleBody(body: string) {
        inFlight++;
        most = Math.max(most, inFlight);
        await new Promise((r) => setTimeout(r, 20));
        inFlight--;
        if (body === 'slow-down') throw new StoreError('transient', 'HEAD: SlowDown (HTTP 503)');
        if (body === 'garbage') throw Object.assign(new Error('unrecognised event body'), { permanent: true });
        routed.push(body);
        return [];
      },
      handleObject: () => {
        throw new Error('unused');
      },
      decide: () => {
        throw new Error('unused');
      },
    };
    const messages = ['a', 'slow-down', 'garbage', 'b', 'c'].map((body, i) => ({ id: `m${i}`, body }));
    const retry = await routeBatch(router, messages);
    assert.deepEqual(retry, ['m1'], 'only the transient failure is retried');
    assert.deepEqual(routed.sort(), ['a', 'b', 'c']);
    assert.ok(most > 1, `messages of one batch are routed concurrently (at most ${most} at once)`);
  });
});

describe('S3 error classes', () => {
  const sdkError = (name: string, status: number, message = '') =>
    Object.assign(new Error(message), { name, $metadata: { httpStatusCode: status } });
  it('an object encrypted with a customer-provided key is unreadable (final), not a transient error or a bad request', () => {
    const ssec =
      'The object was stored using a form of Server Side Encryption. The correct parameters must be provided to retrieve the object.';
    assert.equal(classifyS3Error(sdkError('InvalidRequest', 400, ssec), 'GET s3://b/k').kind, 'unreadable');
    assert.equal(classifyS3Error(sdkError('BadRequest', 400), 'HEAD s3://b/k').kind, 'unreadable', 'S3 answers HEAD with a bare 400');
    assert.equal(classifyS3Error(sdkError('InvalidRange', 416), 'GET (range) s3://b/k').kind, 'invalid');
    assert.equal(classifyS3Error(sdkError('InvalidArgument', 400, 'Invalid version id specified'), 'GET s3://b/k').kind, 'invalid');
    assert.equal(classifyS3Error(sdkError('NoSuchKey', 404), 'GET s3://b/k').kind, 'not-found');
    assert.equal(classifyS3Error(sdkError('AccessDenied', 403), 'GET s3://b/k').kind, 'denied');
  });
});

describe('S3 adapter against a server that never answers', () => {
  it('abandons a silent request after the socket timeout, retries, then reports it as transient', async () => {
    let connections = 0;
    const sockets: Socket[] = [];
    const silent = createServer((socket) => {
      connections++;
      sockets.push(socket);
    });
    await new Promise<void>((r) => silent.listen(0, '127.0.0.1', r));
    const { port } = silent.address() as AddressInfo;
    const s3 = s3Client({
      s3Endpoint: `http://127.0.0.1:${port}`,
      credentials: { accessKeyId: 'k', secretAccessKey: 's' },
      socketTimeoutMs: 200,
    });
    try {
      const started = performance.now();
      await assert.rejects(
        new S3Store(s3).head({ bucket: 'b', key: 'k.jpg' }),
        (err: unknown) => err instanceof StoreError && err.kind === 'transient',
      );
      assert.ok(performance.now() - started < 15_000, 'gave up instead of waiting forever');
      assert.equal(connections, 4, 'the first try and three retries');
    } finally {
      s3.destroy();
      for (const s of sockets) s.destroy();
      await new Promise((r) => silent.close(r));
    }
  });
});

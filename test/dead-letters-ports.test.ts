/**
 * Dead letters on the queue port (issue 22): a queue tells its depth (visible, in flight, delayed,
 * as SQS's ApproximateNumberOfMessages* do) and its dead-letter queue, so the dead-letter core
 * (list, redrive) and the gallery's status view run on in-memory queues, and SQS implements the
 * same port (checked once against the embedded SQS stand-in).
 */
import assert from 'node:assert/strict';
import { after, describe, it } from 'node:test';
import { S3Client } from '@aws-sdk/client-s3';
import { startGallery } from '../gallery/server.ts';
import { startSqsServer } from '../local/sqs-server.ts';
import { sqsClient } from '../pipeline/aws/clients.ts';
import { generateCredentials } from '../pipeline/aws/local-credentials.ts';
import { SqsQueue } from '../pipeline/aws/sqs-queue.ts';
import { listDeadLetters, redriveDeadLetters } from '../pipeline/dead-letters.ts';
import type { MessageQueue } from '../pipeline/ports.ts';
import { DEAD_LETTER_ATTRIBUTES, makeWorker } from '../pipeline/worker.ts';
import { parseTiers } from '../tiers/schema.ts';
import { gradientImage } from './support/fixtures.ts';
import { denyingStore, fixedCatalog, MemoryIndex, MemoryQueue, MemoryStore } from './support/memory-ports.ts';

const TIERS = parseTiers({
  version: 1,
  tiers: { main: { variants: ['b0'], compute: { target: 'lambda-cpu', memoryMb: 2048 }, engine: 'ort', batchSize: 8 } },
  routing: { default: { tier: 'main' } },
});

const task = (key: string, eTag: string, size: number) =>
  JSON.stringify({
    v: 1,
    bucket: 'photos',
    key,
    eTag,
    size,
    tier: 'main',
    variant: 'b0',
    source: 'upload',
    enqueuedAt: '2026-12-07T00:00:00Z',
  });

const depthOf = async (q: MessageQueue) => {
  const { visible, inFlight, delayed, total } = await q.depth();
  return { visible, inFlight, delayed, total };
};

/**
 * A tier queue (redrive after 2 receives) whose DLQ holds three dead letters of three kinds: one the
 * worker recorded a reason for, one the queue's redrive policy moved (no reason), one poison body.
 * The source keeps one message waiting and one in flight.
 */
async function deadLettered() {
  const source = new MemoryQueue('main.fifo');
  const dlq = new MemoryQueue('main-dlq.fifo');
  source.redrivePolicy = { queue: dlq, maxReceives: 2 };
  const store = new MemoryStore();
  const png = await gradientImage(32, 32, 'png');
  const eTag = store.put('photos', 'a.png', png);

  // The worker finds the DLQ through the port, as the runtime does.
  const deadLetter = await source.deadLetterQueue();
  assert.equal(deadLetter?.queue, dlq);
  const worker = makeWorker({
    store: denyingStore(store),
    queue: source,
    tiers: TIERS,
    models: fixedCatalog({ topClass: 1 }),
    options: { retryBaseSeconds: 0, deadLetter },
  });
  await source.send([{ body: task('a.png', eTag, png.length), deduplicationId: 'a', groupId: 'g' }]);
  const outcomes: string[] = [];
  for (let i = 0; i < 2; i++) outcomes.push(...(await worker.handle(await source.receive({ max: 1 }))).map((r) => r.outcome.status));
  assert.deepEqual(outcomes.at(-1), 'dead-lettered', `outcomes: ${outcomes.join(', ')}`);

  // Received twice and never handled: SQS's redrive policy moves it on the next receive.
  await source.send([{ body: task('b.png', 'eb', 1), deduplicationId: 'b', groupId: 'g' }]);
  for (let i = 0; i < 2; i++) for (const m of await source.receive({ max: 1 })) await source.setVisibility(m, 0);
  await dlq.send([{ body: 'not a task', deduplicationId: 'p', groupId: 'g' }]);

  // Still in the source: one waiting, one received (in flight).
  await source.send([{ body: task('c.png', 'ec', 1), deduplicationId: 'c', groupId: 'g' }]);
  await source.send([{ body: task('d.png', 'ed', 1), deduplicationId: 'd', groupId: 'g' }]);
  assert.equal((await source.receive({ max: 1, visibilitySeconds: 60 })).length, 1, 'the redrive move happened on this receive');
  return { source, dlq };
}

describe('the queue port: depth and dead-letter queue', () => {
  it('counts visible and in-flight messages as SQS does (in-memory queue)', async () => {
    const q = new MemoryQueue('q');
    await q.send([{ body: '1' }, { body: '2' }, { body: '3' }]);
    assert.deepEqual(await depthOf(q), { visible: 3, inFlight: 0, delayed: 0, total: 3 });
    const got = await q.receive({ max: 2, visibilitySeconds: 60 });
    assert.deepEqual(await depthOf(q), { visible: 1, inFlight: 2, delayed: 0, total: 3 });
    await q.setVisibility(got[0], 0);
    await q.delete([got[1]]);
    assert.deepEqual(await depthOf(q), { visible: 2, inFlight: 0, delayed: 0, total: 2 });
    assert.equal(await q.deadLetterQueue(), undefined, 'no redrive policy, no DLQ');
  });

  it('lists dead letters by reason on in-memory queues, leaving them in place', async () => {
    const { source, dlq } = await deadLettered();
    assert.deepEqual(await depthOf(dlq), { visible: 3, inFlight: 0, delayed: 0, total: 3 });
    const reports = await listDeadLetters([
      { name: 'main', queue: source },
      { name: 'no-dlq', queue: new MemoryQueue('plain') },
    ]);
    assert.equal(reports.length, 1, 'a queue without a DLQ has no report');
    const [report] = reports;
    assert.equal(report.source, 'main');
    assert.equal(report.deadLetterQueue, 'main-dlq.fifo');
    assert.equal(report.messages, 3);
    assert.deepEqual(
      report.groups.map((g) => [g.reason, g.count, g.samples]).sort((a, b) => String(a[0]).localeCompare(String(b[0]))),
      [
        ["moved by the queue's redrive policy after 2 receives (no reason recorded: see the worker's logs)", 1, ['s3://photos/b.png']],
        [report.groups.find((g) => g.reason.startsWith('poison: '))?.reason, 1, ['not a task']],
        ['retry: access denied downloading', 1, ['s3://photos/a.png']],
      ],
    );
    assert.equal(dlq.pending().find((m) => m.body.includes('a.png'))?.attributes?.[DEAD_LETTER_ATTRIBUTES.source], 'main.fifo');
    // Read, then made visible again: a listing takes nothing away.
    assert.deepEqual(await depthOf(dlq), { visible: 3, inFlight: 0, delayed: 0, total: 3 });
  });

  it('redrives dead letters back to their queue on in-memory queues', async () => {
    const { source, dlq } = await deadLettered();
    const report = await redriveDeadLetters({ name: 'main', queue: source });
    assert.deepEqual(report, { sent: 3, deadLetterQueue: 'main-dlq.fifo' });
    assert.deepEqual(await depthOf(dlq), { visible: 0, inFlight: 0, delayed: 0, total: 0 });
    assert.deepEqual(await depthOf(source), { visible: 4, inFlight: 1, delayed: 0, total: 5 });
    assert.deepEqual(await redriveDeadLetters({ name: 'plain', queue: new MemoryQueue('plain') }), { sent: 0 });
  });

  it("the gallery's status view reads depths and dead letters through the port", async () => {
    const { source } = await deadLettered();
    const gallery = await startGallery({
      bucket: 'photos',
      index: new MemoryIndex(),
      store: new MemoryStore(),
      // Signs links to originals only; the status view makes no S3 call.
      s3: new S3Client({ region: 'us-east-1', credentials: { accessKeyId: 'x', secretAccessKey: 'x' } }),
      queues: async () => [{ name: 'main', queue: source }],
    });
    try {
      const res = await fetch(new URL('/api/status', gallery.url));
      assert.equal(res.status, 200);
      const body = (await res.json()) as {
        queues: unknown[];
        failures: { queue: string; reason: string; count: number; samples: string[] }[];
      };
      assert.deepEqual(body.queues, [{ queue: 'main', waiting: 1, inFlight: 1, deadLettered: 3 }]);
      assert.deepEqual(body.failures.map((f) => [f.queue, f.count, f.samples[0]]).sort(), [
        ['main', 1, 'not a task'],
        ['main', 1, 's3://photos/a.png'],
        ['main', 1, 's3://photos/b.png'],
      ]);
    } finally {
      await gallery.close();
    }
  });

  describe('on SQS (the embedded stand-in)', () => {
    const stops: (() => Promise<void>)[] = [];
    after(async () => {
      for (const stop of stops) await stop();
    });

    it('splits the depth into visible, in flight and delayed, and finds the DLQ from the redrive policy', async () => {
      const credentials = generateCredentials();
      const server = await startSqsServer({ credentials });
      stops.push(() => server.close());
      const sqs = sqsClient({ sqsEndpoint: server.endpoint, credentials });
      const dlqMade = await server.createQueue('port-dlq');
      const made = await server.createQueue('port', {
        RedrivePolicy: JSON.stringify({ deadLetterTargetArn: dlqMade.arn, maxReceiveCount: '4' }),
      });
      const q: MessageQueue = new SqsQueue(sqs, made.url);
      await q.send([{ body: '1' }, { body: '2' }, { body: '3' }]);
      assert.equal((await q.receive({ max: 1, waitSeconds: 0, visibilitySeconds: 60 })).length, 1);
      assert.deepEqual(await depthOf(q), { visible: 2, inFlight: 1, delayed: 0, total: 3 });
      const dl = await q.deadLetterQueue();
      assert.equal(dl?.queue.name, 'port-dlq');
      assert.equal(dl?.maxReceives, 4);
      assert.equal(await dl?.queue.deadLetterQueue(), undefined);
    });
  });
});

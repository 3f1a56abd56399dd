/**
 * DLQ redrive on the embedded stack's FIFO queues (issue 21): a message SQS's own redrive policy
 * moved to the DLQ still carries the deduplication id it was first sent with, inside the 5-minute
 * window; sent back under that id, the queue would drop it as a duplicate. A redriven message that
 * fails for good again goes back to its DLQ with its reason, not deleted. `dlq redrive` on empty
 * queues says so.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import type { EmbeddedStack } from '../local/stack.ts';
import { redriveDeadLetters } from '../pipeline/dead-letters.ts';
import type { QueueMessage } from '../pipeline/ports.ts';
import { taskMessage, type Task } from '../pipeline/task.ts';
import { DEAD_LETTER_ATTRIBUTES, makeWorker } from '../pipeline/worker.ts';
import type { TiersFile } from '../tiers/schema.ts';
import { parseTiers } from '../tiers/schema.ts';
import { runEffitag } from './support/effitag-local.ts';
import { gradientImage } from './support/fixtures.ts';
import { put, startTestStack, waitFor } from './support/local-stack.ts';
import { DEDUPLICATION_WINDOW_MS, denyingStore, fixedCatalog, MemoryQueue, MemoryStore } from './support/memory-ports.ts';

const TIERS = {
  version: 1,
  tiers: { main: { variants: ['b0'], compute: { target: 'lambda-cpu', memoryMb: 3538 }, engine: 'ort', batchSize: 4, minConfidence: 0 } },
  routing: { default: { tier: 'main' } },
};

const cli = (args: string[]) => runEffitag(args);

describe('DLQ redrive on FIFO queues', () => {
  let stack: EmbeddedStack;
  let config: TiersFile;
  before(async () => {
    // No live router or worker: the test moves every message itself.
    ({ stack, config } = await startTestStack(TIERS, { runWorkers: () => false, runRouter: false, maxReceiveCount: 3 }));
  });
  after(async () => {
    await stack?.stop();
  });

  /** Receive until `want` messages came back or the deadline passes (the queue answers at once). */
  async function receiveAll(queue: EmbeddedStack['intake'], want: number): Promise<QueueMessage[]> {
    const got: QueueMessage[] = [];
    await waitFor(`${want} message(s)`, async () => {
      got.push(...(await queue.receive({ max: 10, waitSeconds: 0, visibilitySeconds: 60 })));
      return got.length >= want ? true : undefined;
    });
    return got;
  }

  it('a message moved by the redrive policy inside the 5-minute window comes back; failing for good again, it returns to the DLQ with its reason', async () => {
    const { queue, dlq } = stack.tierQueues.main;
    const eTag = await put(stack, 'redrive/photo.jpg', await gradientImage(120, 90, 'jpeg', 3), { ContentType: 'image/jpeg' });
    const task: Task = {
      v: 1,
      bucket: stack.bucket,
      key: 'redrive/photo.jpg',
      eTag,
      revision: 's:01',
      size: 1,
      tier: 'main',
      variant: 'b0',
      source: 'upload',
      enqueuedAt: new Date().toISOString(),
    };
    const sent = taskMessage(task);
    await queue.send([sent]);
    // A worker that crashes before settling: received maxReceiveCount (3) times, never deleted;
    // the next receive finds SQS's redrive policy has moved it to the DLQ, reasonless.
    for (let i = 0; i < 3; i++) {
      const got = await waitFor('the task visible again', async () => {
        const m = await queue.receive({ max: 10, waitSeconds: 0, visibilitySeconds: 0 });
        return m.length ? m : undefined;
      });
      assert.equal(got.length, 1);
    }
    assert.deepEqual(await queue.receive({ max: 10, waitSeconds: 0 }), [], 'moved by the redrive policy');
    const [moved] = await receiveAll(dlq, 1);
    assert.equal(moved.deduplicationId, sent.deduplicationId, 'the DLQ holds it under its first deduplication id');
    await dlq.setVisibility(moved, 0);

    // Redriven within seconds of the first send: it must not be dropped as a duplicate.
    assert.equal((await redriveDeadLetters({ name: 'main', queue })).sent, 1);
    const [back] = await receiveAll(queue, 1);
    assert.equal(back.body, sent.body);
    assert.equal(back.groupId, sent.groupId, 'same message group: per-object order is kept');
    assert.equal(back.receiveCount, 1, 'a fresh message, with its receives ahead of it');
    await queue.setVisibility(back, 0);

    // Still failing: on its last receive the worker moves it back to the DLQ, with its reason.
    const failing = makeWorker({
      store: denyingStore(stack.store),
      queue,
      tiers: config,
      models: stack.models,
      options: { waitSeconds: 1, retryBaseSeconds: 0.1, deadLetter: { queue: dlq, maxReceives: 3 } },
    });
    void failing.run();
    try {
      await waitFor('dead-lettered again', async () =>
        failing.counters.get('dead-lettered.retry: access denied downloading') === 1 ? true : undefined,
      );
    } finally {
      await failing.stop();
    }
    const [again] = await receiveAll(dlq, 1);
    assert.equal(again.body, sent.body, 'back in the DLQ, not deleted');
    assert.equal(again.attributes?.[DEAD_LETTER_ATTRIBUTES.reason], 'retry: access denied downloading');
    await dlq.setVisibility(again, 0);

    // And a second redrive inside the window brings it back once more.
    assert.equal((await redriveDeadLetters({ name: 'main', queue })).sent, 1);
    const [twice] = await receiveAll(queue, 1);
    assert.equal(twice.body, sent.body);
    await queue.delete([twice]);
  });

  it('`dlq redrive` on empty dead-letter queues says there was nothing to send back', async () => {
    const out = await cli(['dlq', 'redrive']);
    assert.equal(out.code, 0, out.stderr);
    assert.match(out.stdout, /^intake: nothing to send back \(effitag-intake-dlq is empty\)$/m);
    assert.match(out.stdout, /^main: nothing to send back \(effitag-main-dlq\.fifo is empty\)$/m);
  });
});

describe('dead letters sharing a deduplication id (in-memory FIFO with its 5-minute window)', () => {
  /** A source queue whose redrive policy moves a message to its DLQ after `maxReceives` receives. */
  function queues(maxReceives: number) {
    const source = new MemoryQueue('main.fifo');
    const dlq = new MemoryQueue('main-dlq.fifo');
    source.redrivePolicy = { queue: dlq, maxReceives };
    let now = Date.parse('2026-12-06T10:00:00Z');
    source.clock = () => now;
    dlq.clock = () => now;
    return { source, dlq, advance: (ms: number) => (now += ms) };
  }
  const body = JSON.stringify({
    v: 1,
    bucket: 'photos',
    key: 'a.png',
    eTag: 'e',
    size: 1,
    tier: 'main',
    variant: 'b0',
    source: 'backfill',
    enqueuedAt: '2026-12-06T10:00:00Z',
  });

  it('two messages moved by the redrive policy under one deduplication id both come back', async () => {
    const { source, dlq, advance } = queues(1);
    // The same task sent twice, over 5 minutes apart (a backfill run again): both accepted, both
    // received once by a worker that crashes, both moved to the DLQ with the same deduplication id.
    await source.send([{ body, deduplicationId: 'T', groupId: 'g' }]);
    const [first] = await source.receive({ max: 1 });
    await source.setVisibility(first, 0);
    advance(DEDUPLICATION_WINDOW_MS + 1);
    await source.send([{ body, deduplicationId: 'T', groupId: 'g' }]);
    const [second] = await source.receive({ max: 10 });
    assert.notEqual(second.id, first.id);
    await source.setVisibility(second, 0);
    assert.deepEqual(await source.receive({ max: 10 }), []);
    assert.deepEqual(
      dlq.pending().map((m) => m.deduplicationId),
      ['T', 'T'],
    );

    const report = await redriveDeadLetters({ name: 'main', queue: source });
    assert.deepEqual(report, { sent: 2, deadLetterQueue: 'main-dlq.fifo' });
    assert.equal(source.pending().length, 2, 'neither is dropped as a duplicate of the other');
    assert.equal(source.duplicatesDropped, 0);
    assert.equal(dlq.pending().length, 0);
    // Redriven inside the window of the first send: new ids, not T.
    assert.ok(source.pending().every((m) => m.deduplicationId !== 'T'));
  });

  it('a redrive run again after a crash between send and delete sends nothing twice', async () => {
    const { source, dlq } = queues(1);
    await source.send([{ body, deduplicationId: 'T', groupId: 'g' }]);
    const [m] = await source.receive({ max: 1 });
    await source.setVisibility(m, 0);
    await source.receive({ max: 1 }); // moved
    const [dead] = await dlq.receive({ max: 10 });
    await dlq.setVisibility(dead, 0);
    // The send went out; the delete did not (the process died): the DLQ still holds it.
    const crashing = Object.assign(Object.create(dlq) as MemoryQueue, {
      delete: async () => {
        throw new Error('killed');
      },
    });
    const sourceWithCrashingDlq = Object.assign(Object.create(source) as MemoryQueue, {
      deadLetterQueue: async () => ({ queue: crashing, maxReceives: 1 }),
    });
    await assert.rejects(redriveDeadLetters({ name: 'main', queue: sourceWithCrashingDlq }), /killed/);
    for (const x of dlq.pending()) x.visibleAt = 0;
    const again = await redriveDeadLetters({ name: 'main', queue: source });
    assert.equal(again.sent, 1);
    assert.equal(source.pending().length, 1, 'one message back, not two');
    assert.equal(source.duplicatesDropped, 1);
  });

  it('two messages sharing a deduplication id that fail for good both reach the DLQ (none deleted unrecorded)', async () => {
    const { source, dlq, advance } = queues(5);
    const store = new MemoryStore();
    const png = await gradientImage(32, 32, 'png');
    const eTag = store.put('photos', 'a.png', png);
    const task = JSON.stringify({ ...JSON.parse(body), eTag, size: png.length, source: 'upload' });
    await source.send([{ body: task, deduplicationId: 'T', groupId: 'g' }]);
    advance(DEDUPLICATION_WINDOW_MS + 1);
    await source.send([{ body: task, deduplicationId: 'T', groupId: 'g' }]);
    const tiers = parseTiers({
      version: 1,
      tiers: { main: { variants: ['b0'], compute: { target: 'lambda-cpu', memoryMb: 2048 }, engine: 'ort', batchSize: 8 } },
      routing: { default: { tier: 'main' } },
    });
    const worker = makeWorker({
      store: denyingStore(store),
      queue: source,
      tiers,
      models: fixedCatalog({ topClass: 1 }),
      options: { retryBaseSeconds: 0, deadLetter: { queue: dlq, maxReceives: 1 } },
    });
    // One batch each (the same object version in one batch is one task).
    for (let i = 0; i < 2; i++) {
      const [r] = await worker.handle(await source.receive({ max: 1 }));
      assert.equal(r.outcome.status, 'dead-lettered');
    }
    assert.equal(source.pending().length, 0);
    assert.equal(dlq.pending().length, 2, 'both in the DLQ');
    assert.deepEqual(
      dlq.pending().map((m) => m.attributes?.[DEAD_LETTER_ATTRIBUTES.reason]),
      ['retry: access denied downloading', 'retry: access denied downloading'],
    );
  });
});

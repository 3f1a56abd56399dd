/**
 * Dead-letter queues end to end on the embedded stack: a worker moves what fails on its last
 * receive to the DLQ with its reason; `effitag dlq list` groups them by reason; `effitag dlq
 * redrive` sends them back, and once the fault is gone they are processed.
 */
import assert from 'node:assert/strict';
import { after, describe, it } from 'node:test';
import type { EmbeddedStack } from '../local/stack.ts';
import { taskMessage } from '../pipeline/task.ts';
import { makeWorker } from '../pipeline/worker.ts';
import type { TiersFile } from '../tiers/schema.ts';
import { runEffitag } from './support/effitag-local.ts';
import { gradientImage } from './support/fixtures.ts';
import { head, put, startTestStack, waitFor } from './support/local-stack.ts';
import { denyingStore } from './support/memory-ports.ts';

const TIERS = {
  version: 1,
  tiers: { main: { variants: ['b0'], compute: { target: 'lambda-cpu', memoryMb: 3538 }, engine: 'ort', batchSize: 4, minConfidence: 0 } },
  routing: { default: { tier: 'main' } },
};

const cli = (args: string[]) => runEffitag(args);

describe('dead-letter queues: reasons, list and redrive', () => {
  let stack: EmbeddedStack;
  let config: TiersFile;
  after(async () => {
    await stack?.stop();
  });

  it('failures on their last receive carry their reason; list groups them; redrive sends them back and they are processed', async () => {
    ({ stack, config } = await startTestStack(TIERS, { runWorkers: () => false }));
    const { queue, dlq } = stack.tierQueues.main;
    const eTag = await put(stack, 'dlq/photo.jpg', await gradientImage(200, 200, 'jpeg', 5), { ContentType: 'image/jpeg' });
    await waitFor('the task enqueued', async () => (stack.counters.get('router.enqueued.main') >= 1 ? true : undefined));
    await queue.send([{ body: 'not a task', deduplicationId: 'poison-1', groupId: 'poison' }]);
    // What SQS's redrive would move (a message that ran out of receives in a crashing worker): no reason on it.
    await dlq.send([
      {
        ...taskMessage({
          v: 1,
          bucket: stack.bucket,
          key: 'dlq/other.jpg',
          eTag: 'e',
          size: 1,
          tier: 'main',
          variant: 'b0',
          source: 'upload',
          enqueuedAt: new Date().toISOString(),
        }),
        deduplicationId: 'by-redrive',
      },
    ]);

    // A worker whose downloads are refused (a missing permission, say), until fixed.
    const failing = makeWorker({
      store: denyingStore(stack.store),
      queue,
      tiers: config,
      models: stack.models,
      options: { waitSeconds: 1, retryBaseSeconds: 0.2, deadLetter: { queue: dlq, maxReceives: 3 } },
    });
    void failing.run();
    await waitFor(
      'both failures dead-lettered',
      async () =>
        failing.counters.get('dead-lettered.retry: access denied downloading') +
          failing.counters.get('dead-lettered.poison: task body is not JSON') ===
        2
          ? true
          : undefined,
      30_000,
    );
    await failing.stop();

    const listed = await cli(['dlq', 'list', '--json']);
    assert.equal(listed.code, 0, listed.stderr);
    const reports = JSON.parse(listed.stdout) as {
      source: string;
      messages: number;
      groups: { reason: string; count: number; samples: string[] }[];
    }[];
    const main = reports.find((r) => r.source === 'main')!;
    assert.equal(main.messages, 3);
    assert.deepEqual(
      main.groups.map((g) => [g.reason.replace(/after \d+ receives/, 'after N receives'), g.count, g.samples[0]]).sort(),
      [
        [
          "moved by the queue's redrive policy after N receives (no reason recorded: see the worker's logs)",
          1,
          `s3://${stack.bucket}/dlq/other.jpg`,
        ],
        ['poison: task body is not JSON', 1, 'not a task'],
        ['retry: access denied downloading', 1, `s3://${stack.bucket}/dlq/photo.jpg`],
      ].sort(),
    );
    assert.equal(reports.find((r) => r.source === 'intake')!.messages, 0);
    const text = await cli(['dlq', 'list', '--tier', 'main']);
    assert.match(text.stdout, /^main → effitag-main-dlq\.fifo: 3 message\(s\)$/m);
    assert.match(text.stdout, /^\s+1\s+retry: access denied downloading\n\s+e\.g\. s3:\/\/effitag-local\/dlq\/photo\.jpg$/m);

    const redriven = await cli(['dlq', 'redrive', '--tier', 'main']);
    assert.equal(redriven.code, 0, redriven.stderr);
    assert.match(redriven.stdout, /^main: 3 message\(s\) sent back$/m);
    assert.equal((await dlq.receive({ max: 10, waitSeconds: 0 })).length, 0, 'the DLQ is empty');
    // The permission fixed: the photo is tagged; the poison comes back to the DLQ, still saying why.
    const fixed = makeWorker({
      store: stack.store,
      queue,
      tiers: config,
      models: stack.models,
      options: { waitSeconds: 1, retryBaseSeconds: 0.2, deadLetter: { queue: dlq, maxReceives: 3 } },
    });
    void fixed.run();
    try {
      const h = await waitFor(
        'the redriven photo tagged',
        async () => {
          const x = await head(stack, 'dlq/photo.jpg');
          return x.Metadata?.['effitag-status'] ? x : undefined;
        },
        30_000,
      );
      assert.equal(h.Metadata!['effitag-etag'], eTag);
      assert.equal(h.Metadata!['effitag-status'], 'tagged');
    } finally {
      await fixed.stop();
    }
  });
});

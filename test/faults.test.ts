/**
 * Faults injected between the pipeline and the embedded S3/SQS by a proxy (test/support/
 * fault-proxy.ts): the router and worker cores run unchanged over real HTTP. Each test asserts
 * every object's end state: tagged once, its bytes and its user metadata unchanged, nothing in a DLQ.
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { GetObjectCommand } from '@aws-sdk/client-s3';
import { after, describe, it } from 'node:test';
import type { EmbeddedStack } from '../local/stack.ts';
import { gradientImage } from './support/fixtures.ts';
import { startFaultProxy, type FaultProxy } from './support/fault-proxy.ts';
import { head, put, startTestStack, waitFor } from './support/local-stack.ts';

const TIERS = {
  version: 1,
  tiers: {
    main: { variants: ['b0'], compute: { target: 'lambda-cpu', memoryMb: 3538 }, engine: 'ort', batchSize: 8, topK: 3, minConfidence: 0 },
  },
  routing: { default: { tier: 'main' } },
};

const md5 = (b: Uint8Array) => createHash('md5').update(b).digest('hex');

/** Upload `n` images with user metadata; returns what each object must still hold at the end. */
async function upload(stack: EmbeddedStack, prefix: string, n: number, seed: number) {
  const objects: { key: string; md5: string; owner: string }[] = [];
  await Promise.all(
    Array.from({ length: n }, async (_, i) => {
      const key = `${prefix}/photo ${i}.jpg`;
      const body = await gradientImage(240, 180, 'jpeg', seed + i);
      await put(stack, key, body, { ContentType: 'image/jpeg', Metadata: { owner: `owner-${i}` } });
      objects.push({ key, md5: md5(body), owner: `owner-${i}` });
    }),
  );
  return objects;
}

async function assertEndState(stack: EmbeddedStack, proxy: FaultProxy, objects: Awaited<ReturnType<typeof upload>>) {
  for (const o of objects) {
    const h = await head(stack, o.key);
    assert.equal(h.Metadata?.['effitag-status'], 'tagged', o.key);
    assert.equal(h.Metadata?.owner, o.owner, `${o.key}: user metadata kept`);
    assert.equal(h.ContentType, 'image/jpeg');
    const body = await (await stack.s3.send(new GetObjectCommand({ Bucket: stack.bucket, Key: o.key }))).Body!.transformToByteArray();
    assert.equal(md5(body), o.md5, `${o.key}: bytes unchanged`);
    assert.equal(proxy.copies.get(o.key), 1, `${o.key}: written back exactly once`);
  }
  for (const { dlq } of Object.values(stack.tierQueues))
    assert.equal((await dlq.receive({ max: 10, waitSeconds: 0 })).length, 0, 'nothing in a DLQ');
  assert.equal((await stack.intake.receive({ max: 10, waitSeconds: 0 })).length, 0, 'the intake is drained');
}

/** What the workers dead-lettered so far (their counters). */
const lost = (stack: EmbeddedStack) =>
  Object.entries(stack.counters.snapshot())
    .filter(([name, n]) => n > 0 && name.startsWith('dead-lettered.'))
    .map(([name]) => name);

const allTagged = (stack: EmbeddedStack, objects: { key: string }[], timeoutMs: number) =>
  waitFor(
    'every object tagged',
    async () => {
      // Something dead-lettered will never be tagged: fail now, saying what, rather than at the deadline.
      assert.deepEqual(lost(stack), [], 'nothing dead-lettered');
      return (await Promise.all(objects.map((o) => head(stack, o.key)))).every((h) => h.Metadata?.['effitag-status']) ? true : undefined;
    },
    timeoutMs,
  );

/** SQS's DeleteMessageBatch (JSON protocol) on a tier queue (FIFO), as the proxy sees it. */
const tierDelete = (req: { headers: Record<string, unknown> }, body: Buffer) =>
  String(req.headers['x-amz-target'] ?? '').endsWith('.DeleteMessageBatch') && /\.fifo/.test(body.toString('utf8'));

describe('fault injection: S3 answering 503 SlowDown and 500 InternalError', () => {
  let stack: EmbeddedStack;
  let proxy: FaultProxy;
  after(async () => {
    await stack?.stop();
    await proxy?.close();
  });

  it("a quarter of the pipeline's S3 requests fail: retried by the S3 client with backoff, nothing lost, nothing written twice", async () => {
    ({ stack } = await startTestStack(TIERS, {
      // One receive per message: a fault the S3 client does not retry itself sends its message to a
      // DLQ, instead of being masked by the queue's redelivery.
      maxReceiveCount: 1,
      interpose: {
        s3: async (endpoint) => {
          proxy = await startFaultProxy(endpoint, { seed: 7 });
          return proxy.endpoint;
        },
      },
    }));
    proxy.failFraction = 0.25;
    // At most two failures per request: within the client's four attempts, never past them.
    proxy.maxFailuresPerInvocation = 2;
    const objects = await upload(stack, 'slowdown', 16, 40);
    await allTagged(stack, objects, 60_000);
    proxy.failFraction = 0;
    assert.ok(proxy.injected >= 10, `faults were injected (${proxy.injected})`);
    await assertEndState(stack, proxy, objects);
  });
});

describe('fault injection: SQS unreachable for a few seconds', () => {
  let stack: EmbeddedStack;
  let s3Proxy: FaultProxy, sqsProxy: FaultProxy;
  after(async () => {
    await stack?.stop();
    await s3Proxy?.close();
    await sqsProxy?.close();
  });

  it('the router and the worker resume by themselves; every upload made during the outage is tagged once', async () => {
    ({ stack } = await startTestStack(TIERS, {
      visibilitySeconds: 5,
      interpose: {
        s3: async (endpoint) => {
          s3Proxy = await startFaultProxy(endpoint);
          return s3Proxy.endpoint;
        },
        sqs: async (endpoint) => {
          sqsProxy = await startFaultProxy(endpoint);
          return sqsProxy.endpoint;
        },
      },
    }));
    const before = await upload(stack, 'before-outage', 6, 60);
    sqsProxy.down = true;
    const resetsAtStart = sqsProxy.resets;
    const during = await upload(stack, 'during-outage', 6, 70);
    // The router and the workers have tried SQS (and been cut off) several times since.
    await waitFor('the pipeline to meet the outage', async () => (sqsProxy.resets >= resetsAtStart + 6 ? true : undefined));
    for (const o of during)
      assert.equal((await head(stack, o.key)).Metadata?.['effitag-status'], undefined, 'nothing moves while SQS is down');
    // SQS back, but refusing the tier queues' deletes: tasks are tagged and their deletes refused
    // (every attempt of the SDK's), so the messages come back after their lease.
    const refusedAttempts = new Map<string, number>();
    sqsProxy.refuse = (req, body) => {
      if (!tierDelete(req, body)) return false;
      const id = String(req.headers['amz-sdk-invocation-id']);
      refusedAttempts.set(id, (refusedAttempts.get(id) ?? 0) + 1);
      return true;
    };
    sqsProxy.down = false;
    // The SQS client makes 4 attempts: a delete refused 4 times has failed for the worker.
    await waitFor(
      'a delete refused on every attempt',
      async () => (Math.max(0, ...refusedAttempts.values()) >= 4 ? true : undefined),
      60_000,
    );
    sqsProxy.refuse = undefined;
    await allTagged(stack, [...before, ...during], 60_000);
    // The messages whose delete was refused come back once and are skipped by their marker; the
    // tier queue then drains.
    await waitFor(
      'the refused messages back and skipped by their marker',
      async () => (stack.counters.get('skipped.already-tagged') >= 1 ? true : undefined),
      60_000,
    );
    await waitFor(
      'the tier queue drained',
      async () => ((await stack.tierQueues.main.queue.depth()).total === 0 ? true : undefined),
      60_000,
    );
    await assertEndState(stack, s3Proxy, [...before, ...during]);
  });
});

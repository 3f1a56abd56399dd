/**
 * Issue 23 on a deployed stack: the runtimes (Lambda worker and router, the GPU container, all through
 * `deployed()` → `openStack`) get the stack's S3 Vectors index when their environment names its
 * vector bucket (EFFITAG_VECTOR_BUCKET), so a tagged object's embedding is stored and a removed
 * object's is deleted. Here the real Lambda handlers run in this process against the embedded
 * stack's stand-ins (S3 Vectors included), configured only by the environment a deploy gives them.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { CreateBucketCommand, DeleteObjectCommand } from '@aws-sdk/client-s3';
import { CreateIndexCommand, type S3VectorsClient } from '@aws-sdk/client-s3vectors';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import type { EmbeddedStack } from '../local/stack.ts';
import { NON_FILTERABLE_KEYS, S3VectorIndex, s3VectorsClient, vectorIndexName } from '../pipeline/aws/s3-vectors.ts';
import { handleFromEnvironment, openStack } from '../pipeline/aws/stack-handle.ts';
import { deployed } from '../pipeline/aws/wiring.ts';
import { publishWeights } from '../pipeline/aws/s3-weights.ts';
import { gradientImage, randomArtifact, tempDir } from './support/fixtures.ts';
import { head, put, startTestStack, waitFor } from './support/local-stack.ts';
import { oneCpuTierConfig } from './support/memory-ports.ts';

// The SQS stand-in's queue URLs are `http://sqs.<region>.localhost:<port>/…`, which the handlers'
// SDK sends to as it would to real SQS: resolve `.localhost` as the rehearsal's processes do.
createRequire(import.meta.url)('./rehearsal/resolve-localhost.cjs');

const TIERS = oneCpuTierConfig();

/** What the CDK stack gives every runtime (pipeline/runtime-config.ts), vector bucket included. */
const runtimeEnv = (vectorBucket?: string): NodeJS.ProcessEnv => ({
  EFFITAG_TIERS: JSON.stringify(TIERS),
  EFFITAG_QUEUE_URLS: JSON.stringify({ cpu: 'https://sqs.us-east-1.amazonaws.com/123456789012/effitag-cpu.fifo' }),
  EFFITAG_WEIGHTS: 's3://weights/lambda/',
  AWS_REGION: 'eu-west-1',
  ...(vectorBucket ? { EFFITAG_VECTOR_BUCKET: vectorBucket } : {}),
});

describe('a runtime handle with a vector bucket opens the S3 Vectors index', () => {
  it('EFFITAG_VECTOR_BUCKET: the opened stack (and deployed()) carry an S3VectorIndex on that bucket', () => {
    const handle = handleFromEnvironment(runtimeEnv('effitag-vectors-abc'));
    const open = openStack(handle);
    try {
      assert.ok(open.vectors instanceof S3VectorIndex, 'openStack gives the runtime a vector index');
      assert.equal(open.vectors.vectorBucket, 'effitag-vectors-abc');
    } finally {
      open.close();
    }
    const d = deployed(runtimeEnv('effitag-vectors-abc'));
    try {
      assert.ok(d.vectors instanceof S3VectorIndex, 'deployed() passes it on');
      assert.equal(d.vectors.vectorBucket, 'effitag-vectors-abc');
    } finally {
      d.close();
    }
  });

  it('no vector bucket: no vector index (the worker stores no embeddings, the router removes none)', () => {
    const open = openStack(handleFromEnvironment(runtimeEnv()));
    try {
      assert.equal(open.vectors, undefined);
    } finally {
      open.close();
    }
  });
});

describe('the deployed Lambda worker and router store and remove embeddings (S3 Vectors stand-in)', () => {
  let stack: EmbeddedStack | undefined;
  let vectorsClient: S3VectorsClient | undefined;
  const saved = { ...process.env };

  before(async () => {
    ({ stack } = await startTestStack(TIERS, { runRouter: false, runWorkers: () => false }));
    const s = stack;
    await s.s3.send(new CreateBucketCommand({ Bucket: 'weights' }));
    const artifact = join(await tempDir('effitag-artifact-'), 'b0');
    await randomArtifact(artifact, 'b0');
    await publishWeights(s.s3, artifact, 's3://weights/lambda/');
    // The deploy creates each model's index (cdk/constructs/similar-images.ts); the runtimes may not.
    const credentials = s.endpoints.credentials!;
    vectorsClient = s3VectorsClient({ endpoint: s.s3vectors.endpoint, credentials });
    await vectorsClient.send(
      new CreateIndexCommand({
        vectorBucketName: s.s3vectors.vectorBucket,
        indexName: vectorIndexName('b0'),
        dataType: 'float32',
        dimension: 1280,
        distanceMetric: 'cosine',
        metadataConfiguration: { nonFilterableMetadataKeys: [...NON_FILTERABLE_KEYS] },
      }),
    );
    // The environment a deployed runtime gets: nothing but env vars says where anything is.
    Object.assign(process.env, {
      EFFITAG_TIERS: JSON.stringify(TIERS),
      EFFITAG_QUEUE_URLS: JSON.stringify({ cpu: s.tierQueues.cpu.queue.url }),
      EFFITAG_WEIGHTS: 's3://weights/lambda/',
      EFFITAG_TIER: 'cpu',
      EFFITAG_WEIGHTS_DIR: await tempDir('effitag-synced-'),
      EFFITAG_VECTOR_BUCKET: s.s3vectors.vectorBucket,
      EFFITAG_LOG_LEVEL: 'warn',
      AWS_REGION: 'us-east-1',
      AWS_ACCESS_KEY_ID: credentials.accessKeyId,
      AWS_SECRET_ACCESS_KEY: credentials.secretAccessKey,
      AWS_ENDPOINT_URL_S3: s.endpoints.s3Endpoint,
      AWS_ENDPOINT_URL_SQS: s.endpoints.sqsEndpoint,
      AWS_ENDPOINT_URL_DYNAMODB: s.endpoints.dynamoEndpoint,
      AWS_ENDPOINT_URL_S3VECTORS: s.s3vectors.endpoint,
    });
  });
  after(async () => {
    for (const k of Object.keys(process.env)) if (!(k in saved)) delete process.env[k];
    Object.assign(process.env, saved);
    vectorsClient?.destroy();
    await stack?.stop();
    // The Lambda handlers keep their deployed runtime (clients, engine, weights watch) in module
    // scope for the container's life, with no way to close it: without this the file never exits
    // (a clean-clone CI run hung here). By now every result is reported; exitCode keeps a failure.
    setTimeout(() => process.exit(process.exitCode ?? 0), 3000).unref();
  });

  it("the worker handler's tagged object has its vector stored; the router handler's ObjectRemoved deletes it", async () => {
    const s = stack!;
    const png = await gradientImage(48, 48, 'png');
    const eTag = await put(s, 'photos/cat.png', png);
    assert.equal(
      (await s.router.handleObject({ bucket: s.bucket, key: 'photos/cat.png', eTag, size: png.length, kind: 'Put' })).action,
      'enqueued',
    );
    const [m] = await waitFor(
      'the task',
      async () => {
        const got = await s.tierQueues.cpu.queue.receive({ max: 1, waitSeconds: 1 });
        return got.length ? got : undefined;
      },
      30_000,
    );
    const worker = await import('../functions/worker.ts');
    const result = await worker.handler({
      Records: [
        { messageId: m.id, receiptHandle: m.receipt, body: m.body, attributes: { ApproximateReceiveCount: String(m.receiveCount) } },
      ],
    } as never);
    assert.deepEqual(result.batchItemFailures, []);
    assert.equal((await head(s, 'photos/cat.png')).Metadata?.['effitag-status'], 'tagged');

    // What the worker stored, read back through the stand-in (the embedded stack's own index on it).
    const ref = { bucket: s.bucket, key: 'photos/cat.png' };
    const spaces = await s.s3vectors.vectors.spaces();
    assert.equal(spaces.length, 1, `one space (b0's): ${spaces.join(', ')}`);
    assert.match(spaces[0], /^b0@/);
    const stored = await s.s3vectors.vectors.get(spaces[0], ref);
    assert.equal(stored?.length, 1280, 'a B0 embedding (1,280 features) is stored for the tagged object');

    await s.s3.send(new DeleteObjectCommand({ Bucket: s.bucket, Key: 'photos/cat.png' }));
    const router = await import('../functions/router.ts');
    const removed = {
      Records: [
        { eventSource: 'aws:s3', eventName: 'ObjectRemoved:Delete', s3: { bucket: { name: s.bucket }, object: { key: 'photos/cat.png' } } },
      ],
    };
    const routed = await router.handler({
      Records: [{ messageId: 'r1', receiptHandle: 'h', body: JSON.stringify(removed), attributes: {} }],
    } as never);
    assert.deepEqual(routed.batchItemFailures, []);
    assert.equal(await s.s3vectors.vectors.get(spaces[0], ref), undefined, "the removed object's vector is gone");
  });
});

/**
 * Deploy first, publish weights after (the README's order): nothing crash-loops, nothing is
 * dead-lettered for missing weights, and objects are tagged once the weights exist, without a
 * redeploy. The router drops an object whose model is not published ('waiting-for-weights', logged
 * with the fix, counted); workers sync what is published and wait for the rest; a catch-up backfill
 * after publishing tags what waited. IAM lets a missing weights file read as 404, not 403.
 */
import assert from 'node:assert/strict';
import { execFile, spawn } from 'node:child_process';
import { writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { promisify } from 'node:util';
import { after, before, describe, it } from 'node:test';
import { CreateBucketCommand, type S3Client } from '@aws-sdk/client-s3';
import { App, Stack } from 'aws-cdk-lib';
import { Template } from 'aws-cdk-lib/assertions';
import * as iam from 'aws-cdk-lib/aws-iam';
import * as s3 from 'aws-cdk-lib/aws-s3';
import * as sqs from 'aws-cdk-lib/aws-sqs';
import { grantRouting, grantWorker } from '../cdk/constructs/worker-permissions.ts';
import { startS3Server } from '../local/s3-server.ts';
import type { EmbeddedStack } from '../local/stack.ts';
import { s3Client } from '../pipeline/aws/clients.ts';
import { s3Markers } from '../pipeline/aws/markers.ts';
import { publishTiersWeights, publishWeights, readPublishedManifest } from '../pipeline/aws/s3-weights.ts';
import { waitingCatalog } from '../pipeline/aws/worker-runtime.ts';
import { Counters, type Level, type Logger } from '../pipeline/log.ts';
import { modelMarker } from '../pipeline/marker.ts';
import { MissingWeightsError, type Markers } from '../pipeline/models.ts';
import { makeRouter } from '../pipeline/router.ts';
import { taskMessage, type Task } from '../pipeline/task.ts';
import { watchWeights, type WeightsSource } from '../pipeline/weights-watch.ts';
import { makeWorker } from '../pipeline/worker.ts';
import type { WeightsManifest } from '../model/weights.ts';
import { parseTiers } from '../tiers/schema.ts';
import { gradientImage, randomArtifact, tempDir } from './support/fixtures.ts';
import { head, put, startTestStack, waitFor, waitForStatus } from './support/local-stack.ts';
import { fixedCatalog, MemoryQueue, MemoryStore } from './support/memory-ports.ts';

const run = promisify(execFile);

/** A warm Lambda instance of the CPU worker: one SQS event per stdin line, one `{"result": …}` line per invocation. */
const LAMBDA_HOST = `
import { createInterface } from 'node:readline';
const { handler } = await import(${JSON.stringify(new URL('../functions/worker.ts', import.meta.url).href)});
for await (const line of createInterface({ input: process.stdin })) {
  const result = await handler(JSON.parse(line)).then((ok) => ({ ok }), (err) => ({ error: String(err) }));
  process.stdout.write(JSON.stringify({ result }) + '\\n');
}
process.exit(0);
`;

/** The SQS stand-in's queue URLs are `http://sqs.<region>.localhost:<port>/…`; this resolves them (as the rehearsal does). */
const RESOLVE_LOCALHOST = join(import.meta.dirname, 'rehearsal', 'resolve-localhost.cjs');

/** The stand-alone S3 servers' key pair (they accept requests signed with nothing else). */
const CREDENTIALS = { accessKeyId: 'EFFITESTWEIGHTSWAIT', secretAccessKey: 'weights-waiting-test-secret-0123456789' };

/** A logger that keeps its lines. */
function recordingLogger(): Logger & { lines: { level: Level; msg: string; fields: Record<string, unknown> }[] } {
  const lines: { level: Level; msg: string; fields: Record<string, unknown> }[] = [];
  const make = (base: Record<string, unknown>): Logger => ({
    log: (level, msg, fields) => lines.push({ level, msg, fields: { ...base, ...fields } }),
    child: (fields) => make({ ...base, ...fields }),
  });
  return Object.assign(make({}), { lines });
}

const tier = (variants: string[], extra: Record<string, unknown> = {}) => ({
  variants,
  compute: { target: 'lambda-cpu', memoryMb: 2048 },
  engine: 'ort',
  batchSize: 8,
  topK: 3,
  minConfidence: 0,
  writeBack: 'metadata',
  ...extra,
});

/** Two tiers: `ready` (B0, the default) and `later` (B1, for keys under later/). */
const TWO_TIERS = {
  version: 1,
  tiers: { ready: tier(['b0']), later: tier(['b1']) },
  routing: { default: { tier: 'ready' }, rules: [{ prefix: 'later/', tier: 'later' }] },
};

/** Markers where only `published` models exist; `refresh` counts its calls. */
function lazyMarkers(published: Set<string>): Markers & { refreshes: number } {
  return {
    refreshes: 0,
    location: 's3://weights/models/',
    marker(model) {
      if (!published.has(model)) throw new MissingWeightsError(`no published weights for ${model}`);
      return `${model}@cafe`;
    },
    async refresh(model) {
      this.refreshes++;
      return published.has(model);
    },
  };
}

const created = (key: string, eTag: string, size: number) => ({ bucket: 'photos', key, eTag, size, kind: 'Put' as const });

describe('router: objects of a model not published yet wait (never an error, never the DLQ)', () => {
  it("drops them as 'waiting-for-weights', logged at WARN with tier, model, location and the fix, and counted; published tiers keep tagging", async () => {
    const store = new MemoryStore();
    const queues = { ready: new MemoryQueue('ready.fifo'), later: new MemoryQueue('later.fifo') };
    const published = new Set(['b0']);
    const models = lazyMarkers(published);
    const log = recordingLogger();
    const counters = new Counters();
    const router = makeRouter({ store, queues, tiers: parseTiers(TWO_TIERS), models, log, counters });
    const png = await gradientImage(64, 48, 'png');
    const a = store.put('photos', 'a.png', png);
    const b = store.put('photos', 'later/b.png', png);

    const body = JSON.stringify({
      Records: [a, b].map((eTag, i) => ({
        eventSource: 'aws:s3',
        eventName: 'ObjectCreated:Put',
        s3: { bucket: { name: 'photos' }, object: { key: i ? 'later/b.png' : 'a.png', eTag, size: png.length } },
      })),
    });
    // One event body with both objects: it is handled (no throw, so no retry and no DLQ).
    const outcomes = await router.handleBody(body);
    assert.deepEqual(
      outcomes.map((o) => [o.object.key, o.action, o.action === 'dropped' ? o.reason : o.task.tier]),
      [
        ['a.png', 'enqueued', 'ready'],
        ['later/b.png', 'dropped', 'waiting-for-weights'],
      ],
    );
    assert.equal(queues.ready.pending().length, 1);
    assert.equal(queues.later.pending().length, 0, 'nothing enqueued for a model without weights');
    assert.equal(counters.get('router.dropped.waiting-for-weights'), 1);
    assert.equal(counters.get('router.waiting.later'), 1);
    const line = log.lines.find((l) => l.msg === 'waiting for weights: not enqueued');
    assert.ok(line, JSON.stringify(log.lines));
    assert.equal(line.level, 'warn');
    assert.deepEqual(
      { tier: line.fields.tier, model: line.fields.model, weights: line.fields.weights, key: line.fields.key },
      { tier: 'later', model: 'b1', weights: 's3://weights/models/', key: 'later/b.png' },
    );
    assert.equal(line.fields.fix, 'npx effitag weights publish --tiers FILE --weights DIR s3://weights/models/');

    // Published: the next object of that tier is enqueued, with no redeploy (same router).
    published.add('b1');
    const c = store.put('photos', 'later/c.png', png);
    const outcome = await router.handleObject(created('later/c.png', c, png.length));
    assert.equal(outcome.action, 'enqueued');
    assert.equal(queues.later.pending().length, 1);
  });

  it('a backfill leaves them too (reported as waiting-for-weights), before reading any tagged state', async () => {
    const store = new MemoryStore();
    const png = await gradientImage(32, 32, 'png');
    const eTag = store.put('photos', 'later/x.png', png);
    const router = makeRouter({ store, queues: {}, tiers: parseTiers(TWO_TIERS), models: lazyMarkers(new Set(['b0'])) });
    const o = await router.decide(created('later/x.png', eTag, png.length), 'backfill', { mode: 'missing' });
    assert.equal(o.action === 'dropped' && o.reason, 'waiting-for-weights');
  });
});

/** An S3 stand-in of its own with an empty 'weights' bucket. */
async function weightsBucket(prefix: string) {
  const server = await startS3Server({ directory: await tempDir(prefix), credentials: CREDENTIALS });
  const client = s3Client({ s3Endpoint: server.endpoint, credentials: CREDENTIALS });
  await client.send(new CreateBucketCommand({ Bucket: 'weights' }));
  return { server, client };
}

describe('markers from S3, learned lazily', () => {
  let server: Awaited<ReturnType<typeof startS3Server>>;
  let client: S3Client;
  before(async () => {
    ({ server, client } = await weightsBucket('effitag-markers-s3-'));
  });
  after(async () => {
    client.destroy();
    await server.close();
  });

  it('a missing manifest reads as not published, is re-read after the TTL (not before), then gives the marker', async () => {
    let clock = 1_000_000;
    const markers = s3Markers(client, 's3://weights/lazy/', { ttlMs: 60_000, now: () => clock });
    assert.equal(await markers.refresh('b0'), false);
    assert.throws(() => markers.marker('b0'), MissingWeightsError);
    const dir = await tempDir('effitag-markers-');
    const manifest = await randomArtifact(join(dir, 'b0'), 'b0');
    await publishWeights(client, join(dir, 'b0'), 's3://weights/lazy/');
    clock += 59_000;
    assert.equal(await markers.refresh('b0'), false, 'believed missing until the TTL has passed');
    clock += 2_000;
    assert.equal(await markers.refresh('b0'), true, 'published: seen without a restart');
    assert.equal(markers.marker('b0'), modelMarker('b0', manifest.sha256));
    assert.equal(await readPublishedManifest(client, 's3://weights/lazy/', 'b7'), undefined);
  });
});

describe('the weights watch (workers): sync what is published, wait for the rest', () => {
  const manifest = (model: string) => ({ variant: model, sha256: 'ab'.repeat(32) }) as WeightsManifest;

  it('none published: not ready, logs once per model however often it polls, then becomes ready when one is published', async () => {
    const published = new Set<string>();
    let syncs = 0;
    const source: WeightsSource = {
      location: 's3://weights/models/',
      async sync(model) {
        syncs++;
        return published.has(model) ? manifest(model) : undefined;
      },
    };
    const log = recordingLogger();
    const loaded: string[] = [];
    const watch = await watchWeights({
      source,
      models: ['b0', 'b1'],
      log,
      poll: true,
      firstDelayMs: 5,
      maxDelayMs: 20,
      onReady: (m) => {
        loaded.push(m.variant);
      },
    });
    assert.deepEqual(watch.ready(), []);
    let anyReady: boolean | undefined;
    void watch.anyReady().then((v) => {
      anyReady = v;
    });
    await waitFor('several polls', async () => (syncs >= 8 ? true : undefined));
    assert.equal(anyReady, undefined, 'still waiting');
    const waiting = log.lines.filter((l) => l.msg === 'waiting for weights: model not published');
    assert.deepEqual(
      waiting.map((l) => [l.level, l.fields.model, l.fields.weights]),
      [
        ['warn', 'b0', 's3://weights/models/'],
        ['warn', 'b1', 's3://weights/models/'],
      ],
      'one line per model, not one per poll',
    );
    assert.match(String(waiting[0].fields.fix), /npx effitag weights publish --tiers FILE --weights DIR s3:\/\/weights\/models\//);
    published.add('b1');
    assert.equal(await watch.anyReady(), true);
    assert.deepEqual(loaded, ['b1'], 'loaded before the worker takes work');
    assert.deepEqual(watch.ready(), ['b1']);
    assert.deepEqual(watch.missing(), ['b0']);
    await watch.stop();
  });

  it('stopped while waiting (the service scaled back to zero): anyReady resolves false, nothing keeps running', async () => {
    const watch = await watchWeights({
      source: { location: 's3://w/', sync: async () => undefined },
      models: ['b0'],
      log: recordingLogger(),
      poll: true,
      firstDelayMs: 60_000,
    });
    const any = watch.anyReady();
    await watch.stop();
    assert.equal(await any, false);
  });

  it('errors other than "not published" are thrown at start (a corrupt artifact, access denied), and logged once while polling', async () => {
    await assert.rejects(
      watchWeights({
        source: {
          location: 's3://w/',
          sync: async () => {
            throw new Error('access denied reading s3://w/b0/manifest.json');
          },
        },
        models: ['b0'],
        log: recordingLogger(),
      }),
      /access denied/,
    );
    let calls = 0;
    const log = recordingLogger();
    const watch = await watchWeights({
      source: {
        location: 's3://w/',
        sync: async () => {
          if (++calls === 1) return undefined;
          throw new Error('throttled');
        },
      },
      models: ['b0'],
      log,
      poll: true,
      firstDelayMs: 2,
      maxDelayMs: 4,
    });
    await waitFor('polls', async () => (calls >= 5 ? true : undefined));
    await watch.stop();
    assert.equal(log.lines.filter((l) => l.msg === 'weights check failed; trying again').length, 1);
  });

  it('a task for a model not synced yet (a race) is retried with a clear reason, and asks the watch to look now', async () => {
    const store = new MemoryStore();
    const queue = new MemoryQueue('later.fifo');
    const png = await gradientImage(32, 32, 'png');
    const eTag = store.put('photos', 'later/x.png', png);
    const base = fixedCatalog({ topClass: 1 });
    let kicks = 0;
    const models = waitingCatalog(
      {
        ...base,
        marker: (m) => {
          if (m === 'b1') throw new MissingWeightsError('no weights for b1');
          return base.marker(m);
        },
      },
      { kick: () => kicks++ },
      's3://weights/models/',
    );
    const worker = makeWorker({ store, queue, tiers: parseTiers(TWO_TIERS), models, options: { retryBaseSeconds: 1 } });
    const task: Task = {
      v: 1,
      bucket: 'photos',
      key: 'later/x.png',
      eTag,
      size: png.length,
      tier: 'later',
      variant: 'b1',
      source: 'upload',
      enqueuedAt: new Date().toISOString(),
    };
    await queue.send([taskMessage(task)]);
    const [result] = await worker.handle(await queue.receive({ max: 10 }));
    assert.equal(result.outcome.status, 'retry');
    assert.match((result.outcome as { reason: string }).reason, /^waiting-for-weights: b1 not synced from s3:\/\/weights\/models\/ yet$/);
    assert.equal(kicks, 1);
    assert.equal(queue.pending().length, 1, 'back in the queue, not deleted');
  });
});

describe('IAM: a missing weights file reads as 404 (s3:ListBucket on the weights prefix)', () => {
  it('the workers and the routers may list the weights bucket under its prefix, and only there', () => {
    const stack = new Stack(new App(), 'Perms');
    const bucket = new s3.Bucket(stack, 'Photos');
    const weightsBucket = new s3.Bucket(stack, 'Weights');
    const queue = new sqs.Queue(stack, 'Q', { fifo: true });
    const dlq = new sqs.Queue(stack, 'D', { fifo: true });
    const worker = new iam.Role(stack, 'Worker', { assumedBy: new iam.ServicePrincipal('ecs-tasks.amazonaws.com') });
    const router = new iam.Role(stack, 'Router', { assumedBy: new iam.ServicePrincipal('lambda.amazonaws.com') });
    const weights = { bucket: weightsBucket, prefix: 'weights/' };
    grantWorker(worker, { bucket: { bucket, prefix: '' }, prefixes: [''], weights, queue, dlq });
    grantRouting(router, { bucket: { bucket, prefix: '' }, prefixes: [''], weights });
    const policies = Template.fromStack(stack).findResources('AWS::IAM::Policy');
    const weightsArn = { 'Fn::GetAtt': [stack.getLogicalId(weightsBucket.node.defaultChild as s3.CfnBucket), 'Arn'] };
    for (const role of ['Worker', 'Router']) {
      const policy = Object.entries(policies).find(([id]) => id.startsWith(`${role}DefaultPolicy`))![1];
      const statement = policy.Properties.PolicyDocument.Statement.find((s: { Sid?: string }) => s.Sid === 'SeeMissingWeights');
      assert.ok(statement, `${role}: no s3:ListBucket on the weights bucket`);
      assert.equal(statement.Action, 's3:ListBucket');
      assert.deepEqual(statement.Resource, weightsArn);
      assert.deepEqual(statement.Condition, { StringLike: { 's3:prefix': ['weights/*'] } });
    }
  });
});

describe('weights publish --tiers (every model a tiers file needs, from the local catalog)', () => {
  let server: Awaited<ReturnType<typeof startS3Server>>;
  let client: S3Client;
  before(async () => {
    ({ server, client } = await weightsBucket('effitag-publish-s3-'));
  });
  after(async () => {
    client.destroy();
    await server.close();
  });

  it('names the models the catalog lacks and uploads nothing; --allow-missing publishes the rest; a second run skips what is unchanged', async () => {
    const catalog = await tempDir('effitag-catalog-');
    await randomArtifact(join(catalog, 'b0'), 'b0');
    const models = parseTiers(TWO_TIERS).models;
    await assert.rejects(
      publishTiersWeights(client, { models, catalog, location: 's3://weights/t/', tiersPath: 'tiers.json' }),
      (err: Error) => /tiers\.json needs weights that .* lacks: b1\b/.test(err.message) && /--allow-missing/.test(err.message),
    );
    assert.equal(await readPublishedManifest(client, 's3://weights/t/', 'b0'), undefined, 'nothing uploaded');
    const r = await publishTiersWeights(client, { models, catalog, location: 's3://weights/t/', allowMissing: true });
    assert.deepEqual(
      r.published.map((p) => p.model),
      ['b0'],
    );
    assert.deepEqual(r.lacking, ['b1']);
    const again = await publishTiersWeights(client, { models, catalog, location: 's3://weights/t/', allowMissing: true });
    assert.deepEqual(again.unchanged, ['b0']);
    assert.deepEqual(again.published, []);
  });
});

describe('end to end on the embedded stack: deploy first, publish after', () => {
  let stack: EmbeddedStack | undefined;
  after(async () => {
    await stack?.stop();
  });

  it('a tier without weights waits (no DLQ) while the other tags; `weights publish --tiers --backfill` tags what waited', async () => {
    const weights = await tempDir('effitag-partial-weights-');
    await randomArtifact(join(weights, 'b0'), 'b0');
    ({ stack } = await startTestStack(TWO_TIERS, { weightsDir: weights }));
    const s = stack;
    const png = await gradientImage(64, 64, 'png');
    const aTag = await put(s, 'a.png', png);
    const bTag = await put(s, 'later/b.png', png);
    await waitForStatus(s, 'a.png', aTag, 60_000);
    await waitFor('the waiting drop', async () => (s.counters.get('router.dropped.waiting-for-weights') >= 1 ? true : undefined));
    await waitFor('the intake queue empty', async () => ((await s.intake.depth()).total === 0 ? true : undefined));
    assert.equal((await head(s, 'later/b.png')).Metadata?.['effitag-status'], undefined, 'untagged, waiting');
    for (const [tier, q] of Object.entries(s.tierQueues)) assert.equal((await q.dlq.depth()).total, 0, `${tier} DLQ`);

    // Publish: the catalog gains B1 (the embedded stack reads it there), and the CLI publishes the
    // tiers' models to a weights bucket on the stack's S3, then backfills the objects that waited.
    await randomArtifact(join(weights, 'b1'), 'b1');
    await s.s3.send(new CreateBucketCommand({ Bucket: 'weights' }));
    const tiersFile = join(await tempDir('effitag-tiers-'), 'tiers.json');
    await writeFile(tiersFile, JSON.stringify(TWO_TIERS));
    const out = await run(
      process.execPath,
      [
        'bin/effitag.js',
        'weights',
        'publish',
        '--tiers',
        tiersFile,
        '--weights',
        weights,
        's3://weights/models/',
        '--backfill',
        `s3://${s.bucket}`,
        '--backfill-delay',
        '0',
      ],
      {
        env: {
          ...process.env,
          // The embedded stack (the default --stack), found through its handle: no endpoint or key flags.
          ...(s.credentialsFile ? { EFFITAG_DATA_DIR: dirname(s.credentialsFile) } : {}),
          EFFITAG_LOG_LEVEL: 'warn',
        },
      },
    );
    assert.match(out.stdout, /^published b0 \(sha256 [0-9a-f]{64}\) to s3:\/\/weights\/models\/b0\/weights\.bin/m);
    assert.match(out.stdout, /^published b1 /m);
    assert.match(out.stdout, /enqueued 1\b/, out.stdout);
    const tagged = await waitForStatus(s, 'later/b.png', bTag, 60_000);
    assert.equal(tagged.Metadata?.['effitag-status'], 'tagged');
    assert.match(tagged.Metadata?.['effitag-model'] ?? '', /^b1@/);
    // New uploads of that tier are tagged directly now.
    const cTag = await put(s, 'later/c.png', png);
    assert.equal((await waitForStatus(s, 'later/c.png', cTag, 60_000)).Metadata?.['effitag-status'], 'tagged');
    for (const [tier, q] of Object.entries(s.tierQueues)) assert.equal((await q.dlq.depth()).total, 0, `${tier} DLQ`);
  });
});

describe('deployed workers with no weights published yet', () => {
  let stack: EmbeddedStack | undefined;
  const GPU_TIERS = {
    version: 1,
    tiers: {
      cpu: tier(['b0']),
      gpu: tier(['b0'], {
        compute: { target: 'ecs-gpu', instanceType: 'g4dn.xlarge', capacity: 'on-demand', maxTasks: 1 },
        engine: 'tfjs',
      }),
      // Its own queue: a worker stopped mid long poll (the test before) may still be handed the next
      // message of its queue by the stand-in, which would hide whether this test's worker received it.
      idle: tier(['b0'], {
        compute: { target: 'ecs-gpu', instanceType: 'g4dn.xlarge', capacity: 'on-demand', maxTasks: 1 },
        engine: 'tfjs',
      }),
    },
    routing: {
      default: { tier: 'cpu' },
      rules: [
        { prefix: 'gpu/', tier: 'gpu' },
        { prefix: 'idle/', tier: 'idle' },
      ],
    },
  };
  let artifact: string;
  before(async () => {
    ({ stack } = await startTestStack(GPU_TIERS, { runRouter: false, runWorkers: () => false }));
    await stack.s3.send(new CreateBucketCommand({ Bucket: 'weights' }));
    artifact = join(await tempDir('effitag-artifact-'), 'b0');
    await randomArtifact(artifact, 'b0');
  });
  after(async () => {
    await stack?.stop();
  });

  const deployedEnv = async (tierName: string, weights: string): Promise<NodeJS.ProcessEnv> => ({
    EFFITAG_TIERS: JSON.stringify(GPU_TIERS),
    EFFITAG_QUEUE_URLS: JSON.stringify(Object.fromEntries(Object.entries(stack!.tierQueues).map(([t, q]) => [t, q.queue.url]))),
    EFFITAG_WEIGHTS: weights,
    EFFITAG_TIER: tierName,
    EFFITAG_WEIGHTS_DIR: await tempDir('effitag-synced-'),
    EFFITAG_CACHE_DIR: await tempDir('effitag-cache-'),
    EFFITAG_LOG_LEVEL: 'info',
    AWS_REGION: 'us-east-1',
    AWS_ACCESS_KEY_ID: stack!.endpoints.credentials!.accessKeyId,
    AWS_SECRET_ACCESS_KEY: stack!.endpoints.credentials!.secretAccessKey,
    AWS_ENDPOINT_URL_S3: stack!.endpoints.s3Endpoint,
    AWS_ENDPOINT_URL_SQS: stack!.endpoints.sqsEndpoint,
    AWS_ENDPOINT_URL_DYNAMODB: stack!.endpoints.dynamoEndpoint,
  });

  it('the GPU container waits without exiting, takes the task once the weights are published, and stops cleanly', async () => {
    const s = stack!;
    const png = await gradientImage(48, 48, 'png');
    const eTag = await put(s, 'gpu/x.png', png);
    const routed = await s.router.handleObject({ bucket: s.bucket, key: 'gpu/x.png', eTag, size: png.length, kind: 'Put' });
    assert.equal(routed.action, 'enqueued');
    const child = spawn(
      process.execPath,
      ['--require', RESOLVE_LOCALHOST, '--import', 'tsx', join('containers', 'gpu-worker', 'main.ts')],
      {
        env: { PATH: process.env.PATH, HOME: process.env.HOME, ...(await deployedEnv('gpu', 's3://weights/gpu/')), EFFITAG_ENGINE: 'ort' },
        stdio: ['ignore', 'pipe', 'pipe'],
      },
    );
    let output = '';
    child.stdout.on('data', (d) => {
      output += d;
    });
    child.stderr.on('data', (d) => {
      output += d;
    });
    let exitCode: number | null | undefined;
    const exited = new Promise<number | null>((r) =>
      child.once('exit', (code) => {
        exitCode = code;
        r(code);
      }),
    );
    try {
      await waitFor(
        'the waiting log line',
        async () => (output.includes('waiting for weights') || exitCode !== undefined ? true : undefined),
        60_000,
      );
      assert.equal(exitCode, undefined, `the worker exited: ${output.slice(-2000)}`);
      const waiting = output.split('\n').filter((l) => l.includes('"msg":"waiting for weights: model not published"'));
      assert.equal(waiting.length, 1, output);
      assert.match(waiting[0], /"model":"b0".*"weights":"s3:\/\/weights\/gpu\/"/);

      await publishWeights(s.s3, artifact, 's3://weights/gpu/');
      const tagged = await waitForStatus(s, 'gpu/x.png', eTag, 90_000).catch((err) => {
        throw new Error(`${err.message}; the worker said:\n${output.slice(-3000)}`);
      });
      assert.equal(tagged.Metadata?.['effitag-status'], 'tagged');
      assert.equal(exitCode, undefined, 'still running');
      assert.match(output, /"msg":"weights ready".*"waited":true/);
      assert.equal((await s.tierQueues.gpu.dlq.depth()).total, 0);
      child.kill('SIGTERM');
      const code = await Promise.race([exited, new Promise<'hung'>((r) => setTimeout(() => r('hung'), 60_000).unref())]);
      assert.equal(code, 0, output.slice(-2000));
    } finally {
      if (exitCode === undefined) child.kill('SIGKILL');
    }
  });

  it('the GPU container stopped while it waits (the service scaled back to zero) exits 0, having received nothing', async () => {
    const s = stack!;
    const png = await gradientImage(40, 40, 'png');
    const eTag = await put(s, 'idle/waits.png', png);
    assert.equal(
      (await s.router.handleObject({ bucket: s.bucket, key: 'idle/waits.png', eTag, size: png.length, kind: 'Put' })).action,
      'enqueued',
    );
    const child = spawn(
      process.execPath,
      ['--require', RESOLVE_LOCALHOST, '--import', 'tsx', join('containers', 'gpu-worker', 'main.ts')],
      {
        env: {
          PATH: process.env.PATH,
          HOME: process.env.HOME,
          ...(await deployedEnv('idle', 's3://weights/never/')),
          EFFITAG_ENGINE: 'ort',
        },
        stdio: ['ignore', 'pipe', 'pipe'],
      },
    );
    let output = '';
    child.stdout.on('data', (d) => {
      output += d;
    });
    child.stderr.on('data', (d) => {
      output += d;
    });
    const exited = new Promise<number | null>((r) => child.once('exit', r));
    try {
      await waitFor(
        'the waiting log line',
        async () => (output.includes('waiting for weights') || child.exitCode !== null ? true : undefined),
        60_000,
      );
      assert.equal(child.exitCode, null, output.slice(-2000));
      child.kill('SIGTERM');
      // Bounded: a worker that ignores SIGTERM must fail this test, not hang the suite.
      const code = await Promise.race([exited, new Promise<'hung'>((r) => setTimeout(() => r('hung'), 60_000).unref())]);
      assert.equal(code, 0, output.slice(-2000));
      assert.match(output, /"msg":"stopped"/);
      const [m] = await s.tierQueues.idle.queue.receive({ max: 1, waitSeconds: 1 });
      assert.equal(m?.receiveCount, 1, 'the task was never received by the waiting worker');
      await s.tierQueues.idle.queue.delete([m]);
    } finally {
      if (child.exitCode === null) child.kill('SIGKILL');
    }
  });

  it('the CPU Lambda worker starts, returns the task to the queue while the weights are missing, and tags it once they are published', async () => {
    const s = stack!;
    const png = await gradientImage(40, 40, 'png');
    const eTag = await put(s, 'y.png', png);
    assert.equal((await s.router.handleObject({ bucket: s.bucket, key: 'y.png', eTag, size: png.length, kind: 'Put' })).action, 'enqueued');
    // The handler in a process of its own, invoked twice (one warm instance), as Lambda would.
    const lambda = spawn(process.execPath, ['--require', RESOLVE_LOCALHOST, '--import', 'tsx', '--input-type=module', '-e', LAMBDA_HOST], {
      env: { PATH: process.env.PATH, HOME: process.env.HOME, ...(await deployedEnv('cpu', 's3://weights/lambda/')) },
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    lambda.stdout.on('data', (d) => {
      stdout += d;
    });
    lambda.stderr.on('data', (d) => {
      stderr += d;
    });
    const exited = new Promise((r) => lambda.once('exit', r));
    const queue = s.tierQueues.cpu.queue;
    let invocations = 0;
    const invoke = async (): Promise<{ ok?: { batchItemFailures: unknown[] }; error?: string }> => {
      const [m] = await waitFor(
        'the task',
        async () => {
          const got = await queue.receive({ max: 1, waitSeconds: 1 });
          return got.length ? got : undefined;
        },
        60_000,
      );
      const event = {
        Records: [
          { messageId: m.id, receiptHandle: m.receipt, body: m.body, attributes: { ApproximateReceiveCount: String(m.receiveCount) } },
        ],
      };
      lambda.stdin.write(`${JSON.stringify(event)}\n`);
      const n = ++invocations;
      return waitFor(
        'the invocation',
        async () => {
          const results = stdout.split('\n').filter((l) => l.startsWith('{"result"'));
          return results.length >= n ? JSON.parse(results[n - 1]).result : undefined;
        },
        60_000,
      ).catch((err) => {
        throw new Error(`${err.message}: ${stderr.slice(-2000)}`);
      });
    };
    try {
      const first = await invoke();
      assert.equal(first.error, undefined, 'the handler does not throw');
      assert.equal(first.ok?.batchItemFailures.length, 1, 'the task goes back to the queue');
      assert.match(stderr, /"msg":"waiting for weights: model not published".*"model":"b0"/);
      await publishWeights(s.s3, artifact, 's3://weights/lambda/');
      const second = await invoke();
      assert.deepEqual(second.ok?.batchItemFailures, [], stderr.slice(-2000));
      assert.equal((await head(s, 'y.png')).Metadata?.['effitag-status'], 'tagged');
      assert.equal((await s.tierQueues.cpu.dlq.depth()).total, 0);
    } finally {
      lambda.stdin.end();
      await exited;
    }
  });
});

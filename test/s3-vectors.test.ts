/**
 * The S3 Vectors adapter (pipeline/aws/s3-vectors.ts) against the embedded stand-in
 * (local/s3vectors-server.ts) over real, signed HTTP: what a worker and `effitag similar` rely on.
 */
import assert from 'node:assert/strict';
import { appendFileSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { CreateIndexCommand, QueryVectorsCommand } from '@aws-sdk/client-s3vectors';
import { searchTuning, startS3VectorsServer } from '../local/s3vectors-server.ts';
import { keyDirs, prefixFilter, S3VectorIndex, s3VectorsClient, vectorIndexName, vectorKey } from '../pipeline/aws/s3-vectors.ts';
import { generateCredentials } from '../pipeline/aws/local-credentials.ts';
import type { StoreError } from '../pipeline/ports.ts';
import { S3_VECTORS_PRICES, vectorCost, vectorLogicalBytes } from '../tiers/prices.ts';
import { MemoryVectorIndex } from './support/memory-vectors.ts';

const credentials = generateCredentials();
const BUCKET = 'effitag-vectors';

/** A deterministic unit vector (a small LCG, so runs repeat). */
function unit(seed: number, dims = 16): Float32Array {
  let s = seed * 2654435761 + 1;
  const v = new Float32Array(dims);
  for (let i = 0; i < dims; i++) {
    s = (s * 1103515245 + 12345) % 2147483648;
    v[i] = s / 2147483648 - 0.5;
  }
  const n = Math.hypot(...v);
  return v.map((x) => x / n);
}
/** `base` tilted towards `other` by t (0: base; 1: other), normalized. */
function blend(base: Float32Array, other: Float32Array, t: number): Float32Array {
  const v = base.map((x, i) => (1 - t) * x + t * other[i]);
  const n = Math.hypot(...v);
  return v.map((x) => x / n);
}
const cosine = (a: Float32Array, b: Float32Array) => a.reduce((s, x, i) => s + x * b[i], 0);

async function started(directory?: string) {
  const server = await startS3VectorsServer({ credentials, buckets: [BUCKET], directory });
  const client = s3VectorsClient({ endpoint: server.endpoint, credentials });
  return { server, client, index: new S3VectorIndex({ client, vectorBucket: BUCKET }) };
}

describe('S3 Vectors names and keys', () => {
  test('index names fit S3 Vectors rules (3-63 of a-z 0-9 - ., alphanumeric ends) and differ per model', () => {
    const names = ['b0', 'v2-m', 'b0-int8', 'My_Custom Model', 'x'.repeat(80), 'a..b', 'Ünïcode'].map(vectorIndexName);
    for (const n of names) assert.match(n, /^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$/, n);
    assert.equal(new Set(names).size, names.length);
    assert.equal(vectorIndexName('b0'), 'model-b0');
    assert.notEqual(vectorIndexName('Model'), vectorIndexName('model'));
  });

  test('a vector key is 64 hex digits of bucket/key, whatever the key (S3 keys may be 1,024 bytes)', () => {
    const k = vectorKey({ bucket: 'b', key: 'ü/'.repeat(400) });
    assert.match(k, /^[0-9a-f]{64}$/);
    assert.notEqual(vectorKey({ bucket: 'a', key: 'b/c' }), vectorKey({ bucket: 'ab', key: 'c' }));
    assert.notEqual(vectorKey({ bucket: 'a', key: 'b/c' }), vectorKey({ bucket: 'a', key: 'b/c ' }));
  });

  test('folders kept for prefix filters: the first 6 levels, none over 200 bytes; a prefix filters on its deepest kept folder', () => {
    assert.deepEqual(keyDirs('a/b/c.jpg'), ['a/', 'a/b/']);
    assert.equal(keyDirs('1/2/3/4/5/6/7/8/x').length, 6);
    assert.deepEqual(keyDirs(`${'x'.repeat(250)}/y.jpg`), []);
    assert.deepEqual(prefixFilter('a/b/'), { dir: 'a/b/', exact: true });
    assert.deepEqual(prefixFilter('a/b/ph'), { dir: 'a/b/', exact: false });
    assert.deepEqual(prefixFilter('photo'), { dir: undefined, exact: false });
    assert.deepEqual(prefixFilter('1/2/3/4/5/6/7/'), { dir: '1/2/3/4/5/6/', exact: false });
  });
});

describe('S3VectorIndex against the embedded S3 Vectors', () => {
  let ctx: Awaited<ReturnType<typeof started>>;
  before(async () => {
    ctx = await started();
  });
  after(async () => ctx.server.close());

  test('put, query best first with cosine scores, get, replace, remove', async () => {
    const { index } = ctx;
    const base = unit(1);
    const far = unit(2);
    const vectors = [0, 0.2, 0.4, 0.6].map((t, i) => ({ bucket: 'photos', key: `p/${i}.jpg`, vector: blend(base, far, t), eTag: `e${i}` }));
    await index.put('b0@aaaaaaaaaaaa', vectors);
    const hits = await index.query('b0@aaaaaaaaaaaa', base, { limit: 10, bucket: 'photos' });
    assert.deepEqual(
      hits.map((h) => h.key),
      ['p/0.jpg', 'p/1.jpg', 'p/2.jpg', 'p/3.jpg'],
    );
    for (const h of hits) {
      const stored = vectors.find((v) => v.key === h.key)!.vector;
      assert.ok(Math.abs(h.score - cosine(base, stored)) < 1e-5, `${h.key}: ${h.score} vs ${cosine(base, stored)}`);
    }
    assert.deepEqual(await index.get('b0@aaaaaaaaaaaa', { bucket: 'photos', key: 'p/2.jpg' }), vectors[2].vector);
    assert.deepEqual(
      (await index.query('b0@aaaaaaaaaaaa', base, { limit: 2, bucket: 'photos' })).map((h) => h.key),
      ['p/0.jpg', 'p/1.jpg'],
    );
    const min = cosine(base, vectors[1].vector) - 1e-6;
    assert.deepEqual(
      (await index.query('b0@aaaaaaaaaaaa', base, { limit: 10, bucket: 'photos', minScore: min })).map((h) => h.key),
      ['p/0.jpg', 'p/1.jpg'],
    );

    // An overwrite replaces: p/3 now points where the query does.
    await index.put('b0@aaaaaaaaaaaa', [{ bucket: 'photos', key: 'p/3.jpg', vector: base }]);
    const after = await index.query('b0@aaaaaaaaaaaa', base, { limit: 10, bucket: 'photos' });
    assert.equal(after.length, 4, 'replaced, not added');
    assert.deepEqual(
      after
        .slice(0, 2)
        .map((h) => h.key)
        .sort(),
      ['p/0.jpg', 'p/3.jpg'],
    );

    await index.remove('b0@aaaaaaaaaaaa', [
      { bucket: 'photos', key: 'p/0.jpg' },
      { bucket: 'photos', key: 'never/was.jpg' },
    ]);
    assert.equal(await index.get('b0@aaaaaaaaaaaa', { bucket: 'photos', key: 'p/0.jpg' }), undefined);
    assert.deepEqual((await index.query('b0@aaaaaaaaaaaa', base, { limit: 10, bucket: 'photos' })).map((h) => h.key).sort(), [
      'p/1.jpg',
      'p/2.jpg',
      'p/3.jpg',
    ]);
  });

  test('buckets, models and weights never mix; a model with nothing stored answers empty, not an error', async () => {
    const { index } = ctx;
    const v = unit(10);
    await index.put('b1@111111111111', [{ bucket: 'one', key: 'x.jpg', vector: v }]);
    await index.put('b1@111111111111', [{ bucket: 'two', key: 'x.jpg', vector: v }]);
    await index.put('b1@222222222222', [{ bucket: 'one', key: 'y.jpg', vector: v }]);
    await index.put('b3@111111111111', [{ bucket: 'one', key: 'z.jpg', vector: unit(10, 24) }]);
    assert.deepEqual(
      (await index.query('b1@111111111111', v, { limit: 10, bucket: 'one' })).map((h) => `${h.bucket}/${h.key}`),
      ['one/x.jpg'],
    );
    assert.deepEqual(
      (await index.query('b1@222222222222', v, { limit: 10, bucket: 'one' })).map((h) => h.key),
      ['y.jpg'],
    );
    assert.equal(await index.get('b1@222222222222', { bucket: 'one', key: 'x.jpg' }), undefined, 'other weights: not this space');
    assert.deepEqual(await index.query('b5@333333333333', unit(1, 8), { limit: 3, bucket: 'one' }), []);
    assert.equal(await index.get('b5@333333333333', { bucket: 'one', key: 'x.jpg' }), undefined);
    await index.remove('b5@333333333333', [{ bucket: 'one', key: 'x.jpg' }]);
    const spaces = await index.spaces();
    for (const s of ['b1@111111111111', 'b1@222222222222', 'b3@111111111111']) assert.ok(spaces.includes(s), `${s} in ${spaces}`);
    assert.ok(!spaces.includes('b5@333333333333'));
  });

  test('prefixes: a folder is an exact filter; any other prefix, or one deeper than the kept folders, is checked key by key', async () => {
    const { index } = ctx;
    const space = 'b2@cccccccccccc';
    const q = unit(20);
    const keys = ['cats/a.jpg', 'cats/b.jpg', 'catsup/c.jpg', 'dogs/d.jpg', '1/2/3/4/5/6/7/deep.jpg', '1/2/3/4/5/6/8/other.jpg', 'cat.jpg'];
    await index.put(
      space,
      keys.map((key, i) => ({ bucket: 'pets', key, vector: blend(q, unit(21 + i), 0.3) })),
    );
    const found = async (prefix: string) => (await index.query(space, q, { limit: 50, bucket: 'pets', prefix })).map((h) => h.key).sort();
    assert.deepEqual(await found('cats/'), ['cats/a.jpg', 'cats/b.jpg']);
    assert.deepEqual(await found('cats'), ['cats/a.jpg', 'cats/b.jpg', 'catsup/c.jpg']);
    assert.deepEqual(await found('cat'), ['cat.jpg', 'cats/a.jpg', 'cats/b.jpg', 'catsup/c.jpg']);
    assert.deepEqual(await found('cats/b'), ['cats/b.jpg']);
    assert.deepEqual(await found('1/2/3/4/5/6/7/'), ['1/2/3/4/5/6/7/deep.jpg']);
    assert.deepEqual(await found('nothing/'), []);
  });

  test('limits: topK 1-100, 1,200 vectors put in batches of 500, one dimension per model, keys up to 1,024 bytes', async () => {
    const { index } = ctx;
    const space = 'b4@dddddddddddd';
    await assert.rejects(
      index.query(space, unit(1), { limit: 101, bucket: 'b' }),
      (e: StoreError) => e.kind === 'invalid' && /1 to 100/.test(e.message),
    );
    await assert.rejects(index.query(space, unit(1), { limit: 0, bucket: 'b' }), /1 to 100/);
    const many = Array.from({ length: 1200 }, (_, i) => ({ bucket: 'bulk', key: `k/${i}`, vector: unit(1000 + i) }));
    await index.put(space, many);
    const hits = await index.query(space, many[777].vector, { limit: 100, bucket: 'bulk' });
    assert.equal(hits.length, 100);
    assert.equal(hits[0].key, 'k/777');
    assert.ok(hits[0].score > 0.9999);
    await assert.rejects(
      index.put(space, [{ bucket: 'bulk', key: 'wide', vector: unit(1, 32) }]),
      (e: StoreError) => e.kind === 'invalid' && /32 dimensions; the index has 16/.test(e.message),
    );
    await assert.rejects(
      index.put(space, [
        { bucket: 'bulk', key: 'a', vector: unit(1) },
        { bucket: 'bulk', key: 'b', vector: unit(1, 8) },
      ]),
      /one dimension/,
    );
    await assert.rejects(index.put(space, [{ bucket: 'bulk', key: 'x'.repeat(1025), vector: unit(1) }]), /1,024 bytes/);
    await assert.rejects(index.put(space, [{ bucket: 'bulk', key: 'nan', vector: new Float32Array(16).fill(Number.NaN) }]), /finite/);
    // The longest S3 key is stored and found again.
    const longKey = `${'d/'.repeat(300)}${'x'.repeat(424)}`;
    await index.put(space, [{ bucket: 'bulk', key: longKey, vector: unit(5) }]);
    assert.deepEqual(await index.get(space, { bucket: 'bulk', key: longKey }), unit(5));
    // Nothing was lost to the refused puts.
    assert.equal((await index.query(space, many[3].vector, { limit: 1, bucket: 'bulk' }))[0].key, 'k/3');
  });

  test('the same answers as the in-memory index on 300 random vectors (exact search under a filter)', async () => {
    const space = 'b6@eeeeeeeeeeee';
    const mem = new MemoryVectorIndex();
    const vectors = Array.from({ length: 300 }, (_, i) => ({ bucket: 'cmp', key: `${i % 3}/${i}.jpg`, vector: unit(5000 + i, 32) }));
    await ctx.index.put(space, vectors);
    await mem.put(space, vectors);
    for (const seed of [1, 2, 3]) {
      const q = unit(seed, 32);
      for (const prefix of [undefined, '1/']) {
        const a = await ctx.index.query(space, q, { limit: 10, bucket: 'cmp', prefix });
        const b = await mem.query(space, q, { limit: 10, bucket: 'cmp', prefix });
        assert.deepEqual(
          a.map((h) => h.key),
          b.map((h) => h.key),
        );
      }
    }
  });

  test('a filter that keeps many vectors: the graph is asked for more neighbours until the limit passes it', async () => {
    const space = 'b8@abababababab';
    const mem = new MemoryVectorIndex();
    // 1 in 25 under rare/: the first graph look (64 neighbours) finds too few, and exact search is off.
    const vectors = Array.from({ length: 1000 }, (_, i) => ({
      bucket: 'many',
      key: `${i % 25 === 0 ? 'rare' : 'common'}/${i}.jpg`,
      vector: unit(9000 + i, 24),
    }));
    await ctx.index.put(space, vectors);
    await mem.put(space, vectors);
    const saved = searchTuning.exactUpTo;
    searchTuning.exactUpTo = 0;
    try {
      for (const seed of [4, 5]) {
        const q = unit(seed, 24);
        const a = await ctx.index.query(space, q, { limit: 10, bucket: 'many', prefix: 'rare/' });
        const b = await mem.query(space, q, { limit: 10, bucket: 'many', prefix: 'rare/' });
        assert.equal(a.length, 10);
        assert.deepEqual(
          a.map((h) => h.key),
          b.map((h) => h.key),
        );
      }
    } finally {
      searchTuning.exactUpTo = saved;
    }
  });

  test('an index the role may not create: a clear error naming the model and the fix', async () => {
    const strict = new S3VectorIndex({ client: ctx.client, vectorBucket: BUCKET, createIndexes: false });
    await assert.rejects(
      strict.put('b7@ffffffffffff', [{ bucket: 'b', key: 'k', vector: unit(1) }]),
      (e: StoreError) =>
        e.kind === 'not-found' && /model-b7 does not exist/.test(e.message) && /deploy again with that model in a tier/.test(e.message),
    );
    const noBucket = new S3VectorIndex({ client: ctx.client, vectorBucket: 'no-such-bucket' });
    await assert.rejects(noBucket.put('b0@aaaaaaaaaaaa', [{ bucket: 'b', key: 'k', vector: unit(1) }]), (e: StoreError) =>
      /vector bucket could not be found/.test(e.message),
    );
  });

  test('the stand-in answers S3 Vectors errors as the SDK models them (ValidationException, ConflictException)', async () => {
    await assert.rejects(
      ctx.client.send(
        new CreateIndexCommand({ vectorBucketName: BUCKET, indexName: 'ab', dataType: 'float32', dimension: 4, distanceMetric: 'cosine' }),
      ),
      (e: Error) => e.name === 'ValidationException',
    );
    await assert.rejects(
      ctx.client.send(
        new CreateIndexCommand({
          vectorBucketName: BUCKET,
          indexName: 'model-b0',
          dataType: 'float32',
          dimension: 4,
          distanceMetric: 'cosine',
        }),
      ),
      (e: Error) => e.name === 'ConflictException',
    );
    await assert.rejects(
      ctx.client.send(
        new QueryVectorsCommand({
          vectorBucketName: BUCKET,
          indexName: 'model-b0',
          topK: 3,
          queryVector: { float32: Array.from(unit(1)) },
          filter: { key: { $eq: 'x' } },
        }),
      ),
      (e: Error) => e.name === 'ValidationException' && /non-filterable/.test(e.message),
    );
  });
});

describe('the embedded S3 Vectors refuses what the other stand-ins refuse', () => {
  let ctx: Awaited<ReturnType<typeof started>>;
  before(async () => {
    ctx = await started();
  });
  after(async () => ctx.server.close());

  test('unsigned, wrongly signed and cross-origin requests get 403 and change nothing', async () => {
    const url = `${ctx.server.endpoint}/CreateIndex`;
    const body = JSON.stringify({
      vectorBucketName: BUCKET,
      indexName: 'model-evil',
      dataType: 'float32',
      dimension: 4,
      distanceMetric: 'cosine',
    });
    const unsigned = await fetch(url, { method: 'POST', body, headers: { 'content-type': 'application/json' } });
    assert.equal(unsigned.status, 403);
    assert.match(await unsigned.text(), /MissingAuthenticationToken/);

    const wrong = new S3VectorIndex({
      client: s3VectorsClient({
        endpoint: ctx.server.endpoint,
        credentials: { ...credentials, secretAccessKey: 'not-the-secret-of-this-stack-000000000' },
      }),
      vectorBucket: BUCKET,
    });
    await assert.rejects(
      wrong.put('evil@000000000000', [{ bucket: 'b', key: 'k', vector: unit(1) }]),
      (e: StoreError) => e.kind === 'denied',
    );
    const stranger = new S3VectorIndex({
      client: s3VectorsClient({ endpoint: ctx.server.endpoint, credentials: generateCredentials() }),
      vectorBucket: BUCKET,
    });
    await assert.rejects(stranger.query('evil@000000000000', unit(1), { limit: 1, bucket: 'b' }), (e: StoreError) => e.kind === 'denied');

    const crossOrigin = await fetch(url, {
      method: 'POST',
      body,
      headers: { origin: 'https://evil.example', 'content-type': 'application/json' },
    });
    assert.equal(crossOrigin.status, 403);
    assert.match(await crossOrigin.text(), /evil\.example/);
    const rebound = await fetch(url, { method: 'POST', body, headers: { host: `evil.example:${ctx.server.port}` } });
    assert.equal(rebound.status, 403);

    assert.deepEqual(ctx.server.service.stats().indexes, [], 'no index was made');
  });
});

describe('the embedded S3 Vectors keeps its vectors across restarts', () => {
  test('a clean stop, a crash (the log replayed), and a torn last log line', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'effitag-s3vectors-'));
    try {
      const space = 'b0@aaaaaaaaaaaa';
      const vectors = Array.from({ length: 40 }, (_, i) => ({ bucket: 'p', key: `k/${i}.jpg`, vector: unit(300 + i) }));
      const first = await started(dir);
      await first.index.put(space, vectors.slice(0, 30));
      await first.index.remove(space, [{ bucket: 'p', key: 'k/0.jpg' }]);
      await first.server.close(); // clean: the log is folded into a snapshot

      const second = await started(dir);
      assert.equal(await second.index.get(space, { bucket: 'p', key: 'k/0.jpg' }), undefined);
      assert.deepEqual(await second.index.get(space, { bucket: 'p', key: 'k/29.jpg' }), vectors[29].vector);
      assert.equal((await second.index.query(space, vectors[7].vector, { limit: 1, bucket: 'p' }))[0].key, 'k/7.jpg');
      await second.index.put(space, vectors.slice(30));
      await second.index.put(space, [{ bucket: 'p', key: 'k/1.jpg', vector: vectors[39].vector }]);
      // A crash: a second server loads the directory while the first never folded its log.
      const indexDir = join(dir, BUCKET, 'indexes', 'model-b0');
      const log = readdirSync(indexDir).find((f) => f.startsWith('log.'))!;
      const crashed = await started(dir);
      assert.deepEqual(await crashed.index.get(space, { bucket: 'p', key: 'k/35.jpg' }), vectors[35].vector);
      assert.deepEqual(
        await crashed.index.get(space, { bucket: 'p', key: 'k/1.jpg' }),
        vectors[39].vector,
        'the replacement, not the first',
      );
      assert.equal((await crashed.index.query(space, vectors[39].vector, { limit: 40, bucket: 'p' })).length, 39);
      await crashed.server.close();
      await second.server.close().catch(() => undefined);

      // A torn line at the end of a log (a write cut short) is dropped; what came before stays.
      const third = await started(dir);
      await third.index.put(space, [{ bucket: 'p', key: 'late.jpg', vector: unit(999) }]);
      const log3 = readdirSync(indexDir).find((f) => f.startsWith('log.'))!;
      assert.notEqual(log3, log, 'a new generation after the clean stops');
      appendFileSync(join(indexDir, log3), '{"put":[{"key":"torn","da');
      const fourth = await started(dir);
      assert.deepEqual(await fourth.index.get(space, { bucket: 'p', key: 'late.jpg' }), unit(999));
      assert.equal((await fourth.index.query(space, vectors[39].vector, { limit: 50, bucket: 'p' })).length, 40);
      await fourth.server.close();
      await third.server.close().catch(() => undefined);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('S3 Vectors prices (tiers/prices.ts)', () => {
  test('per 1M B0 images: bytes as the adapter stores them, storage and writes per logical GB, queries per call plus per TB processed', () => {
    const b0 = vectorLogicalBytes({ dimension: 1280 });
    assert.equal(b0.processed, 4 * 1280 + 64 + 100, 'float32 data, the hex key, filterable metadata');
    assert.equal(b0.stored, b0.processed + 110, 'plus the S3 key and ETag');
    const cost = vectorCost(1_000_000, 1280);
    assert.ok(Math.abs(cost.storedGb - (1e6 * b0.stored) / 1e9) < 1e-9);
    assert.ok(Math.abs(cost.storagePerMonth - cost.storedGb * S3_VECTORS_PRICES.storagePerGbMonth) < 1e-9);
    assert.ok(Math.abs(cost.writes - cost.storedGb * S3_VECTORS_PRICES.putPerGb) < 1e-9);
    // The first 100,000 vectors of the index at the first rate, the other 900,000 at the second.
    const tb = (n: number) => (n * b0.processed) / 1e12;
    const perQuery = tb(100_000) * S3_VECTORS_PRICES.queryPerTbFirst100k + tb(900_000) * S3_VECTORS_PRICES.queryPerTbOver100k;
    assert.ok(Math.abs(cost.perMillionQueries - (S3_VECTORS_PRICES.queryPerMillionCalls + 1e6 * perQuery)) < 1e-9);
    // Below 100,000 vectors only the first rate applies; a wider model stores and processes more.
    const small = vectorCost(50_000, 1280);
    assert.ok(Math.abs(small.perMillionQueries - (2.5 + 1e6 * tb(50_000) * S3_VECTORS_PRICES.queryPerTbFirst100k)) < 1e-9);
    assert.ok(vectorCost(1_000_000, 2560).storagePerMonth > 1.9 * cost.storagePerMonth);
  });
});

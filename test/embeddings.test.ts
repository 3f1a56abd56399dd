/**
 * Image embeddings at no second inference: the exported graph's second output (the pooled features),
 * on both engines and the int8 graph; the worker L2-normalizes them and keeps one vector per object
 * in the model's space (overwrites replace, removals delete, a tier can turn it off, a vector failure
 * loses no tags).
 */
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { before, describe, it } from 'node:test';
import { decodeImage, type DecodedImage } from '../inference/image.ts';
import { ortEngine } from '../inference/ort-engine.ts';
import { tfjsEngine } from '../inference/tfjs-engine.ts';
import { ensureOnnx, onnxFileName } from '../model/onnx/cache.ts';
import { EXPORTER_VERSION, FEATURES_OUTPUT } from '../model/onnx/export.ts';
import { ModelProto } from '../model/onnx/schema.ts';
import { folderCalibrationSource, quantizeArtifact } from '../model/quantize.ts';
import type { LoadedModel } from '../inference/engine.ts';
import { Counters, jsonLogger } from '../pipeline/log.ts';
import { makeRouter } from '../pipeline/router.ts';
import { taskMessage, type Task } from '../pipeline/task.ts';
import { makeWorker } from '../pipeline/worker.ts';
import { gradientImage, randomArtifact, tempDir } from './support/fixtures.ts';
import { parseTiers } from '../tiers/schema.ts';
import { backfillEmbeddings } from '../pipeline/embeddings-backfill.ts';
import { SimilarError, similarToObject, similarToVector } from '../pipeline/similar.ts';
import { fixedCatalog, MemoryIndex, MemoryQueue, MemoryStore } from './support/memory-ports.ts';
import { MemoryVectorIndex } from './support/memory-vectors.ts';
import { calibratedArtifact, writePatternDataset } from './support/shapes.ts';

const quiet = { log: () => {} };
const SIZE = 112;

async function images(n: number, size = SIZE): Promise<DecodedImage[]> {
  return Promise.all(
    Array.from({ length: n }, async (_, i) => decodeImage(await gradientImage(130 + 17 * i, 100 + 9 * i, 'png', i), size)),
  );
}

const SMALL = 'custom-w0.25-d0.25-r32';
const cosine = (a: Float32Array, b: Float32Array) => a.reduce((s, v, i) => s + v * b[i], 0) / (Math.hypot(...a) * Math.hypot(...b));
const maxAbs = (a: Float32Array, b: Float32Array) => a.reduce((m, v, i) => Math.max(m, Math.abs(v - b[i])), 0);

describe('pooled features from the same inference', () => {
  let dir: string;
  before(async () => {
    dir = await tempDir('effitag-emb-');
    await randomArtifact(dir, 'b0', { resolution: SIZE, seed: 11 });
  });

  it('the export lists probabilities first and the 1,280 pooled features second; the cache name carries the exporter version', async () => {
    const { path, manifest } = await ensureOnnx(dir);
    assert.ok(onnxFileName(manifest).includes(`-x${EXPORTER_VERSION}-`), 'a graph change invalidates cached exports');
    const model = ModelProto.decode(await readFile(path)) as unknown as {
      graph: { output: { name: string; type: { tensor_type: { shape: { dim: { dim_value?: number }[] } } } }[] };
    };
    assert.deepEqual(
      model.graph.output.map((o) => o.name),
      ['probabilities', FEATURES_OUTPUT],
    );
    assert.equal(Number(model.graph.output[1].type.tensor_type.shape.dim[1].dim_value), 1280);
  });

  it('ort and tfjs agree on the features; classify and classifyWithFeatures give the same probabilities', async () => {
    // BatchNorm calibrated on real pixels: random B0 weights give near-constant features (cosine 1 − 1e-11 between images).
    const calibrated = await tempDir('effitag-emb-cal-');
    await calibratedArtifact(calibrated, SMALL);
    const ort = await ortEngine(quiet).load(calibrated);
    const tfjs = await tfjsEngine().load(calibrated);
    try {
      const batch = await images(3, 32);
      const [a, b, plain] = [await ort.classifyWithFeatures!(batch), await tfjs.classifyWithFeatures!(batch), await ort.classify(batch)];
      for (let i = 0; i < batch.length; i++) {
        assert.equal(a[i].features.length, b[i].features.length);
        assert.ok(
          a[i].features.some((v) => v !== 0),
          'features are not all zero',
        );
        const scale = a[i].features.reduce((m, v) => Math.max(m, Math.abs(v)), 0);
        assert.ok(maxAbs(a[i].features, b[i].features) < 1e-4 * Math.max(1, scale), `image ${i}: features differ`);
        assert.ok(maxAbs(a[i].probabilities, b[i].probabilities) < 1e-4, `image ${i}: probabilities differ across engines`);
        assert.equal(maxAbs(a[i].probabilities, plain[i]), 0, `image ${i}: the first output is the classifier's, unchanged`);
      }
      // Different images, different directions (the output is per image, not a batch constant).
      assert.ok(cosine(a[0].features, a[1].features) < 0.999, `cosine ${cosine(a[0].features, a[1].features)}`);
    } finally {
      await ort.dispose();
      await tfjs.dispose();
    }
  });

  it('the int8 graph returns features too, each image’s nearest its own float features', async () => {
    const root = await tempDir('effitag-emb-q-');
    const data = join(root, 'images');
    await writePatternDataset(data, { perLabel: 4, size: 64 });
    const float = join(root, 'float');
    await calibratedArtifact(float, SMALL);
    const int8 = join(root, 'int8');
    await quantizeArtifact({ weightsDir: float, source: folderCalibrationSource(data), out: int8, threads: 1, force: true, ...quiet });
    const [f, q] = [await ortEngine(quiet).load(float), await ortEngine(quiet).load(int8)];
    try {
      const batch = await images(4, 32);
      const [a, b] = [await f.classifyWithFeatures!(batch), await q.classifyWithFeatures!(batch)];
      // A forced (gate-failing) int8 model of a tiny random network: its features drift, so the check
      // is that they are there, finite, and each image's stays nearest its own float features.
      for (let i = 0; i < batch.length; i++) {
        assert.equal(b[i].features.length, a[i].features.length);
        assert.ok(b[i].features.every(Number.isFinite));
        const own = cosine(a[i].features, b[i].features);
        for (let j = 0; j < batch.length; j++)
          if (j !== i) assert.ok(own > cosine(a[j].features, b[i].features), `image ${i}: int8 features nearer float image ${j}'s`);
      }
    } finally {
      await f.dispose();
      await q.dispose();
    }
  });
});

// --- The worker and the router, on in-memory ports -------------------------------------------------

const BUCKET = 'photos';

/**
 * A catalog whose model also returns features: the decoded image's first pixels (so different
 * images point in different directions, and a test can compute the expected unit vector itself).
 * `withFeatures: false`: an engine that cannot (classify only).
 */
function featureCatalog(options: { hash?: string; withFeatures?: boolean; zero?: boolean } = {}) {
  const base = fixedCatalog({ topClass: 207, hash: options.hash });
  const featuresOf = (img: DecodedImage) =>
    options.zero ? new Float32Array(16) : Float32Array.from(img.pixels.slice(0, 16), (v) => v + 1);
  // The base catalog stays the prototype, so its `classified` count reads live.
  return Object.assign(Object.create(base) as typeof base, {
    async load(model: string): Promise<LoadedModel> {
      const m = await base.load(model);
      if (options.withFeatures === false) return m;
      return {
        ...m,
        async classifyWithFeatures(images) {
          const probabilities = await m.classify(images);
          return images.map((img, i) => ({ probabilities: probabilities[i], features: featuresOf(img) }));
        },
      };
    },
    featuresOf,
  });
}

function world(options: { embeddings?: boolean; hash?: string; withFeatures?: boolean; zero?: boolean } = {}) {
  const store = new MemoryStore();
  const vectors = new MemoryVectorIndex();
  const queue = new MemoryQueue('cpu.fifo');
  const lines: string[] = [];
  const log = jsonLogger({ level: 'info', write: (l) => lines.push(l) });
  const build = (o: typeof options) => {
    const tiers = twoModelTier(o.embeddings ?? true);
    const models = featureCatalog(o);
    const counters = new Counters();
    const worker = makeWorker({ store, queue, tiers, models, vectors, log, counters, options: { retryBaseSeconds: 0 } });
    return { worker, models, counters };
  };
  const task = (key: string, eTag: string, variant = 'b0'): Task => ({
    v: 1,
    bucket: BUCKET,
    key,
    eTag,
    size: 100,
    tier: 'cpu',
    variant,
    source: 'upload',
    enqueuedAt: '2026-12-07T09:59:00Z',
  });
  const upload = async (key: string, seed: number, variant = 'b0') => {
    const eTag = store.put(BUCKET, key, await gradientImage(40 + seed, 30 + seed, 'png', seed));
    await queue.send([taskMessage(task(key, eTag, variant))]);
    return eTag;
  };
  const run = async (w = build(options).worker) => w.handle(await queue.receive({ max: 10 }));
  return { store, vectors, queue, lines, build, upload, run };
}

const norm = (v: Float32Array) => Math.hypot(...v);

/** One CPU tier with two models (b0 for small images, b1 for larger): two vector spaces. */
function twoModelTier(embeddings = true) {
  return parseTiers({
    version: 1,
    tiers: {
      cpu: {
        variants: ['b0', 'b1'],
        compute: { target: 'lambda-cpu', memoryMb: 2048 },
        engine: 'ort',
        batchSize: 8,
        topK: 3,
        minConfidence: 0,
        embeddings,
      },
    },
    routing: { default: { tier: 'cpu' } },
  });
}

describe('worker: one vector per tagged object', () => {
  it('stores the L2-normalized features of each tagged object in its model marker’s space, from the one inference', async () => {
    const w = world();
    const { worker, models, counters } = w.build({});
    const eTags = [await w.upload('a.png', 1), await w.upload('b.png', 2)];
    const results = await w.run(worker);
    assert.deepEqual(
      results.map((r) => r.outcome.status),
      ['tagged', 'tagged'],
    );
    assert.equal(models.classified, 2, 'one inference per image');
    assert.deepEqual(await w.vectors.spaces(), ['b0@cafe']);
    const stored = w.vectors.stored.get('b0@cafe')!;
    assert.equal(stored.size, 2);
    for (const [i, key] of ['a.png', 'b.png'].entries()) {
      const v = stored.get(`${BUCKET}/${key}`)!;
      assert.equal(v.eTag, eTags[i]);
      assert.ok(Math.abs(norm(v.vector) - 1) < 1e-6, `unit length (${norm(v.vector)})`);
      // The expected direction, computed here from the same decoded pixels.
      const { decodeImage } = await import('../inference/image.ts');
      const raw = models.featuresOf(await decodeImage(w.store.objects.get(`${BUCKET}/${key}`)!.bytes, 32));
      const expected = raw.map((x) => x / norm(raw));
      assert.ok(maxAbs(v.vector, expected) < 1e-6, `${key}: the normalized features`);
    }
    assert.equal(counters.get('vectors.stored'), 2);
    assert.deepEqual(w.vectors.calls, ['remove b1@cafe 2', 'put b0@cafe 2'], 'one call per space and batch');
  });

  it('an overwrite replaces the vector; tagged again by another model, the old model’s space loses it', async () => {
    const w = world();
    await w.upload('a.png', 1);
    await w.run();
    const first = await w.vectors.get('b0@cafe', { bucket: BUCKET, key: 'a.png' });
    const eTag = await w.upload('a.png', 5);
    await w.run();
    const second = w.vectors.stored.get('b0@cafe')!.get(`${BUCKET}/a.png`)!;
    assert.equal(second.eTag, eTag);
    assert.ok(maxAbs(first!, second.vector) > 1e-3, 'the new version’s vector replaced the old one');
    assert.equal(w.vectors.stored.get('b0@cafe')!.size, 1);
    // Overwritten by a larger image that b1 tags: the vector moves to b1's space, none stays in b0's.
    const third = await w.upload('a.png', 6, 'b1');
    await w.run();
    assert.deepEqual(await w.vectors.spaces(), ['b1@cafe']);
    assert.equal(w.vectors.stored.get('b1@cafe')!.get(`${BUCKET}/a.png`)!.eTag, third);
    assert.equal(await w.vectors.get('b0@cafe', { bucket: BUCKET, key: 'a.png' }), undefined);
    // New weights for b1 (marker b1@beef): the vector is written to the new weights' space. (The same
    // model's older weights are not listed: on S3 Vectors both are one index, where the new vector
    // replaces the old under the same key; a query reads only the space of the object's marker.)
    await w.upload('a.png', 7, 'b1');
    await w.run(w.build({ hash: 'beef' }).worker);
    assert.ok(await w.vectors.get('b1@beef', { bucket: BUCKET, key: 'a.png' }));
  });

  it('a tier with embeddings: false stores none, and its overwrite removes the old vector', async () => {
    const w = world();
    await w.upload('a.png', 1);
    await w.upload('b.png', 2);
    await w.run();
    assert.equal(w.vectors.stored.get('b0@cafe')!.size, 2);
    const off = w.build({ embeddings: false });
    await w.upload('a.png', 3);
    const results = await w.run(off.worker);
    assert.equal(results[0].outcome.status, 'tagged');
    assert.equal(off.models.classified, 1);
    assert.equal(
      await w.vectors.get('b0@cafe', { bucket: BUCKET, key: 'a.png' }),
      undefined,
      'the overwritten object’s old vector is gone',
    );
    assert.ok(await w.vectors.get('b0@cafe', { bucket: BUCKET, key: 'b.png' }), 'others stay');
    assert.ok(!w.vectors.calls.some((c) => c.startsWith('put') && c !== 'put b0@cafe 2'), 'nothing put by the tier without embeddings');
  });

  it('a vector index failure loses no tags: the object is tagged, the message done, the failure logged and counted', async () => {
    const w = world();
    w.vectors.put = async () => {
      throw new Error('vector bucket unreachable');
    };
    const { worker, counters } = w.build({});
    await w.upload('a.png', 1);
    const results = await w.run(worker);
    assert.equal(results[0].outcome.status, 'tagged');
    assert.equal(w.store.objects.get(`${BUCKET}/a.png`)!.head.metadata['effitag-status'], 'tagged');
    assert.equal(w.queue.pending().length, 0, 'the message is deleted');
    assert.equal(counters.get('vectors.failed'), 1);
    assert.equal(counters.get('vectors.stored'), 0);
    const warn = w.lines.map((l) => JSON.parse(l)).find((l) => l.msg?.startsWith('vector index put failed'));
    assert.ok(warn, `a warning is logged: ${w.lines.join('\n')}`);
    assert.equal(warn.level, 'warn');
    assert.match(warn.error, /vector bucket unreachable/);
  });

  it('features that cannot be normalized (all zero) are not stored; an engine without features tags as before', async () => {
    const zero = world({ zero: true });
    const z = zero.build({ zero: true });
    await zero.upload('a.png', 1);
    assert.equal((await zero.run(z.worker))[0].outcome.status, 'tagged');
    assert.equal(z.counters.get('vectors.degenerate'), 1);
    assert.deepEqual(await zero.vectors.spaces(), []);
    const plain = world({ withFeatures: false });
    await plain.upload('a.png', 1);
    assert.equal((await plain.run())[0].outcome.status, 'tagged');
    assert.deepEqual(await plain.vectors.spaces(), []);
  });

  it('the router deletes a removed object’s vector from every space (the event that unindexes it), not one that still answers', async () => {
    const store = new MemoryStore();
    const vectors = new MemoryVectorIndex();
    const v = Float32Array.of(1, 0);
    await vectors.put('b0@cafe', [
      { bucket: BUCKET, key: 'gone.png', vector: v },
      { bucket: BUCKET, key: 'kept.png', vector: v },
    ]);
    await vectors.put('b1@cafe', [{ bucket: BUCKET, key: 'gone.png', vector: v }]);
    store.put(BUCKET, 'kept.png', 'still here');
    const router = makeRouter({ store, queues: {}, tiers: twoModelTier(), models: fixedCatalog({ topClass: 1 }), vectors });
    const removal = (key: string) =>
      JSON.stringify({
        Records: [
          {
            eventSource: 'aws:s3',
            eventName: 'ObjectRemoved:Delete',
            eventTime: '2026-12-07T10:00:00Z',
            s3: { bucket: { name: BUCKET }, object: { key } },
          },
        ],
      });
    await router.handleBody(removal('gone.png'));
    await router.handleBody(removal('kept.png'));
    assert.equal(await vectors.get('b0@cafe', { bucket: BUCKET, key: 'gone.png' }), undefined);
    assert.equal(await vectors.get('b1@cafe', { bucket: BUCKET, key: 'gone.png' }), undefined);
    assert.ok(await vectors.get('b0@cafe', { bucket: BUCKET, key: 'kept.png' }), 'a key that still answers keeps its vector');
  });
});

describe('backfill --embeddings (core, in-memory ports)', () => {
  /** Objects tagged by a worker that kept no vectors (before embeddings existed), into `index`. */
  async function taggedBefore(keys: string[]) {
    const w = world();
    const index = new MemoryIndex();
    const tiers = twoModelTier();
    const models = featureCatalog();
    const worker = makeWorker({ store: w.store, queue: w.queue, tiers, models, index, options: { retryBaseSeconds: 0 } });
    for (const [i, key] of keys.entries()) await w.upload(key, i + 1);
    await w.run(worker);
    return { ...w, index, tiers, models };
  }

  it('stores the vector the worker would have stored, and a missing hash; a dry run counts and prices without reading an image', async () => {
    const t = await taggedBefore(['a.png', 'b.png', 'c.png']);
    assert.deepEqual(await t.vectors.spaces(), []);
    // One record lost its hash (tagged before hashes were kept).
    const b = t.index.objects.get(`${BUCKET}/b.png`)!;
    const withHash = b.phash;
    assert.ok(withHash);
    t.index.objects.set(`${BUCKET}/b.png`, { ...b, phash: undefined });
    const deps = { store: t.store, index: t.index, vectors: t.vectors, tiers: t.tiers, models: t.models };
    const gets = () => t.store.calls.filter((c) => c.method === 'get').length;
    const before = gets();
    const dry = await backfillEmbeddings(deps, { bucket: BUCKET, dryRun: true });
    assert.equal(gets(), before, 'a dry run downloads nothing');
    assert.equal(t.models.classified, 3, 'and infers nothing');
    assert.deepEqual([dry.listed, dry.vectors, dry.hashes, dry.complete], [3, 3, 1, true]);
    assert.deepEqual(dry.byTierVariant, { cpu: { b0: 3 } });
    assert.ok(dry.bytesByTierVariant.cpu.b0 > 0);
    assert.deepEqual(await t.vectors.spaces(), [], 'a dry run writes nothing');

    const done = await backfillEmbeddings(deps, { bucket: BUCKET });
    assert.deepEqual([done.vectors, done.hashes, done.errors], [3, 1, 0]);
    assert.equal(t.models.classified, 6, 'one inference per object');
    // The same vectors a worker with embeddings stores for the same objects.
    const fresh = world();
    for (const [i, key] of ['a.png', 'b.png', 'c.png'].entries()) await fresh.upload(key, i + 1);
    await fresh.run();
    for (const key of ['a.png', 'b.png', 'c.png']) {
      const got = await t.vectors.get('b0@cafe', { bucket: BUCKET, key });
      const want = await fresh.vectors.get('b0@cafe', { bucket: BUCKET, key });
      assert.ok(got && want && maxAbs(got, want) < 1e-6, key);
    }
    assert.equal(t.index.objects.get(`${BUCKET}/b.png`)!.phash, withHash, 'the hash the worker computes');
    assert.deepEqual(t.index.objects.get(`${BUCKET}/b.png`)!.tags, b.tags, 'the record keeps its tags');
    // A second run finds nothing to add.
    const again = await backfillEmbeddings(deps, { bucket: BUCKET });
    assert.deepEqual([again.vectors, again.hashes, again.skipped], [0, 0, { complete: 3 }]);
  });

  it('leaves alone what it cannot or need not embed: not indexed, failed, changed since, older weights, embeddings off', async () => {
    const t = await taggedBefore(['old.png', 'changed.png', 'failed.png', 'ok.png']);
    t.store.put(BUCKET, 'untagged.png', await gradientImage(30, 30, 'png', 9));
    t.store.put(BUCKET, 'changed.png', await gradientImage(33, 31, 'png', 8)); // overwritten, not tagged yet
    const failed = t.index.objects.get(`${BUCKET}/failed.png`)!;
    t.index.objects.set(`${BUCKET}/failed.png`, { ...failed, failure: 'undecodable: test' });
    const old = t.index.objects.get(`${BUCKET}/old.png`)!;
    t.index.objects.set(`${BUCKET}/old.png`, { ...old, marker: 'b0@0ld0' });
    const deps = { store: t.store, index: t.index, vectors: t.vectors, tiers: t.tiers, models: t.models };
    const r = await backfillEmbeddings(deps, { bucket: BUCKET });
    assert.deepEqual(r.skipped, { 'not-indexed': 1, changed: 1, failed: 1, 'older-model': 1 });
    assert.equal(r.vectors, 1);
    assert.deepEqual([...t.vectors.stored.get('b0@cafe')!.keys()], [`${BUCKET}/ok.png`]);
    // A tier that keeps no embeddings: none added.
    const off = await taggedBefore(['a.png']);
    const none = await backfillEmbeddings(
      { store: off.store, index: off.index, vectors: off.vectors, tiers: twoModelTier(false), models: off.models },
      { bucket: BUCKET },
    );
    assert.deepEqual([none.vectors, none.skipped], [0, { 'complete-no-embeddings': 1 }]);
  });
});

describe('similar (core, in-memory ports)', () => {
  async function indexed() {
    const t = world();
    const index = new MemoryIndex();
    const worker = makeWorker({
      store: t.store,
      queue: t.queue,
      tiers: twoModelTier(),
      models: featureCatalog(),
      index,
      vectors: t.vectors,
      options: { retryBaseSeconds: 0 },
    });
    for (const [i, key] of ['p/a.png', 'p/b.png', 'p/c.png', 'q/d.png'].entries()) await t.upload(key, i + 1);
    await t.run(worker);
    return { index, vectors: t.vectors };
  }

  it('like an object: itself left out, best first, limit and min-score applied; bad input is a SimilarError', async () => {
    const deps = await indexed();
    const all = await similarToObject(deps, { bucket: BUCKET, key: 'p/a.png' }, { limit: 10 });
    assert.equal(all.space, 'b0@cafe');
    assert.deepEqual(all.hits.map((h) => h.key).sort(), ['p/b.png', 'p/c.png', 'q/d.png']);
    for (let i = 1; i < all.hits.length; i++) assert.ok(all.hits[i - 1].score >= all.hits[i].score);
    const one = await similarToObject(deps, { bucket: BUCKET, key: 'p/a.png' }, { limit: 1 });
    assert.deepEqual(one.hits, all.hits.slice(0, 1));
    const cut = await similarToObject(deps, { bucket: BUCKET, key: 'p/a.png' }, { limit: 10, minScore: all.hits[1].score });
    assert.deepEqual(cut.hits, all.hits.slice(0, 2));
    await assert.rejects(similarToObject(deps, { bucket: BUCKET, key: 'p/none.png' }, { limit: 5 }), SimilarError);
    await deps.vectors.remove('b0@cafe', [{ bucket: BUCKET, key: 'p/b.png' }]);
    await assert.rejects(
      similarToObject(deps, { bucket: BUCKET, key: 'p/b.png' }, { limit: 5 }),
      /has no embedding under the model that tagged it/,
    );
    await assert.rejects(similarToObject(deps, { bucket: BUCKET, key: 'p/a.png' }, { limit: 100 }), /--limit must be/);
  });

  it('like a vector: within the prefix; a prefix with nothing indexed, or only another model’s objects, is a SimilarError', async () => {
    const deps = await indexed();
    const a = (await deps.vectors.get('b0@cafe', { bucket: BUCKET, key: 'p/a.png' }))!;
    const r = await similarToVector(deps, { space: 'b0@cafe', vector: a }, { bucket: BUCKET, prefix: 'p/' }, { limit: 10 });
    assert.equal(r.hits[0].key, 'p/a.png');
    assert.ok(Math.abs(r.hits[0].score - 1) < 1e-6);
    assert.ok(r.hits.every((h) => h.key.startsWith('p/')));
    await assert.rejects(
      similarToVector(deps, { space: 'b0@cafe', vector: a }, { bucket: BUCKET, prefix: 'none/' }, { limit: 10 }),
      /nothing under s3:\/\/photos\/none\/ is indexed/,
    );
    await assert.rejects(
      similarToVector(deps, { space: 'b1@cafe', vector: a }, { bucket: BUCKET, prefix: 'p/' }, { limit: 10 }),
      /tagged by b0@cafe, not by b1@cafe/,
    );
  });
});

/**
 * ImageNet and custom tags from one tier (issue 24 item 4): `model: NAME` with `imagenet: true`.
 * A custom model that is head-only on the variant's very weights runs as a dense head on the ImageNet
 * pass's pooled features (one inference per image); any other custom model runs a pass of its own
 * (two). The object's marker names both models; the index rolls up ImageNet's tags only; `tiers cost`
 * prices one or two passes and says which.
 *
 * The end-to-end part runs the embedded stack with a counting engine and three artifacts made here
 * (no training): a BatchNorm-calibrated base, a head-only custom model on it (its backbone copied,
 * byte for byte, a new 4-class head) and a "fine-tuned" one (the same, one backbone weight changed).
 * Expected custom tags come from the custom artifact run alone (its own ONNX graph), not from the
 * worker's head.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { readdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import sharp from 'sharp';
import { decodeImage } from '../inference/image.ts';
import { ortEngine } from '../inference/ort-engine.ts';
import type { EmbeddedStack } from '../local/stack.ts';
import { planModel } from '../model/plan.ts';
import { seededRandom } from '../model/random-weights.ts';
import { IMAGENET_LABELS } from '../model/labels.ts';
import { ancestorTags, leafTag, normalizeTag } from '../model/tag-hierarchy.ts';
import { loadArtifact, type WeightsArtifact, writeArtifact } from '../model/weights.ts';
import { indexedObject, taggingFromMetadata } from '../pipeline/index-writes.ts';
import { combinedMarker, decodeTags, encodeTagged, KEYS, metadataBytes, tagRoom } from '../pipeline/marker.ts';
import { directoryCatalog, headProbabilities, sharedHeadOf } from '../pipeline/models.ts';
import { isCurrentMarker } from '../pipeline/router.ts';
import { backfillDrop } from '../pipeline/backfill-filter.ts';
import { mergeTags } from '../pipeline/writeback.ts';
import { estimateCosts, type BenchFile } from '../tiers/cost.ts';
import { modelFor, modelsFor, parseTiers, validateTiers } from '../tiers/schema.ts';
import { tempDir } from './support/fixtures.ts';
import { head, put, startTestStack, waitFor, type EngineProbe } from './support/local-stack.ts';
import { calibratedArtifact, drawPattern, PATTERNS, writePatternDataset } from './support/shapes.ts';
import { folderSource } from '../training/dataset.ts';
import { train } from '../training/train.ts';

const BASE = 'custom-w0.25-d0.25-r32';
const OTHER_BASE = 'custom-w0.25-d0.25-r40';
/** Custom labels named like ImageNet classes: rolled up by mistake, they would bring "cat", "dog", "car". */
const OWN = ['tabby', 'golden retriever', 'sports car', 'daisy'];

const tier = (extra: Record<string, unknown>) => ({
  variants: ['b0'],
  compute: { target: 'lambda-cpu', memoryMb: 2048 },
  engine: 'ort',
  batchSize: 4,
  ...extra,
});
const file = (tiers: Record<string, unknown>, extra: Record<string, unknown> = {}) => ({
  version: 1,
  tiers,
  routing: { default: { tier: Object.keys(tiers)[0] } },
  ...extra,
});

/**
 * A custom artifact on `base`: its backbone copied and a new seeded head over `labels`; `tuned`
 * changes one backbone weight, as fine-tuning would (then it is no longer head-only on `base`).
 */
async function customArtifact(
  dir: string,
  base: WeightsArtifact,
  name: string,
  seed: number,
  { tuned = false, resolution }: { tuned?: boolean; resolution?: number } = {},
): Promise<void> {
  const plan = planModel(base.manifest.variant, { classes: OWN.length, ...(resolution ? { resolution } : {}) });
  const weights = new Map(base.weights);
  const features = base.weights.get('predictions/kernel:0')!.length / base.manifest.classes;
  const rand = seededRandom(seed);
  weights.set(
    'predictions/kernel:0',
    Float32Array.from({ length: features * OWN.length }, () => (rand() * 2 - 1) * 3),
  );
  weights.set(
    'predictions/bias:0',
    Float32Array.from({ length: OWN.length }, () => (rand() * 2 - 1) * 0.2),
  );
  if (tuned) {
    const stem = weights.get('stem_conv/kernel:0')!.slice();
    stem[0] += 0.25;
    weights.set('stem_conv/kernel:0', stem);
  }
  await writeArtifact(
    dir,
    plan,
    weights,
    { kind: 'trained', note: 'test fixture: a head over a copied backbone' },
    {
      name,
      labels: OWN,
      base: { variant: base.manifest.variant, sha256: base.manifest.sha256 },
      dataSha256: '0'.repeat(64),
      images: { train: 0, val: 0, skipped: 0 },
      stages: [{ phase: 'head', resolution: plan.resolution, epochs: 1, valAccuracy: 0, seconds: 0 }],
      metrics: { valAccuracy: 0, perClass: [] },
      backend: 'test',
    },
  );
}

describe('two heads: tiers config', () => {
  it('model with imagenet: true tags with both; without it, the custom model alone (existing files unchanged)', () => {
    const both = parseTiers(file({ t: tier({ model: 'shapes', imagenet: true, variants: ['b0', 'b2'] }) }));
    assert.deepEqual(both.tiers.t.models, ['b0', 'b2', 'shapes']);
    assert.deepEqual(both.models, ['b0', 'b2', 'shapes']);
    assert.deepEqual(modelsFor(both.tiers.t, 'b2'), ['b2', 'shapes']);
    // The embedding (and its vector space) comes from the ImageNet pass.
    assert.equal(modelFor(both.tiers.t, 'b2'), 'b2');
    const alone = parseTiers(file({ t: tier({ model: 'shapes' }) }));
    assert.deepEqual(alone.tiers.t.models, ['shapes']);
    assert.deepEqual(modelsFor(alone.tiers.t, 'b0'), ['shapes']);
    const plain = parseTiers(file({ t: tier({}) }));
    assert.deepEqual(modelsFor(plain.tiers.t, 'b0'), ['b0']);
  });

  it('shipped tiers files mean what they meant: a tier with model tags with it alone, one without with its variants', async () => {
    const files = ['tiers/defaults.json', 'tiers/local.json', ...(await readdir('examples/tiers')).map((f) => join('examples/tiers', f))];
    for (const f of files.filter((x) => x.endsWith('.json'))) {
      const config = parseTiers(JSON.parse(await readFile(f, 'utf8')), f);
      for (const t of Object.values(config.tiers)) {
        assert.deepEqual(t.models, t.model ? [t.model] : t.variants, `${f}: ${t.name}`);
        for (const v of t.variants) assert.deepEqual(modelsFor(t, v), [t.model ?? v], `${f}: ${t.name} ${v}`);
      }
    }
  });

  it('refuses what cannot be meant, with its path', () => {
    const errors = (raw: unknown) =>
      validateTiers(raw)
        .issues.filter((i) => i.severity === 'error')
        .map((i) => `${i.path}: ${i.message}`);
    assert.deepEqual(errors(file({ t: tier({ imagenet: false }) })), [
      'tiers.t.imagenet: a tier without model tags with ImageNet; imagenet: false needs model: NAME (a custom model)',
    ]);
    assert.deepEqual(errors(file({ t: tier({ model: 'b3', imagenet: true }) })), [
      `tiers.t.model: "b3" is an ImageNet classifier; imagenet: true adds ImageNet's tags to a custom model's (effitag train --name)`,
    ]);
    assert.match(errors(file({ t: tier({ model: 'b0-int8', imagenet: true }) })).join('\n'), /"b0-int8" is an ImageNet classifier/);
    // A custom model's int8 model is a custom model.
    assert.deepEqual(errors(file({ t: tier({ model: 'shapes-int8', imagenet: true }) })), []);
    assert.match(errors(file({ t: tier({ imagenet: 'yes' }) })).join('\n'), /tiers\.t\.imagenet/);
    // The custom model alone still names one variant, its base.
    assert.match(errors(file({ t: tier({ model: 'shapes', variants: ['b0', 'b1'] }) })).join('\n'), /lists one variant/);
  });
});

describe('two heads: metadata, object tags, index and markers', () => {
  const imagenet = [
    { index: 207, label: IMAGENET_LABELS[207], probability: 0.6 },
    { index: 281, label: IMAGENET_LABELS[281], probability: 0.2 },
  ];
  const own = [
    { index: 0, label: 'tabby', probability: 0.7 },
    { index: 3, label: 'daisy', probability: 0.2 },
  ];
  const marker = combinedMarker(['b0@111111111111', 'shapes@222222222222']);
  const fixed = { model: marker, at: '2026-12-07T00:00:00.000Z', etag: 'e1' };

  it('writes ImageNet tags in effitag-tags and the custom labels in effitag-labels, within 2 KB', () => {
    const encoded = encodeTagged({ mine: 'x' }, imagenet, fixed, own)!;
    assert.equal(encoded.metadata[KEYS.tags], 'golden_retriever=0.600;tabby=0.200');
    assert.equal(encoded.metadata[KEYS.labels], 'tabby=0.700;daisy=0.200');
    assert.equal(encoded.metadata[KEYS.model], marker);
    assert.equal(encoded.metadata.mine, 'x');
    assert.equal(encoded.tagsWritten, 4);
    // Near the budget: the user's keys untouched, each model keeps at least its first tag.
    // Room for 36 bytes of tags beside both keys: one tag of each (22 + 11), not two of either.
    const notes = (room: number) => ({ notes: 'n'.repeat(tagRoom({ notes: '' }, fixed) - KEYS.labels.length - room) });
    const tight = encodeTagged(notes(36), imagenet, fixed, own)!;
    assert.ok(tight, 'fits one tag of each');
    assert.ok(metadataBytes(tight.metadata) <= 2048, String(metadataBytes(tight.metadata)));
    assert.equal(tight.metadata[KEYS.tags], 'golden_retriever=0.600');
    assert.equal(tight.metadata[KEYS.labels], 'tabby=0.700');
    assert.equal(tight.tagsDropped, 2);
    // Not one of each: nothing (the index holds it), never one model's tags without the other's.
    assert.equal(encodeTagged(notes(32), imagenet, fixed, own), undefined);
    // Object tags: both lists, then the marker, as room allows.
    const tags = mergeTags({ a: '1' }, imagenet, marker, own)!;
    assert.equal(tags.tags[KEYS.labels], 'tabby:0.70 / daisy:0.20');
    assert.equal(tags.tags[KEYS.tags], 'golden retriever:0.60 / tabby:0.20');
    assert.equal(tags.added, 3);
  });

  it('the index rolls up the ImageNet tags only', () => {
    const head = { eTag: 'e1', contentLength: 10, metadata: {}, lastModified: new Date(0) };
    const entry = indexedObject(
      { bucket: 'b', key: 'k' },
      head,
      { marker, at: fixed.at, predictions: imagenet, imagenet: true, labels: own },
      () => new Date(0),
    );
    const tags = new Map(entry.tags.map((t) => [t.tag, t]));
    // ImageNet's golden retriever rolls up to dog; its tabby (class 281) to cat.
    assert.ok(ancestorTags(207).includes('dog') && tags.get('dog')?.leaf === false);
    for (const a of ancestorTags(281)) assert.ok(tags.has(a), a);
    // The custom "daisy" is a leaf and nothing rolls up from it (ImageNet's daisy would bring "flower").
    assert.equal(tags.get('daisy')?.leaf, true);
    const fromImagenet = new Set([...ancestorTags(207), ...ancestorTags(281)]);
    const daisyAncestors = ancestorTags(IMAGENET_LABELS.findIndex((l) => leafTag(l) === 'daisy')).filter((a) => a !== 'daisy');
    assert.ok(
      daisyAncestors.some((a) => !fromImagenet.has(a)),
      'ImageNet daisy has ancestors of its own',
    );
    for (const a of daisyAncestors) assert.equal(tags.has(a), fromImagenet.has(a), a);
    // A label both give keeps the higher probability.
    assert.equal(tags.get('tabby')?.probability, 0.7);
    assert.equal(entry.variant, 'b0');
    assert.equal(entry.marker, marker);
    // From the metadata (a retry, backfill --index): the same.
    const written = encodeTagged({}, imagenet, fixed, own)!.metadata;
    const back = taggingFromMetadata({ ...head, metadata: written })!;
    assert.equal(back.imagenet, true);
    assert.deepEqual(
      back.labels?.map((l) => l.label),
      ['tabby', 'daisy'],
    );
    assert.deepEqual(
      [...indexedObject({ bucket: 'b', key: 'k' }, head, back, () => new Date(0)).tags].sort((a, b) => a.tag.localeCompare(b.tag)),
      [...entry.tags].sort((a, b) => a.tag.localeCompare(b.tag)),
    );
  });

  it('the marker is current only while both models are: a backfill re-tags when either changes', () => {
    const markers = (b0: string, shapes: string) => ({ marker: (m: string) => (m === 'b0' ? `b0@${b0}` : `shapes@${shapes}`) });
    assert.equal(isCurrentMarker(markers('111111111111', '222222222222'), marker), true);
    assert.equal(isCurrentMarker(markers('111111111111', '333333333333'), marker), false);
    assert.equal(isCurrentMarker(markers('999999999999', '222222222222'), marker), false);
    assert.equal(backfillDrop({ [KEYS.model]: marker, [KEYS.status]: 'tagged' }, marker, { mode: 'stale' }), 'current');
    // Tagged by the custom model alone before the tier added ImageNet: stale.
    assert.equal(backfillDrop({ [KEYS.model]: 'shapes@222222222222', [KEYS.status]: 'tagged' }, marker, { mode: 'stale' }), undefined);
  });
});

describe('two heads: tiers cost', () => {
  const bench: BenchFile = {
    machine: { cpus: 2 },
    rows: [
      { engine: 'ort', variant: 'b0', batch: 8, imagesPerSecond: 40 },
      { engine: 'ort', variant: 'b2', batch: 8, imagesPerSecond: 10 },
    ],
  };
  const config = parseTiers(
    file({
      plain: tier({}),
      both: tier({ model: 'shapes', imagenet: true }),
      gpu: tier({
        model: 'shapes',
        imagenet: true,
        compute: { target: 'ecs-gpu', instanceType: 'g5.xlarge', maxTasks: 1 },
        engine: 'tfjs',
        throughput: { b0: 300 },
      }),
    }),
  );
  const row = (report: ReturnType<typeof estimateCosts>, t: string) => report.rows.find((r) => r.tier === t)!;

  it('prices two passes unless the custom model is known to be a head on the variant, and says which', () => {
    const unchecked = estimateCosts(config, bench);
    const plain = row(unchecked, 'plain');
    const two = row(unchecked, 'both');
    assert.equal(two.passes, 2);
    assert.deepEqual(two.models, ['b0', 'shapes']);
    assert.match(two.passNote!, /2 passes priced: whether shapes shares b0's pass is unchecked/);
    // Lambda: CPU-seconds per image = 2 cores / 40 per pass, twice.
    assert.ok(Math.abs(1 / two.imagesPerSecond! - 2 / plain.imagesPerSecond!) < 1e-9, `${two.imagesPerSecond} vs ${plain.imagesPerSecond}`);
    // Twice the GB-seconds; the request charge per batch is the same.
    assert.ok(two.dollarsPerMillion! / plain.dollarsPerMillion! > 1.9, `${two.dollarsPerMillion} vs ${plain.dollarsPerMillion}`);
    // GPU at a configured rate: two passes at 300/s each → 150/s.
    assert.equal(row(unchecked, 'gpu').imagesPerSecond, 150);
    assert.ok(unchecked.assumptions.some((a) => a.startsWith('ImageNet + custom model tiers')));

    const shared = estimateCosts(config, bench, { customModel: () => ({ shared: true, variant: 'b0' }) });
    assert.equal(row(shared, 'both').passes, 1);
    assert.match(row(shared, 'both').passNote!, /1 pass: shapes is a head on b0's weights/);
    assert.equal(row(shared, 'both').imagesPerSecond, plain.imagesPerSecond);
    assert.equal(row(shared, 'gpu').imagesPerSecond, 300);

    // Fine-tuned on another base: its own pass on that base's benchmark row.
    const other = estimateCosts(config, bench, { customModel: () => ({ shared: false, variant: 'b2' }) });
    const b2 = row(other, 'both');
    assert.equal(b2.passes, 2);
    assert.match(b2.passNote!, /not head-only on b0's weights \(b2 pass of its own\)/);
    // CPU-seconds per image: b0's 2/40 plus b2's 2/10, five times b0's alone.
    assert.ok(Math.abs(plain.imagesPerSecond! / b2.imagesPerSecond! - 5) < 1e-9, String(b2.imagesPerSecond));
  });
});

describe('two heads: the dense head is the custom model', () => {
  it('sharedHeadOf finds the head only on the same weights; headProbabilities is softmax(f·K + b)', async () => {
    const dir = await tempDir('effitag-two-heads-unit-');
    await calibratedArtifact(join(dir, BASE), BASE);
    const base = await loadArtifact(join(dir, BASE));
    await customArtifact(join(dir, 'heady'), base, 'heady', 11);
    await customArtifact(join(dir, 'tuned'), base, 'tuned', 11, { tuned: true });
    const heady = await loadArtifact(join(dir, 'heady'));
    const h = sharedHeadOf(heady, base)!;
    assert.ok(h, 'head-only on the same weights');
    assert.deepEqual(h.labels, OWN);
    assert.equal(sharedHeadOf(await loadArtifact(join(dir, 'tuned')), base), undefined);
    // The same weights at another input size: the model alone would see other features.
    await customArtifact(join(dir, 'larger'), base, 'larger', 11, { resolution: 48 });
    assert.equal(sharedHeadOf(await loadArtifact(join(dir, 'larger')), base), undefined);
    // A different base (another seed's weights) shares nothing either.
    await calibratedArtifact(join(dir, 'other'), BASE, 5);
    assert.equal(sharedHeadOf(heady, await loadArtifact(join(dir, 'other'))), undefined);
    assert.equal(await directoryCatalog(dir).sharedHead!('tuned', BASE), undefined);
    assert.ok(await directoryCatalog(dir).sharedHead!('heady', BASE));
    // What `effitag train --epochs 0` (head only) makes on the base shares its pass.
    const data = join(dir, 'data');
    const patterns = await writePatternDataset(data, { patterns: ['disc', 'stripes', 'checks'], perLabel: 10, size: 48, seed: 3 });
    await train({
      source: folderSource(data),
      name: 'trained',
      base: BASE,
      weights: join(dir, BASE),
      out: join(dir, 'trained'),
      epochs: 0,
      stages: 1,
      headEpochs: 3,
      log: () => {},
    });
    assert.deepEqual(sharedHeadOf(await loadArtifact(join(dir, 'trained')), base)?.labels, patterns);
    // By hand, from the artifact's weights: logits = f · kernel + bias, then softmax.
    const kernel = heady.weights.get('predictions/kernel:0')!;
    const bias = heady.weights.get('predictions/bias:0')!;
    const f = Float32Array.from({ length: h.features }, (_, i) => Math.sin(i) + 0.5);
    const logits = OWN.map((_, j) => {
      let z = bias[j];
      for (let i = 0; i < h.features; i++) z += f[i] * kernel[i * OWN.length + j];
      return z;
    });
    const e = logits.map((z) => Math.exp(z - Math.max(...logits)));
    const p = headProbabilities(h, f);
    for (const [j, x] of e.entries()) assert.ok(Math.abs(p[j] - x / e.reduce((a, b) => a + b, 0)) < 1e-6, `${j}: ${p[j]}`);
  });
});

describe('two heads on the embedded stack', () => {
  let stack: EmbeddedStack | undefined;
  let probe: EngineProbe;
  let weights: string;
  const images: Buffer[] = [];
  const tiers = {
    version: 1,
    tiers: {
      plain: tier({ variants: [{ width: 0.25, depth: 0.25, resolution: 32, weights: 'catalog' }], topK: 3, minConfidence: 0 }),
      shared: tier({ variants: [BASE], model: 'heady', imagenet: true, topK: 3, minConfidence: 0 }),
      pair: tier({ variants: [BASE], model: 'tuned', imagenet: true, topK: 3, minConfidence: 0 }),
      other: tier({ variants: [BASE], model: 'elsewhere', imagenet: true, topK: 3, minConfidence: 0 }),
      alone: tier({ variants: [BASE], model: 'heady', topK: 3, minConfidence: 0 }),
    },
    routing: {
      default: { tier: 'plain' },
      rules: [
        { prefix: 'shared/', tier: 'shared' },
        { prefix: 'pair/', tier: 'pair' },
        { prefix: 'other/', tier: 'other' },
        { prefix: 'alone/', tier: 'alone' },
      ],
    },
  };

  before(async () => {
    weights = await tempDir('effitag-two-heads-');
    await calibratedArtifact(join(weights, BASE), BASE);
    const base = await loadArtifact(join(weights, BASE));
    await customArtifact(join(weights, 'heady'), base, 'heady', 11);
    await customArtifact(join(weights, 'tuned'), base, 'tuned', 11, { tuned: true });
    // On another base, at another resolution: its own pass on the image decoded at its size.
    await calibratedArtifact(join(weights, 'other-base'), OTHER_BASE, 5);
    await customArtifact(join(weights, 'elsewhere'), await loadArtifact(join(weights, 'other-base')), 'elsewhere', 13);
    const rand = seededRandom(21);
    for (const p of Object.keys(PATTERNS))
      images.push(
        await sharp(drawPattern(p, 48, rand), { raw: { width: 48, height: 48, channels: 3 } })
          .png()
          .toBuffer(),
      );
    assert.ok(images.length >= 3 && images.length === Object.keys(PATTERNS).length);
    ({ stack, probe } = await startTestStack(tiers, { weightsDir: weights }));
  });
  after(async () => {
    await stack?.stop();
  });

  /** Upload every image under `prefix`, wait for all to be tagged; the engine's images for them. */
  async function tagAll(prefix: string): Promise<{ metas: Record<string, string>[]; inferred: number }> {
    const s = stack!;
    const before = probe.images;
    for (const [i, png] of images.entries()) await put(s, `${prefix}${i}.png`, png);
    const metas = await Promise.all(
      images.map((_, i) =>
        waitFor(
          `tags on ${prefix}${i}.png`,
          async () => {
            const m = (await head(s, `${prefix}${i}.png`)).Metadata;
            return m?.[KEYS.status] === 'tagged' ? m : m?.[KEYS.status] === 'failed' ? assert.fail(m[KEYS.reason]) : undefined;
          },
          90_000,
        ),
      ),
    );
    return { metas, inferred: probe.images - before };
  }

  /** The index's tags of one object, found through one of its tags. */
  async function indexedTags(key: string, tag: string): Promise<Record<string, number>> {
    const s = stack!;
    return waitFor(
      `${key} in the index`,
      async () => (await s.index.search({ bucket: s.bucket, tags: [tag], limit: 100 })).hits.find((h) => h.key === key)?.tags,
      30_000,
    );
  }

  it('`effitag tiers cost --weights DIR` checks which custom model shares the pass, and says so', async () => {
    const path = join(weights, 'tiers.json');
    await writeFile(path, JSON.stringify(tiers));
    const run = (...extra: string[]) =>
      promisify(execFile)(process.execPath, ['bin/effitag.js', 'tiers', 'cost', '--tiers', path, ...extra], { env: process.env });
    const rows = JSON.parse((await run('--json', '--weights', weights)).stdout).rows as {
      tier: string;
      passes?: number;
      passNote?: string;
    }[];
    const of = (t: string) => rows.find((r) => r.tier === t)!;
    assert.equal(of('shared').passes, 1);
    assert.equal(of('shared').passNote, `1 pass: heady is a head on ${BASE}'s weights`);
    assert.equal(of('pair').passes, 2);
    assert.match(of('pair').passNote!, /2 passes: tuned is not head-only/);
    assert.equal(of('plain').passes, undefined);
    // Without the catalog: two passes, unchecked, in the table's "throughput from" column.
    const text = (await run()).stdout;
    assert.match(text, new RegExp(`shared +${BASE} \\+ heady .*2 passes priced: whether heady shares`));
  });

  it('ImageNet and custom tags from one pass (head-only), from two (fine-tuned); ImageNet tags as an ImageNet-only tier writes them', async () => {
    const plain = await tagAll('plain/');
    const shared = await tagAll('shared/');
    const pair = await tagAll('pair/');
    const other = await tagAll('other/');
    const alone = await tagAll('alone/');
    assert.equal(plain.inferred, images.length, 'one inference per image, ImageNet only');
    assert.equal(shared.inferred, images.length, 'one inference per image: the custom model is a head on the same pass');
    assert.equal(pair.inferred, 2 * images.length, 'two inferences per image: the fine-tuned model needs its own');
    assert.equal(other.inferred, 2 * images.length, 'two inferences per image: a model on another base needs its own');
    assert.equal(alone.inferred, images.length, 'the custom model alone, as before: one inference');
    for (const [i, meta] of alone.metas.entries()) {
      // As before: its tags in effitag-tags, its marker alone; the same labels the shared head wrote.
      assert.equal(meta[KEYS.model], directoryCatalog(weights).marker('heady'));
      assert.equal(meta[KEYS.labels], undefined);
      const own = decodeTags(meta[KEYS.tags]);
      const head = decodeTags(shared.metas[i][KEYS.labels]);
      assert.deepEqual(
        own.map((t) => t.label),
        head.map((t) => t.label),
      );
      for (const [r, t] of own.entries()) assert.ok(Math.abs(t.probability - head[r].probability) <= 0.0015, `alone/${i} ${t.label}`);
    }

    const catalog = directoryCatalog(weights);
    const marker = (m: string) => catalog.marker(m);
    const engine = ortEngine({ log: () => {} });
    for (const [which, model, metas] of [
      ['shared', 'heady', shared.metas],
      ['pair', 'tuned', pair.metas],
      ['other', 'elsewhere', other.metas],
    ] as const) {
      // The custom model alone, on its own graph: what its tags must be.
      const alone = await engine.load(join(weights, model));
      try {
        for (const [i, meta] of metas.entries()) {
          assert.equal(meta[KEYS.model], `${marker(BASE)}+${marker(model)}`);
          assert.equal(meta[KEYS.tags], plain.metas[i][KEYS.tags], `${which}/${i}: ImageNet tags as the ImageNet-only tier's`);
          const [probs] = await alone.classify([await decodeImage(images[i], alone.resolution)]);
          const expected = [...probs]
            .map((p, c) => ({ label: OWN[c], p }))
            .sort((a, b) => b.p - a.p)
            .slice(0, 3);
          const got = decodeTags(meta[KEYS.labels]);
          assert.deepEqual(
            got.map((t) => t.label),
            expected.map((e) => e.label),
            `${which}/${i}: the custom model's own top 3`,
          );
          for (const [r, t] of got.entries())
            assert.ok(Math.abs(t.probability - expected[r].p) <= 0.0015, `${which}/${i} ${t.label}: ${t.probability} vs ${expected[r].p}`);
        }
      } finally {
        await alone.dispose();
      }
    }
    // The custom tags differ between images (the head sees each image's features): not a constant.
    assert.ok(new Set(shared.metas.map((m) => m[KEYS.labels])).size > 1, shared.metas.map((m) => m[KEYS.labels]).join(' | '));

    // The index: the ImageNet-only tier's tags (rolled up) plus the custom labels as they are.
    for (const i of [0, 1]) {
      const ownTag = normalizeTag(decodeTags(shared.metas[i][KEYS.labels])[0].label);
      const imagenetTag = normalizeTag(decodeTags(plain.metas[i][KEYS.tags])[0].label);
      const reference = await indexedTags(`plain/${i}.png`, imagenetTag);
      const both = await indexedTags(`shared/${i}.png`, ownTag);
      const written = decodeTags(shared.metas[i][KEYS.labels]).map((t) => normalizeTag(t.label));
      assert.deepEqual(Object.keys(both).sort(), [...new Set([...Object.keys(reference), ...written])].sort());
      // No ancestor of a custom label came in unless ImageNet's own tags brought it.
      for (const label of written) {
        const cls = IMAGENET_LABELS.findIndex((l) => leafTag(l) === label);
        for (const a of ancestorTags(cls)) if (a !== label) assert.equal(a in both, a in reference, `${label} → ${a}`);
      }
    }
  });

  it('`effitag show` prints both lists, the custom labels apart', async () => {
    const s = stack!;
    const meta = (await head(s, 'shared/0.png')).Metadata!;
    assert.ok(meta[KEYS.labels], 'tagged by the test above');
    const show = (...extra: string[]) =>
      promisify(execFile)(process.execPath, ['bin/effitag.js', 'show', `s3://${s.bucket}/shared/0.png`, ...extra], { env: process.env });
    const json = JSON.parse((await show('--json')).stdout);
    assert.deepEqual(json.tags, decodeTags(meta[KEYS.tags]));
    assert.deepEqual(json.labels, decodeTags(meta[KEYS.labels]));
    const text = (await show()).stdout.split('\n');
    const at = text.indexOf('  custom model:');
    assert.ok(at > 3, text.join('\n'));
    assert.deepEqual(
      text.slice(at + 1, at + 4).map((l) => l.trim().replace(/^[\d.]+%\s+/, '')),
      decodeTags(meta[KEYS.labels]).map((t) => t.label),
    );
  });
});

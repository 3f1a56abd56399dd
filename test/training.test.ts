/**
 * Training on one's own labels: the data set's rules (stratified seeded split, unreadable images
 * skipped and listed, too few images an error naming the label, unbalanced labels weighted), the
 * progressive schedule, augmentation, a head trained on B0 features separating textures (scored by
 * the exported ONNX graph), a from-scratch run with checkpoints and resume, and the custom model's
 * tags landing through the embedded stack and its index.
 */
import { before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { decodeImage } from '../inference/image.ts';
import { ortEngine } from '../inference/ort-engine.ts';
import type { EmbeddedStack } from '../local/stack.ts';
import { planModel } from '../model/plan.ts';
import { seededRandom } from '../model/random-weights.ts';
import { tf, useTfjsBackend } from '../model/tfjs-backend.ts';
import { CreateBucketCommand, PutObjectCommand, type S3Client } from '@aws-sdk/client-s3';
import { startS3Server } from '../local/s3-server.ts';
import { loadArtifact } from '../model/weights.ts';
import { s3Client } from '../pipeline/aws/clients.ts';
import { markersFromS3 } from '../pipeline/aws/markers.ts';
import { s3ImageSource } from '../cli/s3-images.ts';
import { publishWeights, syncWeights } from '../pipeline/aws/s3-weights.ts';
import { directoryCatalog } from '../pipeline/models.ts';
import { S3Store } from '../pipeline/aws/s3-store.ts';
import { generateCredentials } from '../pipeline/aws/local-credentials.ts';
import { decodeTags } from '../pipeline/marker.ts';
import { trainBatch } from '../training/augment.ts';
import { folderSource, loadDataset, splitStratified } from '../training/dataset.ts';
import { progressiveRanges, stages } from '../training/progressive.ts';
import { cutBefore, defaultUnfreeze, train } from '../training/train.ts';
import { modelFor, parseTiers } from '../tiers/schema.ts';
import { tempDir } from './support/fixtures.ts';
import { head, put, startTestStack, waitFor } from './support/local-stack.ts';
import { calibratedArtifact, drawPattern, writePatternDataset } from './support/shapes.ts';
import sharp from 'sharp';

const quiet = () => {};

const argmax = (p: ArrayLike<number>) => Array.prototype.indexOf.call(p, Math.max(...Array.from(p)));

/** `perLabel` new images of each pattern (a seed the model never saw), as PNG, with their true label. */
async function freshImages(patterns: string[], perLabel: number, size: number, seed: number) {
  const rand = seededRandom(seed);
  const out: { label: string; png: Buffer }[] = [];
  for (const label of patterns)
    for (let i = 0; i < perLabel; i++)
      out.push({
        label,
        png: await sharp(drawPattern(label, size, rand), { raw: { width: size, height: size, channels: 3 } })
          .png()
          .toBuffer(),
      });
  return out;
}

/**
 * A scorer of our own, independent of the trainer's metrics: the exported ONNX artifact on onnxruntime
 * over new images of known classes, each prediction named through the artifact's own label list (as
 * predict and the tags name it). A label list out of step with the classes scores below chance here.
 */
async function scoreArtifact(dir: string, images: { label: string; png: Buffer }[], naming = true): Promise<number> {
  const model = await ortEngine({ log: quiet }).load(dir);
  try {
    const labels = model.manifest.custom!.labels;
    const decoded = await Promise.all(images.map((i) => decodeImage(i.png, model.manifest.resolution)));
    const predicted = (await model.classify(decoded)).map((p) => labels[argmax(p)]);
    if (naming)
      assertOwnNaming(
        labels,
        images.map((i) => i.label),
        predicted,
      );
    return predicted.filter((l, i) => l === images[i].label).length / images.length;
  } finally {
    await model.dispose();
  }
}

const permutations = <T>(items: T[]): T[][] =>
  items.length <= 1 ? [items] : items.flatMap((x, i) => permutations([...items.slice(0, i), ...items.slice(i + 1)]).map((p) => [x, ...p]));

/**
 * Images of known classes get their own label first: the names as given (predict's, the tags') match
 * the true labels more often than chance and more often than under any other naming of the same
 * classes (every permutation of the label list). A model that learned anything passes; the same
 * model with its labels out of step with its classes (reversed, shifted) fails. Small models here
 * are far from perfect, so this is a statement about many images, not about each one.
 */
function assertOwnNaming(labels: string[], truth: string[], predicted: string[]): void {
  const score = (naming: string[]) => {
    const rename = new Map(labels.map((l, i) => [l, naming[i]]));
    return predicted.filter((p, i) => rename.get(p) === truth[i]).length / truth.length;
  };
  const own = score(labels);
  const detail = `predicted ${predicted.join(', ')} for ${truth.join(', ')}`;
  assert.ok(own > 1 / labels.length + 0.1, `own label first on ${(own * 100).toFixed(0)} % of the images: ${detail}`);
  for (const other of permutations(labels).filter((p) => p.some((l, i) => l !== labels[i])))
    assert.ok(
      own > score(other),
      `named as ${other.join('/')} instead of ${labels.join('/')}, the images score as well or better: ${detail}`,
    );
}

/** An embedded S3 server with one bucket, for the length of `fn`. */
async function withLocalS3(bucket: string, fn: (s3: S3Client, dir: string) => Promise<void>): Promise<void> {
  const dir = await tempDir('effitag-s3-');
  const credentials = generateCredentials();
  const server = await startS3Server({ directory: join(dir, 's3'), credentials });
  const s3 = s3Client({ s3Endpoint: server.endpoint, credentials });
  try {
    await s3.send(new CreateBucketCommand({ Bucket: bucket }));
    await fn(s3, dir);
  } finally {
    s3.destroy();
    await server.close();
  }
}

describe('training data sets', () => {
  it('splits each label by the fraction, seeded: the same seed the same split, another seed another', () => {
    const items = Array.from({ length: 100 }, (_, i) => ({ id: i, label: i < 70 ? 0 : 1 }));
    const a = splitStratified(items, 0.2, 1);
    assert.equal(a.val.filter((x) => x.label === 0).length, 14);
    assert.equal(a.val.filter((x) => x.label === 1).length, 6);
    assert.equal(a.train.length + a.val.length, 100);
    assert.equal(new Set([...a.train, ...a.val].map((x) => x.id)).size, 100);
    assert.deepEqual(splitStratified(items, 0.2, 1).val, a.val);
    assert.notDeepEqual(splitStratified(items, 0.2, 2).val, a.val);
    // A small label still gets one held-out image.
    assert.equal(splitStratified([{ label: 0 }, { label: 0 }, { label: 1 }, { label: 1 }], 0.1, 1).val.length, 2);
  });

  it('skips and lists unreadable images, warns about and weights unbalanced labels', async () => {
    const dir = await tempDir('effitag-data-');
    await writePatternDataset(dir, { patterns: ['stripes', 'disc'], perLabel: { stripes: 30, disc: 12 }, size: 40 });
    await writeFile(join(dir, 'disc', 'truncated.png'), (await readFile(join(dir, 'disc', 'disc-0000.png'))).subarray(0, 60));
    await writeFile(join(dir, 'disc', 'notes.txt'), 'not an image');
    const data = await loadDataset(folderSource(dir), { size: 32, minPerLabel: 10 });
    assert.deepEqual(data.labels, ['disc', 'stripes']);
    assert.deepEqual(data.counts, [12, 30]);
    assert.deepEqual(
      data.skipped.map((s) => s.path),
      ['disc/notes.txt', 'disc/truncated.png'],
    );
    assert.match(data.skipped[1].reason, /^undecodable/);
    assert.match(data.warnings[0], /unbalanced labels \(disc 12, stripes 30\)/);
    // n / (k · count): 42 / (2 · 12) and 42 / (2 · 30).
    assert.deepEqual(
      data.classWeights!.map((w) => w.toFixed(3)),
      ['1.750', '0.700'],
    );
    assert.equal(data.sha256.length, 64);
    assert.equal(data.train[0].pixels.length, 32 * 32 * 3);
  });

  it('reads a data set under an S3 prefix (one folder per label); an oversized object is skipped and listed', async () => {
    await withLocalS3('data', async (s3) => {
      const rand = seededRandom(5);
      const png = (p: string, n = 32) =>
        sharp(drawPattern(p, n, rand), { raw: { width: n, height: n, channels: 3 } })
          .png()
          .toBuffer();
      for (const label of ['disc', 'stripes'])
        for (let i = 0; i < 3; i++)
          await s3.send(new PutObjectCommand({ Bucket: 'data', Key: `sets/a/${label}/${i}.png`, Body: await png(label) }));
      // Not of a label: deeper keys and a folder marker; elsewhere: another prefix.
      await s3.send(new PutObjectCommand({ Bucket: 'data', Key: 'sets/a/disc/deeper/x.png', Body: await png('disc') }));
      await s3.send(new PutObjectCommand({ Bucket: 'data', Key: 'sets/a/stripes/', Body: '' }));
      await s3.send(new PutObjectCommand({ Bucket: 'data', Key: 'sets/b/disc/0.png', Body: await png('disc') }));
      const big = await png('disc', 256);
      await s3.send(new PutObjectCommand({ Bucket: 'data', Key: 'sets/a/disc/big.png', Body: big }));
      const source = s3ImageSource(new S3Store(s3, { quirks: 's3rver' }), 's3://data/sets/a', big.length - 1);
      const data = await loadDataset(source, { size: 32, minPerLabel: 2, val: 0.34 });
      assert.deepEqual(data.labels, ['disc', 'stripes']);
      assert.equal(data.train.length + data.val.length, 6);
      assert.deepEqual(
        data.skipped.map((x) => x.path),
        ['disc/big.png'],
      );
      assert.match(data.skipped[0].reason, /^too-large/, 'an object over the size limit (the big one here) is skipped, not fatal');
    });
  });

  it('a label with too few readable images is an error naming it', async () => {
    const dir = await tempDir('effitag-data-');
    await writePatternDataset(dir, { patterns: ['stripes', 'disc', 'checks'], perLabel: { stripes: 12, disc: 4, checks: 12 }, size: 32 });
    await assert.rejects(
      loadDataset(folderSource(dir), { size: 32, minPerLabel: 10 }),
      /too few readable images for label "disc" \(4\): each label needs at least 10/,
    );
    await mkdir(join(dir, 'x'));
    const one = await tempDir('effitag-data-');
    await writePatternDataset(one, { patterns: ['stripes'], perLabel: 12, size: 32 });
    await assert.rejects(loadDataset(folderSource(one), { size: 32 }), /found 1 label folder\(s\)/);
  });
});

describe('progressive learning schedule', () => {
  it('B0 takes the paper’s S row, sizes from 128/300 of 224 to 224; V2-L the L row', () => {
    const r = progressiveRanges('b0');
    assert.deepEqual(r, {
      size: { from: 96, to: 224 },
      randAugment: { from: 5, to: 15 },
      mixup: { from: 0, to: 0 },
      dropout: { from: 0.1, to: 0.3 },
    });
    assert.deepEqual(
      stages(r, 4).map((s) => [s.size, s.randAugment, s.dropout]),
      [
        [96, 5, 0.1],
        [136, 8.3, 0.167],
        [184, 11.7, 0.233],
        [224, 15, 0.3],
      ],
    );
    assert.deepEqual(progressiveRanges('v2-l').mixup, { from: 0, to: 0.4 });
    assert.deepEqual(progressiveRanges('b7').randAugment, { from: 5, to: 20 });
    // Off: every stage at the top of every range.
    assert.deepEqual(new Set(stages(r, 3, false).map((s) => `${s.size}/${s.randAugment}/${s.dropout}`)), new Set(['224/15/0.3']));
    assert.deepEqual(progressiveRanges('b0', { size: { from: 64, to: 224 } }).size, { from: 64, to: 224 });
  });

  it('effitag train --dry-run prints the stages; a variant name is refused as a model name', async () => {
    const run = (...args: string[]) =>
      new Promise<{ code: number; stdout: string; stderr: string }>((resolve) =>
        execFile(process.execPath, ['bin/effitag.js', ...args], (err, stdout, stderr) =>
          resolve({ code: err ? Number(err.code) : 0, stdout, stderr }),
        ),
      );
    const dry = await run('train', '--dry-run', '--data', '.', '--name', 'x', '--base', 'b0', '--stages', '3', '--mixup', '0:0.2');
    assert.equal(dry.code, 0, dry.stderr);
    assert.match(dry.stdout, /1\s+96\s+5\s+0\s+0\.1\b/);
    assert.match(dry.stdout, /3\s+224\s+15\s+0\.2\s+0\.3\b/);
    const bad = await run('train', '--data', '.', '--name', 'b2', '--base', 'b0');
    assert.notEqual(bad.code, 0);
    assert.match(bad.stderr, /--name "b2": .*not a variant name/);
  });

  it('unfreezes the last stage’s blocks by default (B0: block7a only; B3: block7a, block7b)', () => {
    assert.equal(defaultUnfreeze(planModel('b0', { classes: 3 })), 1);
    assert.equal(defaultUnfreeze(planModel('b3', { classes: 3 })), 2);
    assert.equal(cutBefore(planModel('b0', { classes: 3 }), 1), 'block6d_add');
    assert.equal(cutBefore(planModel('b0', { classes: 3 }), 0), 'block7a_project_bn');
    assert.throws(() => cutBefore(planModel('b0', { classes: 3 }), 17), /b0 has 16 blocks/);
  });
});

describe('augmentation', () => {
  before(async () => {
    await useTfjsBackend('wasm', quiet);
  });

  it('crops, mirrors and mixes: shapes, pixel range, soft labels that sum to one', async () => {
    // A left-to-right ramp: a mirrored crop runs right to left.
    const size = 16;
    const ramp = new Uint8Array(size * size * 3).map((_, i) => Math.floor(i / 3) % size).map((v) => v * 16);
    const samples = Array.from({ length: 8 }, (_, i) => ({ path: `p${i}`, label: i % 2, pixels: ramp }));
    const { x, y } = trainBatch(samples, size, 2, { size: 8, randAugment: 0, mixup: 0, rand: seededRandom(3) });
    assert.deepEqual(x.shape, [8, 8, 8, 3]);
    const rows = (await x.array()) as number[][][][];
    const direction = rows.map((img) => Math.sign(img[4][7][0] - img[4][0][0]));
    assert.ok(direction.includes(1) && direction.includes(-1), `some crops mirrored, some not: ${direction}`);
    tf.dispose([x, y]);

    const mixed = trainBatch(samples, size, 2, { size: 8, randAugment: 15, mixup: 0.4, rand: seededRandom(4) });
    const labels = (await mixed.y.array()) as number[][];
    for (const l of labels) assert.ok(Math.abs(l[0] + l[1] - 1) < 1e-5);
    assert.ok(
      labels.some((l) => l[0] > 0.01 && l[0] < 0.99),
      'Mixup makes soft labels',
    );
    const values = await mixed.x.data();
    assert.ok(values.every((v) => v >= 0 && v <= 255));
    tf.dispose([mixed.x, mixed.y]);
  });
});

describe('tiers naming a custom model', () => {
  const tier = (extra: object) => ({
    version: 1,
    tiers: { t: { variants: ['b0'], compute: { target: 'lambda-cpu', memoryMb: 2048 }, engine: 'ort', batchSize: 4, ...extra } },
    routing: { default: { tier: 't' } },
  });
  it('tag with the model (one variant, its base); the weights to have are the model’s', () => {
    const parsed = parseTiers(tier({ model: 'weave' }));
    assert.deepEqual(parsed.models, ['weave']);
    assert.deepEqual(parsed.variants, ['b0']);
    assert.equal(modelFor(parsed.tiers.t, 'b0'), 'weave');
    assert.equal(modelFor(parseTiers(tier({})).tiers.t, 'b0'), 'b0');
    // A custom-variant base needs no weights of its own: the model carries them.
    assert.deepEqual(parseTiers(tier({ model: 'tiny', variants: ['custom-w0.25-d0.25-r32'] })).models, ['tiny']);
  });
  it('refuses two variants, a variant’s name, or a malformed name, saying why', () => {
    assert.throws(
      () => parseTiers(tier({ model: 'weave', variants: ['b0', 'b1'] })),
      /tiers\.t\.variants: a tier with model "weave" lists one variant/,
    );
    assert.throws(() => parseTiers(tier({ model: 'b3' })), /tiers\.t\.model: "b3" is a variant name/);
    assert.throws(() => parseTiers(tier({ model: 'phi-2' })), /is a variant name/);
    assert.throws(() => parseTiers(tier({ model: 'My Model' })), /model names are lowercase letters/);
  });
});

describe('effitag train', () => {
  let baseDir: string;
  let b0Run: Awaited<ReturnType<typeof train>>;
  let scratchRun: Awaited<ReturnType<typeof train>>;
  let transferRun: Awaited<ReturnType<typeof train>>;
  const transferLines: string[] = [];
  const transferOut = () => join(baseDir, 'transfer');
  const transferLabels = ['plain', 'ring', 'stripes'];
  const scratchLines: string[] = [];
  const b0Out = () => join(baseDir, 'weave');
  const tinyOut = () => join(baseDir, 'tiny');
  const scratchOptions = (data: string) => ({
    source: folderSource(data),
    name: 'tiny',
    base: 'custom-w0.25-d0.25-r32',
    out: tinyOut(),
    epochs: 10,
    stages: 2,
    batchSize: 16,
    log: (l: string) => scratchLines.push(l),
  });
  let shapes: string;

  before(async () => {
    baseDir = await tempDir('effitag-models-');
    // From scratch: a tiny network on shapes and textures in random colours.
    shapes = await tempDir('effitag-shapes-');
    await writePatternDataset(shapes, { patterns: ['checks', 'disc', 'plain', 'stripes'], perLabel: 40, size: 48, seed: 2 });
    scratchRun = await train(scratchOptions(shapes));
    // Head only on the features of the network just trained, new labels, early stopping (no
    // --head-epochs): the model the label tests below name images with.
    const fresh = await tempDir('effitag-new-labels-');
    await writePatternDataset(fresh, { patterns: transferLabels, perLabel: 30, size: 48, seed: 8 });
    transferRun = await train({
      source: folderSource(fresh),
      name: 'transfer',
      base: 'custom-w0.25-d0.25-r32',
      weights: tinyOut(),
      out: transferOut(),
      epochs: 0,
      stages: 1,
      headLearningRate: 3e-3,
      log: (l) => transferLines.push(l),
    });
    // A B0 (random weights with measured BatchNorm statistics: no pretrained ones can be had here) and three textures.
    const textures = await tempDir('effitag-textures-');
    // Textures a random (calibrated) B0's features tell apart: no edges, fine grain, stripes (checks,
    // dots and stripes score at chance on them).
    await writePatternDataset(textures, { patterns: ['grain', 'plain', 'stripes'], perLabel: 16, size: 96, seed: 5 });
    await calibratedArtifact(join(baseDir, 'b0'), 'b0');
    b0Run = await train({
      source: folderSource(textures),
      name: 'weave',
      base: 'b0',
      weights: join(baseDir, 'b0'),
      out: b0Out(),
      epochs: 1,
      stages: 2,
      headPasses: 2,
      log: quiet,
    });
  });

  it('from scratch with progressive learning learns (well above chance); a checkpoint per stage; --resume continues after the last', async () => {
    const { report, manifest } = scratchRun;
    assert.deepEqual(
      report.stages.map((s) => [s.phase, s.size]),
      [
        ['scratch', 32],
        ['scratch', 32],
      ],
      'a 32-px variant cannot shrink below the 32-px floor',
    );
    // Twice chance after 20 epochs of 128 images at 32 px (seeded: the same run every time); the
    // benchmark shows the ≥ 90 % run at 64 px, which takes minutes.
    assert.ok(report.final.accuracy >= 0.5, `held-out accuracy ${report.final.accuracy} (chance 0.25)`);
    process.stdout.write(`from scratch: ${(report.final.accuracy * 100).toFixed(1)} % held-out\n`);
    assert.ok(report.epochs[0].loss > report.epochs.at(-1)!.loss, 'the loss falls');
    assert.equal(manifest.custom!.base.sha256, undefined);
    assert.equal(manifest.custom!.base.variant, 'custom-w0.25-d0.25-r32');
    assert.deepEqual(JSON.parse(await readFile(join(tinyOut(), 'checkpoints', 'state.json'), 'utf8')).done, ['stage-1', 'stage-2']);
    scratchLines.length = 0;
    const resumed = await train({ ...scratchOptions(shapes), resume: true });
    assert.ok(
      scratchLines.some((l) => l.startsWith('resuming after stage-2')),
      scratchLines.join('\n'),
    );
    assert.ok(!scratchLines.some((l) => /^scratch stage/.test(l)), 'no stage trained again');
    assert.equal(resumed.manifest.sha256, manifest.sha256, 'the same weights');
  });

  it('B0: head (until converged), then fine-tuning in two progressive stages; a plain B0 artifact with three classes, scored by the exported ONNX graph and above chance by a scorer of our own', async () => {
    const { report, manifest } = b0Run;
    assert.equal(report.images.val, 9);
    assert.equal(
      report.final.perClass.reduce((s, c) => s + c.support, 0),
      9,
    );
    assert.deepEqual(
      report.stages.map((s) => [s.phase, s.size]),
      [
        ['head', 224],
        ['fine-tune', 96],
        ['fine-tune', 224],
      ],
    );
    const head = report.epochs.filter((e) => e.phase === 'head');
    assert.ok(head[0].loss > head.at(-1)!.loss, 'the head’s loss falls');
    assert.equal(manifest.variant, 'b0');
    assert.equal(manifest.classes, 3);
    assert.deepEqual(manifest.custom!.labels, ['grain', 'plain', 'stripes']);
    assert.equal(manifest.custom!.base.sha256, (await loadArtifact(join(baseDir, 'b0'))).manifest.sha256);
    assert.equal(manifest.custom!.metrics.valAccuracy, report.final.accuracy);
    assert.ok(existsSync(b0Run.onnx));
    const html = await readFile(join(b0Out(), 'report.html'), 'utf8');
    assert.match(html, /<svg role="img"/);
    assert.match(html, /Confusion matrix/);
    // Fine-tuning changed block7a and the top, nothing below the cut, and no BatchNorm statistics.
    const base = (await loadArtifact(join(baseDir, 'b0'))).weights;
    const trained = (await loadArtifact(b0Out())).weights;
    assert.deepEqual(trained.get('stem_conv/kernel:0'), base.get('stem_conv/kernel:0'));
    assert.deepEqual(trained.get('block6d_project_conv/kernel:0'), base.get('block6d_project_conv/kernel:0'));
    assert.notDeepEqual(trained.get('block7a_project_conv/kernel:0'), base.get('block7a_project_conv/kernel:0'));
    assert.notDeepEqual(trained.get('top_conv/kernel:0'), base.get('top_conv/kernel:0'));
    assert.deepEqual(trained.get('top_bn/moving_mean:0'), base.get('top_bn/moving_mean:0'));
    assert.deepEqual(trained.get('block7a_bn/moving_variance:0'), base.get('block7a_bn/moving_variance:0'));
    assert.equal(trained.get('predictions/kernel:0')!.length, 1280 * 3);
    // Scored by ourselves on new images, named by the artifact's own labels: above chance. A random
    // B0 (no pretrained weights here) separates these textures only roughly: 46 to 63 % over runs
    // (the features vary in their last bits from run to run), so the naming itself is checked on the
    // stronger head-only model below.
    // 48 images: at the 46–63 % seen, fewer than 40 % right is a 2 % event (24 images made it 6 %).
    const independent = await scoreArtifact(b0Out(), await freshImages(['grain', 'plain', 'stripes'], 16, 96, 77), false);
    process.stdout.write(`B0 fine-tuned, scored independently: ${(independent * 100).toFixed(1)} % on 48 new images\n`);
    assert.ok(independent >= 0.4, `independent accuracy ${independent} (chance 0.33)`);
  });

  it('head only on the features of a network trained here: runs until the held-out loss stops improving, says it converged, separates new labels', async () => {
    const { report } = transferRun;
    const [head] = report.stages;
    assert.equal(head.phase, 'head');
    assert.equal(head.stop, 'converged');
    const points = report.epochs.filter((e) => e.phase === 'head');
    assert.equal(points.length, head.epochs);
    assert.ok(head.epochs < 200, `stopped early: ${head.epochs} epochs`);
    // Patience 10: the best epoch (the last to lower the held-out loss by 0.1 %) is followed by 10 that
    // did not, and its head is the one kept.
    let [best, kept] = [Number.POSITIVE_INFINITY, -1];
    for (const [i, p] of points.entries()) if (p.valLoss! < best * 0.999) [best, kept] = [p.valLoss!, i];
    assert.equal(kept, points.length - 11, 'stopped 10 epochs after the best');
    assert.equal(head.valAccuracy, points[kept].valAccuracy, 'the best epoch’s head kept');
    assert.equal(report.converged, true);
    assert.equal(report.convergence, 'converged');
    assert.match(transferLines.at(-1)!, /^transfer: held-out accuracy [\d.]+ % \(ONNX export, \d+ images\); converged; report /);
    assert.ok(report.final.accuracy >= 0.6, `held-out accuracy ${report.final.accuracy} (chance 0.33)`);
    const independent = await scoreArtifact(transferOut(), await freshImages(transferLabels, 10, 48, 123));
    process.stdout.write(
      `head only: ${(report.final.accuracy * 100).toFixed(1)} % held-out after ${head.epochs} epochs; ${(independent * 100).toFixed(1)} % on 30 new images\n`,
    );
    assert.ok(independent >= 0.45, `independent accuracy ${independent} (chance 0.33)`);
  });

  it('predict names images of known classes with their own label first; model list knows the custom model by its labels', async () => {
    const dir = await tempDir('effitag-img-');
    const images = await freshImages(transferLabels, 8, 48, 99);
    const files = await Promise.all(
      images.map(async (im, i) => {
        const file = join(dir, `${i}-${im.label}.png`);
        await writeFile(file, im.png);
        return file;
      }),
    );
    const model = await ortEngine({ log: quiet }).load(transferOut());
    assert.equal(model.manifest.custom?.name, 'transfer');
    await model.dispose();
    const run = (...args: string[]) =>
      new Promise<string>((resolve, reject) =>
        execFile(process.execPath, ['bin/effitag.js', ...args], (err, stdout, stderr) =>
          err ? reject(new Error(stderr)) : resolve(stdout),
        ),
      );
    const predicted: { top: { label: string }[] }[] = JSON.parse(
      await run('predict', ...files, '--weights', transferOut(), '--top-k', '3', '--json'),
    );
    assert.equal(predicted.length, images.length);
    for (const p of predicted) assert.deepEqual(p.top.map((t) => t.label).sort(), transferLabels);
    assertOwnNaming(
      transferLabels,
      images.map((i) => i.label),
      predicted.map((p) => p.top[0].label),
    );
    const listed = JSON.parse(await run('model', 'list', '--weights', baseDir, '--json'));
    const weave = listed.custom.find((m: { name: string }) => m.name === 'weave');
    assert.deepEqual(weave.labels, ['grain', 'plain', 'stripes']);
    assert.equal(weave.base, 'b0');
    assert.match(weave.marker, /^weave@[0-9a-f]{12}$/);
    assert.ok(listed.custom.some((m: { name: string }) => m.name === 'tiny'));
  });

  it('publishes to S3 under weights/NAME/, and a deployed worker syncs and loads it by name', async () => {
    await withLocalS3('models', async (s3, dir) => {
      const { keys } = await publishWeights(s3, b0Out(), 's3://models/weights/');
      assert.ok(keys.includes('weights/weave/manifest.json'), keys.join(', '));
      const synced = await syncWeights(s3, 's3://models/weights/', ['weave'], join(dir, 'local'));
      assert.deepEqual(
        synced.map((m) => m.custom?.name),
        ['weave'],
      );
      const local = directoryCatalog(b0Out());
      assert.equal(directoryCatalog(join(dir, 'local')).marker('weave'), local.marker('weave'));
      assert.equal((await markersFromS3(s3, 's3://models/weights/', ['weave'])).marker('weave'), local.marker('weave'));
      // A model that was never published is an error, not an empty catalog.
      await assert.rejects(syncWeights(s3, 's3://models/weights/', ['b0'], join(dir, 'other')));
    });
  });

  it('a tier with model: NAME writes the custom tags onto uploads and indexes them', async () => {
    const tiers = {
      version: 1,
      tiers: {
        cloth: {
          variants: ['custom-w0.25-d0.25-r32'],
          model: 'transfer',
          compute: { target: 'lambda-cpu', memoryMb: 2048 },
          engine: 'ort',
          batchSize: 4,
          topK: 3,
          minConfidence: 0,
          writeBack: 'metadata',
        },
      },
      routing: { default: { tier: 'cloth' } },
    };
    let stack: EmbeddedStack | undefined;
    try {
      ({ stack } = await startTestStack(tiers, { weightsDir: baseDir, engine: ortEngine({ log: quiet }) }));
      // New pictures of each label, tagged with their own label first (as many images as predict is judged on).
      const images = await freshImages(transferLabels, 8, 48, 7);
      for (const [i, im] of images.entries()) await put(stack, `fabric/${i}.png`, im.png);
      const s = stack;
      const metas = await Promise.all(
        images.map((_, i) =>
          waitFor(
            'tags on the upload',
            async () => {
              const m = (await head(s, `fabric/${i}.png`)).Metadata;
              return m?.['effitag-status'] === 'tagged' ? m : undefined;
            },
            60_000,
          ),
        ),
      );
      const firsts: string[] = [];
      for (const meta of metas) {
        assert.match(meta['effitag-model'], /^transfer@[0-9a-f]{12}$/);
        const tagged = decodeTags(meta['effitag-tags']).map((t) => t.label);
        assert.deepEqual([...tagged].sort(), transferLabels);
        firsts.push(tagged[0]);
      }
      assertOwnNaming(
        transferLabels,
        images.map((i) => i.label),
        firsts,
      );
      const labels = decodeTags(metas[0]['effitag-tags']).map((t) => t.label);
      // The index holds the custom labels as tags, with no WordNet roll-up.
      const hits = await waitFor(
        'indexed',
        async () => {
          const r = await s.index.search({ bucket: s.bucket, tags: [labels[0]], limit: 50 });
          return r.hits.some((h) => h.key === 'fabric/0.png') ? r.hits : undefined;
        },
        30_000,
      );
      assert.ok(
        hits.some((h) => h.key === 'fabric/0.png'),
        hits.map((h) => h.key).join(', '),
      );
      for (const h of hits) assert.deepEqual(Object.keys(h.tags).sort(), transferLabels);
    } finally {
      await stack?.stop();
    }
  });
});

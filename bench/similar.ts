/**
 * `npm run bench -- similar`: do the embeddings the pipeline stores put like with like? Pretrained
 * weights cannot be downloaded here, so a network is trained here (`effitag train`'s core, from
 * scratch on generated shape and texture classes: test/support/shapes.ts), and measured end to end
 * through the mechanism: its artifact is a tier's `model:` on the embedded stack, new pictures of
 * each class are uploaded through S3, the worker tags them and stores their embeddings (the S3
 * Vectors stand-in), and `similar`'s core (pipeline/similar.ts) asks, for each picture, for its
 * nearest. Precision@k: the share of the k nearest that are of the picture's own class, against
 * chance (the share of the other pictures that are: (n − 1)/(N − 1) with n per class, N in all).
 *
 * The same network before training (random weights, BatchNorm statistics measured on the same kind
 * of pictures) is measured the same way, to show what the training adds over colour and layout alone.
 *
 * Then the near-duplicate threshold (`effitag dupes calibrate`'s core, pipeline/near-calibration.ts)
 * on real photographs, for the trained network, the untrained one and the embedded stack's random
 * B0: the photographs and quadrants bench/hashes.ts uses, with the same edited copies, embedded as
 * the worker embeds; the threshold chosen on all of them (in-sample precision is 1.000 by the rule),
 * and, to see whether it holds on images it was not chosen on, chosen on half the photographs (with
 * their quadrants) and scored on the other half, both ways.
 */
import { cp, mkdir, readdir, readFile, writeFile } from 'node:fs/promises';
import sharp from 'sharp';
import { seededRandom } from '../model/random-weights.ts';
import { join } from 'node:path';
import { PutObjectCommand } from '@aws-sdk/client-s3';
import { ortEngine, WORKER_ORT_OPTIONS } from '../inference/ort-engine.ts';
import { startEmbeddedStack } from '../local/stack.ts';
import { silentLogger } from '../pipeline/log.ts';
import { similarToObject } from '../pipeline/similar.ts';
import { parseTiers } from '../tiers/schema.ts';
import { loadArtifact, planFor, writeArtifact } from '../model/weights.ts';
import { calibratedArtifact, writePatternDataset } from '../test/support/shapes.ts';
import { folderSource } from '../training/dataset.ts';
import { train } from '../training/train.ts';
import { PHOTOS, SKIMAGE_DATA, nearDuplicateSet } from './hashes.ts';
import type { BenchContext } from './util.ts';
import { planModel } from '../model/plan.ts';
import { randomWeights } from '../model/random-weights.ts';
import { readManifest } from '../model/weights.ts';
import { chooseThreshold, embedSamples, type Embedded, pairSets, scoreAt } from '../pipeline/near-calibration.ts';

export interface SimilarBenchOptions {
  variant: string;
  patterns: string[];
  /** Training pictures per class. */
  perLabel: number;
  /** Epochs per progressive stage (a fixed schedule, so the run's length is known). */
  epochs: number;
  stages: number;
  /** New pictures per class, uploaded and queried. */
  queriesPerLabel: number;
  ks: number[];
  /** Epochs per stage for the network trained on photographs; undefined: the trainer's defaults (early stopping: 43 min here). */
  photoEpochs?: number;
}

interface Measured {
  model: string;
  precisionAt: Record<string, number>;
  chance: number;
  images: number;
  meanSameClassScore: number;
  meanOtherClassScore: number;
}

export async function benchSimilar(ctx: BenchContext, options: SimilarBenchOptions) {
  const train_ = join(ctx.workDir, 'similar-train');
  await writePatternDataset(train_, { patterns: options.patterns, perLabel: options.perLabel, size: 80, seed: 1 });
  // New pictures (another seed): never seen in training.
  const held = join(ctx.workDir, 'similar-new');
  await writePatternDataset(held, { patterns: options.patterns, perLabel: options.queriesPerLabel, size: 80, seed: 99 });

  const weights = join(ctx.workDir, 'similar-weights');
  const started = performance.now();
  const { report } = await train({
    source: folderSource(train_),
    name: 'shapes',
    base: options.variant,
    out: join(weights, 'shapes'),
    epochs: options.epochs,
    stages: options.stages,
    log: (l) => ctx.log(`  train: ${l}`),
  });
  const trainSeconds = Math.round((performance.now() - started) / 1000);
  // Training is the long part (6-17 min here): EFFITAG_BENCH_KEEP_WEIGHTS=DIR keeps the artifact for later looks.
  const keep = process.env.EFFITAG_BENCH_KEEP_WEIGHTS;
  if (keep) await cp(join(weights, 'shapes'), join(keep, 'shapes'), { recursive: true });
  ctx.log(
    `trained ${options.variant} on ${options.patterns.length} classes: ${(100 * report.final.accuracy).toFixed(1)} % held out in ${trainSeconds} s`,
  );

  // The untrained baseline: the same architecture, random weights with measured BatchNorm, as a custom model
  // of the same name elsewhere (so the tier and the queries are the same).
  const untrainedDir = join(ctx.workDir, 'similar-untrained');
  await calibratedArtifact(join(untrainedDir, 'base'), options.variant);
  const trained = await loadArtifact(join(weights, 'shapes'));
  const base = await loadArtifact(join(untrainedDir, 'base'));
  // Its backbone, under the trained artifact's head and name: only the features differ.
  const mixed = new Map(trained.weights);
  for (const [name, w] of base.weights) if (mixed.has(name) && !/^predictions\//.test(name)) mixed.set(name, w);
  await writeArtifact(
    join(untrainedDir, 'shapes'),
    planFor(trained.manifest),
    mixed,
    { kind: 'random', note: 'untrained backbone' },
    trained.manifest.custom,
  );

  const trainedResult = await measure(ctx, weights, 'trained', held, options);
  const untrainedResult = await measure(ctx, untrainedDir, 'untrained', held, options);
  // The embedded stack's B0 as the tests make it (test/support/fixtures.ts randomArtifact: seed 7).
  const b0Dir = join(ctx.workDir, 'similar-random-b0', 'b0');
  const b0Plan = planModel('b0');
  await writeArtifact(b0Dir, b0Plan, randomWeights(b0Plan, 7), { kind: 'random', note: "the embedded stack's test B0" });
  const nearCalibration = [];
  for (const [label, dir] of [
    ['trained', join(weights, 'shapes')],
    ['untrained', join(untrainedDir, 'shapes')],
    ['random B0', b0Dir],
  ] as const)
    nearCalibration.push(await calibrationOnPhotographs(ctx, label, dir));
  // A network trained on photographs (half of them), calibrated on the other half (never seen) and on
  // its own half: what a user's calibration meets on photographs like, or unlike, the training's.
  const photoNet = await trainOnPhotographRegions(ctx, options, { epochs: options.photoEpochs });
  nearCalibration.push(
    {
      ...(await calibrationOnPhotographs(ctx, 'trained on photograph regions: photographs it never saw', photoNet.dir, photoNet.heldOut)),
      training: photoNet.training,
    },
    await calibrationOnPhotographs(
      ctx,
      'trained on photograph regions: its training photographs',
      photoNet.dir,
      photoNet.training.photographs,
    ),
  );
  return {
    options,
    training: { accuracy: report.final.accuracy, seconds: trainSeconds, convergence: report.convergence },
    trained: trainedResult,
    untrained: untrainedResult,
    nearCalibration,
    summary: {
      ...Object.fromEntries(
        [trainedResult, untrainedResult].map((m) => [
          m.model,
          `${options.ks.map((k) => `P@${k} ${m.precisionAt[k].toFixed(3)}`).join(', ')} vs chance ${m.chance.toFixed(3)} (${m.images} images)`,
        ]),
      ),
      nearCalibration: Object.fromEntries(nearCalibration.map((c) => [c.model, c.summary])),
    },
  };
}

/**
 * The near-duplicate calibration of one artifact on skimage's photographs, 10 versions each: the 16
 * photographs alone (what a user would give `dupes calibrate`), and with their quadrants (80
 * distinct images, hard ones: a quadrant shares its photograph's colours, light and texture). For
 * each: the threshold chosen on all, then on each half of the photographs and scored on the other.
 */
export async function calibrationOnPhotographs(ctx: BenchContext, label: string, dir: string, photos: readonly string[] = PHOTOS) {
  const manifest = await readManifest(dir);
  const model = await ortEngine({ ...WORKER_ORT_OPTIONS, log: () => {} }).load(dir, { variant: manifest.variant });
  try {
    const samples = await nearDuplicateSet(photos, { tiles: true, dir: SKIMAGE_DATA });
    const started = performance.now();
    const { embedded, skipped } = await embedSamples(model, samples, { batchSize: 8 });
    const embedSeconds = (performance.now() - started) / 1000;
    if (skipped.length) throw new Error(`${label}: ${skipped.length} file(s) not embedded: ${skipped[0].name}: ${skipped[0].reason}`);
    const photographs = evaluateCalibration(
      embedded.filter((e) => !e.source.includes('#q')),
      photos,
    );
    const withQuadrants = evaluateCalibration(embedded, photos);
    const result = {
      model: label,
      photos: photos.length,
      variant: manifest.variant,
      resolution: model.resolution,
      embedSeconds: Math.round(embedSeconds * 10) / 10,
      photographs,
      withQuadrants,
      summary: `photographs: ${photographs.summary}; with quadrants: ${withQuadrants.summary}`,
    };
    ctx.log(`near-duplicate calibration, ${label}: ${result.summary}`);
    return result;
  } finally {
    await model.dispose();
  }
}

const round4 = (x: number) => Math.round(x * 10_000) / 10_000;

function evaluateCalibration(embedded: readonly Embedded[], photos: readonly string[]) {
  const sets = pairSets(embedded);
  const all = chooseThreshold(sets);
  // Halves by photograph (a photograph's quadrants stay with it): choose on one, score on the other.
  const photoOf = (e: Embedded) => e.source.replace(/#q\d$/, '');
  const names = photos.map((p) => p.replace(/\.\w+$/, ''));
  const half = (h: number) => embedded.filter((e) => names.indexOf(photoOf(e)) % 2 === h);
  const heldOut = [0, 1].map((h) => {
    const chosen = chooseThreshold(pairSets(half(h)));
    return {
      chosenOn: h === 0 ? 'even photographs' : 'odd photographs',
      separable: chosen.separable,
      ...(chosen.minScore !== undefined
        ? { minScore: chosen.minScore, onTheOtherHalf: scoreAt(pairSets(half(1 - h)), chosen.minScore) }
        : { reason: chosen.reason }),
    };
  });
  // The pair of distinct images that sets the bar, by name.
  let top = { score: -2, a: '', b: '' };
  for (let i = 0; i < embedded.length; i++)
    for (let j = i + 1; j < embedded.length; j++) {
      const a = embedded[i],
        b = embedded[j];
      if (a.source === b.source) continue;
      let d = 0;
      for (let k = 0; k < a.vector.length; k++) d += a.vector[k] * b.vector[k];
      if (d > top.score) top = { score: d, a: `${a.source} (${a.kind})`, b: `${b.source} (${b.kind})` };
    }
  return {
    distinct: new Set(embedded.map((e) => e.source)).size,
    images: embedded.length,
    chosen: all,
    mostAlikeDistinctPair: { ...top, score: round4(top.score) },
    recallByKind:
      all.minScore !== undefined
        ? Object.fromEntries(
            Object.entries(sets.byKind).map(([k, v]) => [k, round4(v.filter((x) => x >= all.minScore!).length / v.length)]),
          )
        : undefined,
    heldOut,
    /** Precision and recall at fixed thresholds, to see the overlap a refusal is about. */
    curve: [0.9, 0.95, 0.99, 0.999, 0.9999].map((t) => scoreAt(sets, t)),
    summary: all.separable
      ? `threshold ${all.minScore}: precision ${all.precision}, recall ${all.recall} in sample (AUC ${all.auc}); held out: ${heldOut
          .map((h) =>
            'onTheOtherHalf' in h && h.onTheOtherHalf
              ? `precision ${h.onTheOtherHalf.precision} recall ${h.onTheOtherHalf.recall} at ${h.minScore}`
              : 'refused',
          )
          .join(', ')}`
      : `refused: ${all.reason} (AUC ${all.auc})`,
  };
}

async function measure(
  ctx: BenchContext,
  weightsDir: string,
  label: string,
  held: string,
  options: SimilarBenchOptions,
): Promise<Measured> {
  const tiers = parseTiers({
    version: 1,
    tiers: {
      shapes: {
        variants: [options.variant],
        model: 'shapes',
        compute: { target: 'lambda-cpu', memoryMb: 2048 },
        engine: 'ort',
        batchSize: 8,
        topK: 3,
        minConfidence: 0,
      },
    },
    routing: { default: { tier: 'shapes' } },
  });
  const stack = await startEmbeddedStack({
    dataDir: join(ctx.workDir, `similar-stack-${label}`),
    tiers,
    weightsDir,
    engine: ortEngine({ ...WORKER_ORT_OPTIONS, log: () => {} }),
    log: silentLogger,
    s3Port: 0,
    sqsPort: 0,
  });
  try {
    const classOf = new Map<string, string>();
    for (const cls of (await readdir(held)).sort())
      for (const file of (await readdir(join(held, cls))).sort()) {
        const key = `new/${cls}/${file}`;
        classOf.set(key, cls);
        await stack.s3.send(
          new PutObjectCommand({ Bucket: stack.bucket, Key: key, Body: await readFile(join(held, cls, file)), ContentType: 'image/png' }),
        );
      }
    const space = stack.models.marker('shapes');
    // Wait for every embedding: the worker stores it with the tags.
    const deadline = Date.now() + 30 * 60_000;
    for (const key of classOf.keys())
      while (!(await stack.s3vectors.vectors.get(space, { bucket: stack.bucket, key }))) {
        if (Date.now() > deadline) throw new Error(`no embedding for ${key} after 30 minutes`);
        await new Promise((r) => setTimeout(r, 200));
      }
    const hitsAt: Record<string, number> = Object.fromEntries(options.ks.map((k) => [k, 0]));
    let same = 0,
      sameN = 0,
      other = 0,
      otherN = 0;
    for (const [key, cls] of classOf) {
      const { hits } = await similarToObject(
        { index: stack.index, vectors: stack.s3vectors.vectors },
        { bucket: stack.bucket, key },
        { limit: Math.min(99, classOf.size - 1) },
      );
      for (const k of options.ks) hitsAt[k] += hits.slice(0, k).filter((h) => classOf.get(h.key) === cls).length / k;
      for (const h of hits)
        if (classOf.get(h.key) === cls) {
          same += h.score;
          sameN++;
        } else {
          other += h.score;
          otherN++;
        }
    }
    const n = classOf.size;
    const perClass = n / options.patterns.length;
    const result: Measured = {
      model: label,
      precisionAt: Object.fromEntries(options.ks.map((k) => [k, hitsAt[k] / n])),
      chance: (perClass - 1) / (n - 1),
      images: n,
      meanSameClassScore: same / Math.max(1, sameN),
      meanOtherClassScore: other / Math.max(1, otherN),
    };
    ctx.log(
      `${label}: ${options.ks.map((k) => `precision@${k} ${result.precisionAt[k].toFixed(3)}`).join(', ')}; chance ${result.chance.toFixed(3)}; mean cosine same class ${result.meanSameClassScore.toFixed(3)}, other ${result.meanOtherClassScore.toFixed(3)}`,
    );
    return result;
  } finally {
    await stack.stop();
  }
}

/**
 * A network trained on photographs, cheaply: instance discrimination (the idea behind copy-detection
 * descriptors such as SSCD, in its plainest supervised form). Each class is one region of one of
 * the even-numbered photographs (8 regions each, 64 classes), its pictures that region again with
 * random edits (shifted and rescaled up to 10 %, brighter or darker, recompressed, shrunk); the odd
 * photographs are kept out, for the calibration to be measured on pictures the network never saw.
 */
export async function trainOnPhotographRegions(
  ctx: BenchContext,
  options: SimilarBenchOptions,
  /** Epochs per stage; `epochs` undefined: the trainer's defaults (early stopping). */
  schedule: { epochs?: number },
) {
  const train_ = join(ctx.workDir, 'photo-regions');
  const rand = seededRandom(11);
  const trainPhotos = PHOTOS.filter((_, i) => i % 2 === 0);
  const heldOut = PHOTOS.filter((_, i) => i % 2 === 1);
  const perClass = 12;
  for (const photo of trainPhotos) {
    const { data, info } = await sharp(join(SKIMAGE_DATA, photo))
      .toColourspace('srgb')
      .removeAlpha()
      .raw()
      .toBuffer({ resolveWithObject: true });
    const raw = () => sharp(data, { raw: { width: info.width, height: info.height, channels: 3 } });
    for (let r = 0; r < 8; r++) {
      const side = Math.round(Math.min(info.width, info.height) * (0.35 + 0.2 * rand()));
      const x = Math.floor(rand() * (info.width - side)),
        y = Math.floor(rand() * (info.height - side));
      const cls = join(train_, `${photo.replace(/\.\w+$/, '')}-${r}`);
      await mkdir(cls, { recursive: true });
      for (let i = 0; i < perClass; i++) {
        const s2 = Math.round(side * (0.9 + 0.2 * rand()));
        const jx = Math.min(Math.max(0, x + Math.round((rand() - 0.5) * 0.2 * side)), info.width - s2);
        const jy = Math.min(Math.max(0, y + Math.round((rand() - 0.5) * 0.2 * side)), info.height - s2);
        const out = Math.round(64 + rand() * 96);
        const bytes = await raw()
          .extract({ left: jx, top: jy, width: Math.min(s2, info.width - jx), height: Math.min(s2, info.height - jy) })
          .resize(out, out)
          .modulate({ brightness: 0.8 + 0.45 * rand() })
          .jpeg({ quality: Math.round(30 + 60 * rand()) })
          .toBuffer();
        await writeFile(join(cls, `${i}.jpg`), bytes);
      }
    }
  }
  const out = join(ctx.workDir, 'photo-weights', 'photos');
  const started = performance.now();
  const { report } = await train({
    source: folderSource(train_),
    name: 'photos',
    base: options.variant,
    out,
    // 64 classes from 768 pictures learn slower than 4 shapes: 6 epochs per stage reached 34.4 % held
    // out, the defaults (early stopping) 78.9 % (bench/reference/similar.json, photographNetwork).
    ...(schedule.epochs === undefined ? {} : { epochs: schedule.epochs }),
    stages: options.stages,
    log: (l) => ctx.log(`  train (photographs): ${l}`),
  });
  const seconds = Math.round((performance.now() - started) / 1000);
  ctx.log(
    `trained ${options.variant} on ${trainPhotos.length * 8} regions of ${trainPhotos.length} photographs: ${(100 * report.final.accuracy).toFixed(1)} % held out in ${seconds} s`,
  );
  const keep = process.env.EFFITAG_BENCH_KEEP_WEIGHTS;
  if (keep) await cp(out, join(keep, 'photos'), { recursive: true });
  return {
    dir: out,
    heldOut,
    training: { photographs: trainPhotos, classes: trainPhotos.length * 8, perClass, accuracy: report.final.accuracy, seconds },
  };
}

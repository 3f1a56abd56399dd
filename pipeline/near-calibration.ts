/**
 * A measured near-duplicate threshold for one embedding space (`effitag dupes calibrate`).
 *
 * What cosine makes two images "the same picture" depends on the weights: the embedded stack's
 * random-weight B0 puts every photograph within cosine 0.9995 of every other, a trained network
 * spreads them. One fixed cosine for every model is what gives Immich its false "duplicates"
 * (immich issue 31487). So the threshold is measured per space (`b0@<weights hash>`) on the user's
 * own weights and images:
 *
 * 1. each distinct image gets the edited copies `bench/hashes.ts` measures the hash tier with
 *    (resized ½ and ¼, JPEG q30, cropped up to 10 %, brightened, watermarked, all at once);
 * 2. every file is decoded and inferred exactly as the worker does (`decodeImage` at the model's
 *    resolution with the tier's limits, `classifyWithFeatures` in batches, scaled to unit length);
 * 3. every pair is scored: copies of one image ("copy pairs") against pairs of distinct images;
 * 4. the threshold is the midpoint between the highest distinct-pair cosine and the lowest copy-pair
 *    cosine above it (THRESHOLD_RULE): precision 1.000 on the sample, the highest recall that
 *    allows, and the widest margin on both sides among thresholds that do both.
 *
 * Weights that cannot tell copies from distinct images get no threshold: no copy pair above every
 * distinct pair, too few copies above them (MIN_RECALL), or a gap too thin to hold (MIN_GAP). The
 * record says so, and `dupes` then looks for no near groups in that space unless told a score.
 *
 * The record is a small JSON file beside the weights it measures (CalibrationStore): where every
 * stack that tags with those weights (local folder or published S3 location) finds it, named by
 * the weights hash, so new weights never inherit an old threshold. See docs/search.md.
 */
import { createHash } from 'node:crypto';
import { mkdir, readFile, rename, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import sharp, { type OverlayOptions } from 'sharp';
import { z } from 'zod';
import type { LoadedModel } from '../inference/engine.ts';
import { type DecodedImage, type DecodeLimits, decodeImage, ImageError } from '../inference/image.ts';
import { hammingDistance, perceptualHash } from '../inference/perceptual-hash.ts';
import { modelOfSpace, unitVector } from './index-writes.ts';

// ---------------------------------------------------------------------------------------------
// Copies: the edits the hash tier is measured with (bench/hashes.ts uses these very functions).

export const COPY_KINDS = [
  'original',
  'resized-50',
  'resized-25',
  'jpeg-q30',
  'crop-5-each-edge',
  'crop-10-left',
  'crop-10-top',
  'brightened',
  'watermarked',
  'resized-recompressed-watermarked',
] as const;
export type CopyKind = (typeof COPY_KINDS)[number];

export interface Sample {
  /** The distinct image it is a copy of. */
  source: string;
  kind: CopyKind;
  bytes: Buffer;
}

/** A semi-transparent text watermark about a third of the image wide, in the lower right corner. */
function watermark(width: number, height: number): OverlayOptions {
  const w = Math.max(40, Math.round(width / 3));
  const h = Math.max(12, Math.round(w / 5));
  const svg = `<svg xmlns="http://www.w3.org/2000/svg" width="${w}" height="${h}"><text x="2" y="${Math.round(h * 0.8)}" font-family="sans-serif" font-size="${Math.round(h * 0.75)}" fill="white" fill-opacity="0.7" stroke="black" stroke-opacity="0.5">© EffiTag 2026</text></svg>`;
  return { input: Buffer.from(svg), left: Math.max(0, width - w - 4), top: Math.max(0, height - h - 4) };
}

/** The copies of one distinct image (given as raw RGB), the original first. */
export async function copiesOf(source: string, raw: Buffer, width: number, height: number): Promise<Sample[]> {
  const img = () => sharp(raw, { raw: { width, height, channels: 3 } });
  const crop = (l: number, t: number, r: number, b: number) => {
    const left = Math.round(width * l),
      top = Math.round(height * t);
    return img()
      .extract({ left, top, width: width - left - Math.round(width * r), height: height - top - Math.round(height * b) })
      .png()
      .toBuffer();
  };
  const half = { width: Math.max(1, Math.round(width / 2)), height: Math.max(1, Math.round(height / 2)) };
  const make: Record<CopyKind, () => Promise<Buffer>> = {
    original: () => img().png().toBuffer(),
    'resized-50': () => img().resize(half.width, half.height).jpeg({ quality: 90 }).toBuffer(),
    'resized-25': () =>
      img()
        .resize(Math.max(16, Math.round(width / 4)), Math.max(16, Math.round(height / 4)))
        .png()
        .toBuffer(),
    'jpeg-q30': () => img().jpeg({ quality: 30 }).toBuffer(),
    'crop-5-each-edge': () => crop(0.05, 0.05, 0.05, 0.05),
    'crop-10-left': () => crop(0.1, 0, 0, 0),
    'crop-10-top': () => crop(0, 0.1, 0, 0),
    brightened: () => img().modulate({ brightness: 1.25 }).jpeg({ quality: 90 }).toBuffer(),
    watermarked: () =>
      img()
        .composite([watermark(width, height)])
        .jpeg({ quality: 90 })
        .toBuffer(),
    'resized-recompressed-watermarked': async () => {
      const small = await img().resize(half.width, half.height).raw().toBuffer();
      return sharp(small, { raw: { ...half, channels: 3 } })
        .composite([watermark(half.width, half.height)])
        .jpeg({ quality: 50 })
        .toBuffer();
    },
  };
  return Promise.all(COPY_KINDS.map(async (kind) => ({ source, kind, bytes: await make[kind]() })));
}

/** An image file's pixels as raw sRGB (EXIF-oriented, no alpha), for `copiesOf`. */
export async function rawRgb(bytes: Uint8Array): Promise<{ data: Buffer; width: number; height: number }> {
  const { data, info } = await sharp(bytes).rotate().toColourspace('srgb').removeAlpha().raw().toBuffer({ resolveWithObject: true });
  return { data, width: info.width, height: info.height };
}

// ---------------------------------------------------------------------------------------------
// Embedding, as the worker embeds.

export interface Embedded {
  source: string;
  kind: CopyKind;
  vector: Float32Array;
  /** The perceptual hash of the same decoded pixels (to spot "distinct" images that are copies). */
  hash: string;
}

export interface Skipped {
  name: string;
  reason: string;
}

/**
 * Each sample decoded as the worker decodes it (the model's resolution, the tier's limits) and run
 * through the model in batches (the worker's `classifyWithFeatures`), features scaled to unit length.
 * A file that cannot be decoded or has no direction (all-zero features) is skipped, with its reason.
 */
export async function embedSamples(
  model: LoadedModel,
  samples: readonly Sample[],
  o: { limits?: DecodeLimits; batchSize?: number; progress?: (done: number, total: number) => void } = {},
): Promise<{ embedded: Embedded[]; skipped: Skipped[] }> {
  if (!model.classifyWithFeatures)
    throw new CalibrationError(`the ${model.description} engine returns no pooled features: nothing to calibrate`);
  const embedded: Embedded[] = [];
  const skipped: Skipped[] = [];
  const batchSize = o.batchSize ?? 8;
  for (let start = 0; start < samples.length; start += batchSize) {
    const batch: { sample: Sample; image: DecodedImage }[] = [];
    for (const sample of samples.slice(start, start + batchSize)) {
      try {
        batch.push({ sample, image: await decodeImage(sample.bytes, model.resolution, o.limits ?? {}) });
      } catch (err) {
        if (!(err instanceof ImageError)) throw err;
        skipped.push({ name: `${sample.source} (${sample.kind})`, reason: err.message });
      }
    }
    if (!batch.length) continue;
    const outs = await model.classifyWithFeatures(batch.map((b) => b.image));
    outs.forEach((out, i) => {
      const { sample, image } = batch[i];
      const vector = unitVector(out.features);
      if (vector) embedded.push({ source: sample.source, kind: sample.kind, vector, hash: perceptualHash(image) });
      else skipped.push({ name: `${sample.source} (${sample.kind})`, reason: 'all-zero features: no direction to compare' });
    });
    o.progress?.(Math.min(start + batchSize, samples.length), samples.length);
  }
  return { embedded, skipped };
}

// ---------------------------------------------------------------------------------------------
// Scores and the threshold.

/** Below this share of copy pairs found at precision 1.000, a threshold would find too few copies to be a default. */
export const MIN_RECALL = 0.5;
/** Cosines closer than this cannot hold a threshold: float32 sums, f16 graphs and another batch move scores by ~1e-5. */
export const MIN_GAP = 0.001;
/** Distinct images a calibration needs: fewer give too few distinct pairs to say where they end. */
export const MIN_DISTINCT = 8;

export const THRESHOLD_RULE =
  'precision 1.000 on the sample (no pair of distinct images at or above it) with the highest recall of copy pairs that allows: the midpoint between the highest distinct-pair cosine and the lowest copy-pair cosine above it';

const dot = (a: Float32Array, b: Float32Array) => {
  let s = 0;
  for (let i = 0; i < a.length; i++) s += a[i] * b[i];
  return s;
};

export interface PairSets {
  /** Cosines of pairs of copies of one image (original–copy and copy–copy). */
  copies: number[];
  /** Cosines of pairs of different images. */
  distinct: number[];
  /** Per copy kind: the cosine of each copy with its own original. */
  byKind: Partial<Record<CopyKind, number[]>>;
}

/** Every pair's cosine, split into copy pairs and distinct pairs. */
export function pairSets(embedded: readonly Pick<Embedded, 'source' | 'kind' | 'vector'>[]): PairSets {
  const out: PairSets = { copies: [], distinct: [], byKind: {} };
  for (let i = 0; i < embedded.length; i++)
    for (let j = i + 1; j < embedded.length; j++) {
      const a = embedded[i],
        b = embedded[j];
      const s = dot(a.vector, b.vector);
      if (a.source !== b.source) {
        out.distinct.push(s);
        continue;
      }
      out.copies.push(s);
      const copy = a.kind === 'original' ? b : b.kind === 'original' ? a : undefined;
      if (copy) (out.byKind[copy.kind] ??= []).push(s);
    }
  return out;
}

export interface ThresholdChoice {
  separable: boolean;
  /** The threshold (4 decimals), only when separable. */
  minScore?: number;
  /** Why not, when not separable. */
  reason?: string;
  highestDistinct: number;
  /** The lowest copy-pair cosine above every distinct pair (undefined: none is). */
  lowestCopyAbove?: number;
  lowestCopy: number;
  /** At the threshold (or, when not separable, just above the highest distinct pair). */
  precision: number;
  recall: number;
  copyPairs: number;
  distinctPairs: number;
  /** Share of (copy, distinct) pair pairs ranked right: 1 = every copy pair above every distinct pair, 0.5 = chance. */
  auc: number;
}

/** P(copy pair's cosine > distinct pair's), ties counting half: a rank statistic, free of the scores' scale. */
export function rankAuc(copies: readonly number[], distinct: readonly number[]): number {
  const d = [...distinct].sort((a, b) => a - b);
  const below = (x: number) => {
    let lo = 0,
      hi = d.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (d[mid] < x) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  };
  const atOrBelow = (x: number) => {
    let lo = 0,
      hi = d.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (d[mid] <= x) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  };
  let sum = 0;
  for (const c of copies) sum += (below(c) + atOrBelow(c)) / 2;
  return copies.length && d.length ? sum / (copies.length * d.length) : 0.5;
}

const round4 = (x: number) => Math.round(x * 10_000) / 10_000;

/**
 * The threshold by THRESHOLD_RULE, or none when the scores do not separate copies from distinct
 * images well enough to be a default (the reason says which test failed, with the figures).
 */
export function chooseThreshold(sets: Pick<PairSets, 'copies' | 'distinct'>): ThresholdChoice {
  const { copies, distinct } = sets;
  if (!copies.length || !distinct.length) throw new CalibrationError('calibration needs copy pairs and distinct pairs to compare');
  // Loops, not Math.max(...xs): a sample of 800 images has 320,000 pairs, past the argument limit.
  const highestDistinct = distinct.reduce((m, x) => Math.max(m, x), -Infinity);
  const above = copies.filter((c) => c > highestDistinct);
  const lowestCopyAbove = above.length ? above.reduce((m, x) => Math.min(m, x), Infinity) : undefined;
  const recall = above.length / copies.length;
  const base = {
    highestDistinct: round4(highestDistinct),
    lowestCopy: round4(copies.reduce((m, x) => Math.min(m, x), Infinity)),
    ...(lowestCopyAbove !== undefined ? { lowestCopyAbove: round4(lowestCopyAbove) } : {}),
    precision: 1,
    recall: round4(recall),
    copyPairs: copies.length,
    distinctPairs: distinct.length,
    auc: round4(rankAuc(copies, distinct)),
  };
  const fmt = (x: number) => x.toFixed(5);
  if (lowestCopyAbove === undefined)
    return {
      ...base,
      separable: false,
      recall: 0,
      reason: `no pair of copies scores above the most alike pair of distinct images (cosine ${fmt(highestDistinct)}): these weights cannot tell copies from distinct images`,
    };
  if (recall < MIN_RECALL)
    return {
      ...base,
      separable: false,
      reason: `only ${(100 * recall).toFixed(1)} % of copy pairs score above the most alike pair of distinct images (cosine ${fmt(highestDistinct)}; at least ${100 * MIN_RECALL} % needed): these weights barely tell copies from distinct images`,
    };
  if (lowestCopyAbove - highestDistinct < MIN_GAP)
    return {
      ...base,
      separable: false,
      reason: `copies and distinct images are separated by cosine ${(lowestCopyAbove - highestDistinct).toExponential(1)} only (${fmt(highestDistinct)} to ${fmt(lowestCopyAbove)}; at least ${MIN_GAP} needed): no threshold there would hold`,
    };
  // The midpoint, rounded to 4 decimals (the gap is at least 0.001, so it stays strictly between).
  const minScore = round4((highestDistinct + lowestCopyAbove) / 2);
  if (minScore <= 0)
    return {
      ...base,
      separable: false,
      reason: `copies are told apart only at cosine ${fmt(minScore)}: not a similarity a duplicate threshold can use`,
    };
  return { ...base, separable: true, minScore };
}

/** Precision and recall of "cosine ≥ minScore" over scored pairs (a threshold chosen elsewhere, checked here). */
export function scoreAt(sets: Pick<PairSets, 'copies' | 'distinct'>, minScore: number) {
  const truePositives = sets.copies.filter((c) => c >= minScore).length;
  const falsePositives = sets.distinct.filter((d) => d >= minScore).length;
  return {
    minScore,
    precision: truePositives + falsePositives ? round4(truePositives / (truePositives + falsePositives)) : 1,
    recall: sets.copies.length ? round4(truePositives / sets.copies.length) : 0,
    truePositives,
    falsePositives,
    falseNegatives: sets.copies.length - truePositives,
  };
}

// ---------------------------------------------------------------------------------------------
// The calibration run and its record.

export class CalibrationError extends Error {
  override name = 'CalibrationError';
}

export const CALIBRATION_FORMAT = 'effitag-near-calibration/1';

const score = z.number().min(-1).max(1);
export const NearCalibrationSchema = z
  .object({
    format: z.literal(CALIBRATION_FORMAT),
    /** The embedding space: `b0@1a2b3c4d5e6f`. */
    space: z.string().regex(/^.+@[0-9a-f]{12}$/),
    at: z.string(),
    separable: z.boolean(),
    minScore: z.number().gt(0).max(1).optional(),
    reason: z.string().optional(),
    rule: z.string(),
    sample: z.object({
      distinct: z.number().int().positive(),
      images: z.number().int().positive(),
      copyKinds: z.array(z.string()),
      /** SHA-256 over the distinct images' names and bytes, in order. */
      dataSha256: z.string(),
      skipped: z.number().int().min(0),
    }),
    scores: z.object({
      highestDistinct: score,
      lowestCopy: score,
      lowestCopyAbove: score.optional(),
      precision: z.number(),
      recall: z.number(),
      copyPairs: z.number().int(),
      distinctPairs: z.number().int(),
      auc: z.number(),
    }),
    /** Per copy kind, the share of copies at or above the threshold with their original. */
    recallByKind: z.record(z.string(), z.number()).optional(),
  })
  .refine((r) => (r.separable ? r.minScore !== undefined : r.minScore === undefined && r.reason !== undefined), {
    message: 'a separable calibration has a minScore, an inseparable one a reason and none',
  });
export type NearCalibration = z.infer<typeof NearCalibrationSchema>;

export interface DistinctImage {
  name: string;
  bytes: Uint8Array;
}

/**
 * Calibrate one space: copies of each distinct image, embedded as the worker embeds, scored,
 * the threshold chosen. Images that cannot be read, and a later image that is a copy of an earlier
 * one by perceptual hash (`copyDistance` bits or fewer: the rule needs distinct images), are
 * skipped and named. Throws CalibrationError when fewer than `minDistinct` remain.
 */
export async function calibrateNear(
  model: LoadedModel,
  space: string,
  images: readonly DistinctImage[],
  o: {
    limits?: DecodeLimits;
    batchSize?: number;
    /** Bits under which two "distinct" images count as copies of each other (dupes's exact default). */
    copyDistance: number;
    minDistinct?: number;
    now?: () => Date;
    log?: (line: string) => void;
  },
): Promise<{ record: NearCalibration; skipped: Skipped[] }> {
  const skipped: Skipped[] = [];
  const samples: Sample[] = [];
  const data = createHash('sha256');
  for (const image of images) {
    let raw: Awaited<ReturnType<typeof rawRgb>>;
    try {
      raw = await rawRgb(image.bytes);
    } catch (err) {
      skipped.push({ name: image.name, reason: `not a readable image: ${err instanceof Error ? err.message : String(err)}` });
      continue;
    }
    data.update(`${image.name}\n`).update(image.bytes);
    samples.push(...(await copiesOf(image.name, raw.data, raw.width, raw.height)));
  }
  o.log?.(`embedding ${samples.length} files (${samples.length / COPY_KINDS.length} images, ${COPY_KINDS.length} versions each) …`);
  const { embedded, skipped: unembedded } = await embedSamples(model, samples, o);
  // A source whose original could not be embedded is left out whole (its copies have nothing to be copies of).
  const lost = new Set(unembedded.map((s) => s.name.replace(/ \([^)]*\)$/, '')));
  skipped.push(...unembedded);
  let kept = embedded.filter((e) => !lost.has(e.source));
  // "Distinct" images that are copies of each other would read as distinct pairs at copy scores.
  const originals = kept.filter((e) => e.kind === 'original');
  const dropped = new Set<string>();
  for (let i = 0; i < originals.length; i++)
    for (let j = 0; j < i; j++) {
      if (dropped.has(originals[j].source)) continue;
      const d = hammingDistance(originals[i].hash, originals[j].hash);
      if (d <= o.copyDistance) {
        dropped.add(originals[i].source);
        skipped.push({
          name: originals[i].source,
          reason: `a copy of ${originals[j].source} (perceptual hashes ${d} bits apart): calibration needs distinct images`,
        });
        break;
      }
    }
  kept = kept.filter((e) => !dropped.has(e.source));
  const distinct = new Set(kept.map((e) => e.source)).size;
  const minDistinct = o.minDistinct ?? MIN_DISTINCT;
  if (distinct < minDistinct)
    throw new CalibrationError(
      `${distinct} distinct image(s) usable, at least ${minDistinct} needed to calibrate (photographs of different scenes, not copies of each other)${skipped.length ? `; skipped: ${skipped.map((s) => `${s.name}: ${s.reason}`).join('; ')}` : ''}`,
    );
  const sets = pairSets(kept);
  const choice = chooseThreshold(sets);
  const recallByKind = choice.minScore
    ? Object.fromEntries(
        Object.entries(sets.byKind).map(([kind, s]) => [kind, round4(s.filter((x) => x >= choice.minScore!).length / s.length)]),
      )
    : undefined;
  const record: NearCalibration = {
    format: CALIBRATION_FORMAT,
    space,
    at: (o.now?.() ?? new Date()).toISOString(),
    separable: choice.separable,
    ...(choice.minScore !== undefined ? { minScore: choice.minScore } : {}),
    ...(choice.reason ? { reason: choice.reason } : {}),
    rule: THRESHOLD_RULE,
    sample: {
      distinct,
      images: kept.length,
      copyKinds: [...COPY_KINDS],
      dataSha256: data.digest('hex'),
      skipped: skipped.length,
    },
    scores: {
      highestDistinct: choice.highestDistinct,
      lowestCopy: choice.lowestCopy,
      ...(choice.lowestCopyAbove !== undefined ? { lowestCopyAbove: choice.lowestCopyAbove } : {}),
      precision: choice.precision,
      recall: choice.recall,
      copyPairs: choice.copyPairs,
      distinctPairs: choice.distinctPairs,
      auc: choice.auc,
    },
    ...(recallByKind ? { recallByKind } : {}),
  };
  return { record: NearCalibrationSchema.parse(record), skipped };
}

// ---------------------------------------------------------------------------------------------
// Where records live: beside the weights they measure.

/** `<model>/near-calibration-<weights hash>.json` under the weights location. */
export function calibrationKey(space: string): string {
  const at = space.lastIndexOf('@');
  if (at <= 0) throw new CalibrationError(`not an embedding space (MODEL@HASH): ${space}`);
  return `${modelOfSpace(space)}/near-calibration-${space.slice(at + 1)}.json`;
}

/** Reads and writes calibration records (a weights folder here, an S3 weights location deployed). */
export interface CalibrationStore {
  /** Where records are kept (for messages). */
  readonly location: string;
  read(space: string): Promise<NearCalibration | undefined>;
  /** Returns where it was written. */
  write(record: NearCalibration): Promise<string>;
}

/** A record's text checked: a damaged or foreign file is an error naming it, never a threshold. */
export function parseCalibration(text: string, where: string, space: string): NearCalibration {
  let parsed: NearCalibration;
  try {
    parsed = NearCalibrationSchema.parse(JSON.parse(text));
  } catch (err) {
    throw new CalibrationError(
      `${where} is not a near-duplicate calibration record (${err instanceof Error ? err.message.split('\n')[0] : String(err)}): run effitag dupes calibrate again`,
    );
  }
  if (parsed.space !== space) throw new CalibrationError(`${where} is the calibration of ${parsed.space}, not of ${space}`);
  return parsed;
}

export const formatCalibration = (record: NearCalibration) => `${JSON.stringify(record, null, 2)}\n`;

/** Records in a local weights folder (the embedded stack's `--weights`). */
export function directoryCalibrations(dir: string): CalibrationStore {
  return {
    location: dir,
    async read(space) {
      const file = join(dir, calibrationKey(space));
      let text: string;
      try {
        text = await readFile(file, 'utf8');
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
        throw err;
      }
      return parseCalibration(text, file, space);
    },
    async write(record) {
      const file = join(dir, calibrationKey(record.space));
      await mkdir(join(dir, modelOfSpace(record.space)), { recursive: true });
      // A temporary name, then rename: a reader never sees half a record.
      await writeFile(`${file}.${process.pid}.tmp`, formatCalibration(record));
      await rename(`${file}.${process.pid}.tmp`, file);
      return file;
    },
  };
}

/** The near threshold `dupes` uses in one space, and where it came from. */
export type NearThreshold =
  | { space: string; source: 'given'; minScore: number }
  | { space: string; source: 'calibrated'; minScore: number; at: string; recall: number; distinct: number }
  | { space: string; source: 'inseparable'; reason: string; at: string }
  | { space: string; source: 'uncalibrated'; minScore: number };

/**
 * The threshold per space: the one given (`--min-score`) for all; else the space's calibration;
 * a space whose weights were measured unable to separate copies gets none (no near groups there);
 * an uncalibrated space gets `fallback`, marked uncalibrated.
 */
export async function nearThreshold(
  space: string,
  o: { given?: number; store?: Pick<CalibrationStore, 'read'>; fallback: number },
): Promise<NearThreshold> {
  if (o.given !== undefined) return { space, source: 'given', minScore: o.given };
  const record = o.store ? await o.store.read(space) : undefined;
  if (!record) return { space, source: 'uncalibrated', minScore: o.fallback };
  if (!record.separable || record.minScore === undefined)
    return { space, source: 'inseparable', reason: record.reason ?? 'measured inseparable', at: record.at };
  return {
    space,
    source: 'calibrated',
    minScore: record.minScore,
    at: record.at,
    recall: record.scores.recall,
    distinct: record.sample.distinct,
  };
}

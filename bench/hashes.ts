/**
 * `npm run bench -- hashes`: how well the perceptual hash finds near-duplicates (issue 23, 9a).
 *
 * Distinct images: real photographs Debian ships with scikit-image (python3-skimage:
 * astronaut, chelsea the cat, coffee, rocket, motorcycle …), and each one's four quadrants (more
 * distinct images, and hard ones: they share their photograph's colours and light). Each distinct
 * image gets near-duplicate copies: resized (½, ¼), recompressed (JPEG q30), cropped (5 % off every
 * edge, 10 % off the left, 10 % off the top), brightened (×1.25), watermarked (text in a corner),
 * and all of resize + recompress + watermark at once. Every file goes through the pipeline's own
 * decode (inference/image.ts at B0's 224 px) and is hashed from those pixels, as the worker does.
 *
 * Scored over pairs: a pair of the same distinct image is a duplicate, any other pair is not;
 * at each Hamming distance D, precision and recall of "distance ≤ D". Also per copy kind, and the
 * cost per image (hash only; and for `sharp-phash`, its own decode, since it reads the file).
 * Compared: the DCT hash (chosen), a difference hash on the same pixels, and `sharp-phash` when
 * EFFITAG_BENCH_SHARP_PHASH names an unpacked copy of it (not a dependency: `npm pack sharp-phash`).
 */
import { existsSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import sharp from 'sharp';
import { decodeImage } from '../inference/image.ts';
import { differenceHash, hammingDistance, perceptualHash } from '../inference/perceptual-hash.ts';
import { DEFAULT_MAX_DISTANCE } from '../pipeline/dupes.ts';
import { COPY_KINDS, type CopyKind, copiesOf, type Sample } from '../pipeline/near-calibration.ts';
import { median, type BenchContext } from './util.ts';

export const SKIMAGE_DATA = '/usr/lib/python3/dist-packages/skimage/data';

/** Real photographs (no drawings, no synthetic patterns; motorcycle_right left out: a stereo twin of the left). */
export const PHOTOS = [
  'astronaut.png',
  'chelsea.png',
  'coffee.png',
  'rocket.jpg',
  'motorcycle_left.png',
  'hubble_deep_field.jpg',
  'retina.jpg',
  'ihc.png',
  'camera.png',
  'moon.png',
  'coins.png',
  'brick.png',
  'grass.png',
  'gravel.png',
  'cell.png',
  'page.png',
] as const;

export { COPY_KINDS, type CopyKind, copiesOf, type Sample } from '../pipeline/near-calibration.ts';

/** Every photo and (with `tiles`) its four quadrants, each with its copies. */
export async function nearDuplicateSet(photos: readonly string[], o: { tiles: boolean; dir?: string }): Promise<Sample[]> {
  const out: Sample[] = [];
  for (const photo of photos) {
    const { data, info } = await sharp(await readFile(join(o.dir ?? SKIMAGE_DATA, photo)))
      .toColourspace('srgb')
      .removeAlpha()
      .raw()
      .toBuffer({ resolveWithObject: true });
    const name = photo.replace(/\.\w+$/, '');
    out.push(...(await copiesOf(name, data, info.width, info.height)));
    if (!o.tiles) continue;
    const tw = Math.floor(info.width / 2),
      th = Math.floor(info.height / 2);
    for (const [i, [left, top]] of [
      [0, 0],
      [tw, 0],
      [0, th],
      [tw, th],
    ].entries()) {
      const tile = await sharp(data, { raw: { width: info.width, height: info.height, channels: 3 } })
        .extract({ left, top, width: tw, height: th })
        .raw()
        .toBuffer();
      out.push(...(await copiesOf(`${name}#q${i + 1}`, tile, tw, th)));
    }
  }
  return out;
}

export interface Hasher {
  name: string;
  hash: (bytes: Buffer) => Promise<{ hash: string; hashMs: number; totalMs: number }>;
}

/** The pipeline's way: decode once at the model's resolution (B0: 224), hash those pixels. */
export function decodedHasher(name: string, fn: (img: { pixels: Uint8Array; size: number }) => string, size = 224): Hasher {
  return {
    name,
    hash: async (bytes) => {
      const t0 = performance.now();
      const image = await decodeImage(bytes, size);
      const t1 = performance.now();
      const hash = fn(image);
      const t2 = performance.now();
      return { hash, hashMs: t2 - t1, totalMs: t2 - t0 };
    },
  };
}

export const PIPELINE_HASHERS: Hasher[] = [
  decodedHasher('dct (chosen)', perceptualHash),
  decodedHasher('dhash', (img) => differenceHash({ pixels: img.pixels, width: img.size, height: img.size })),
];

/** `sharp-phash` from an unpacked copy (its own decode of the file: its cost is all hash cost). */
export function sharpPhashHasher(dir: string): Hasher {
  const phash = createRequire(join(dir, 'index.js'))(join(dir, 'index.js')) as (b: Buffer) => Promise<string>;
  return {
    name: 'sharp-phash 2.2.0',
    hash: async (bytes) => {
      const t0 = performance.now();
      const bits = await phash(bytes);
      const ms = performance.now() - t0;
      let hex = '';
      for (let i = 0; i < 64; i += 4) hex += Number.parseInt(bits.slice(i, i + 4), 2).toString(16);
      return { hash: hex, hashMs: ms, totalMs: ms };
    },
  };
}

export interface PairScore {
  maxDistance: number;
  precision: number;
  recall: number;
  truePositives: number;
  falsePositives: number;
  falseNegatives: number;
}

/** Precision and recall of "distance ≤ D" over all pairs, for D = 0 … 32. */
export function pairScores(hashes: readonly { source: string; hash: string }[], maxD = 32): PairScore[] {
  const positives = new Array<number>(65).fill(0);
  const negatives = new Array<number>(65).fill(0);
  for (let i = 0; i < hashes.length; i++)
    for (let j = i + 1; j < hashes.length; j++) {
      const d = hammingDistance(hashes[i].hash, hashes[j].hash);
      (hashes[i].source === hashes[j].source ? positives : negatives)[d]++;
    }
  const totalPositives = positives.reduce((a, b) => a + b, 0);
  const out: PairScore[] = [];
  let tp = 0,
    fp = 0;
  for (let d = 0; d <= maxD; d++) {
    tp += positives[d];
    fp += negatives[d];
    out.push({
      maxDistance: d,
      precision: tp + fp ? tp / (tp + fp) : 1,
      recall: totalPositives ? tp / totalPositives : 0,
      truePositives: tp,
      falsePositives: fp,
      falseNegatives: totalPositives - tp,
    });
  }
  return out;
}

/** Per copy kind: the share of copies within D of their original. */
export function recallByKind(hashes: readonly { source: string; kind: CopyKind; hash: string }[], d: number): Record<string, number> {
  const originals = new Map(hashes.filter((h) => h.kind === 'original').map((h) => [h.source, h.hash]));
  const out: Record<string, number> = {};
  for (const kind of COPY_KINDS) {
    if (kind === 'original') continue;
    const copies = hashes.filter((h) => h.kind === kind);
    out[kind] = copies.filter((h) => hammingDistance(h.hash, originals.get(h.source)!) <= d).length / copies.length;
  }
  return out;
}

const f1 = (s: PairScore) => (s.precision + s.recall ? (2 * s.precision * s.recall) / (s.precision + s.recall) : 0);
const round = (x: number) => Math.round(x * 10_000) / 10_000;

/** Hash every sample with one hasher and score it. */
export async function scoreHasher(samples: readonly Sample[], hasher: Hasher, defaultD = DEFAULT_MAX_DISTANCE) {
  const hashed: { source: string; kind: CopyKind; hash: string }[] = [];
  const hashMs: number[] = [];
  const totalMs: number[] = [];
  for (const s of samples) {
    const r = await hasher.hash(s.bytes);
    hashed.push({ source: s.source, kind: s.kind, hash: r.hash });
    hashMs.push(r.hashMs);
    totalMs.push(r.totalMs);
  }
  const scores = pairScores(hashed);
  const best = scores.reduce((a, b) => (f1(b) > f1(a) ? b : a));
  const atDefault = scores[defaultD];
  return {
    hasher: hasher.name,
    images: samples.length,
    distinct: new Set(samples.map((s) => s.source)).size,
    medianHashMs: round(median(hashMs)),
    medianDecodeAndHashMs: round(median(totalMs)),
    atDefault: { ...atDefault, precision: round(atDefault.precision), recall: round(atDefault.recall), f1: round(f1(atDefault)) },
    bestF1: { ...best, precision: round(best.precision), recall: round(best.recall), f1: round(f1(best)) },
    recallByKindAtDefault: Object.fromEntries(Object.entries(recallByKind(hashed, defaultD)).map(([k, v]) => [k, round(v)])),
    curve: scores.map((s) => ({ d: s.maxDistance, precision: round(s.precision), recall: round(s.recall) })),
  };
}

export async function benchHashes(ctx: BenchContext) {
  if (!existsSync(SKIMAGE_DATA))
    throw new Error(`${SKIMAGE_DATA} is missing: apt-get install python3-skimage (its photographs are the test set)`);
  ctx.log(`generating near-duplicates of ${PHOTOS.length} photographs and their quadrants …`);
  const samples = await nearDuplicateSet(PHOTOS, { tiles: true });
  const hashers = [...PIPELINE_HASHERS];
  const phashDir = process.env.EFFITAG_BENCH_SHARP_PHASH;
  if (phashDir) hashers.push(sharpPhashHasher(phashDir));
  else ctx.log('sharp-phash left out (set EFFITAG_BENCH_SHARP_PHASH to an unpacked copy: npm pack sharp-phash@2.2.0)');
  const results = [];
  for (const h of hashers) {
    ctx.log(`hashing ${samples.length} images with ${h.name} …`);
    const r = await scoreHasher(samples, h);
    ctx.log(
      `  ${h.name}: at D=${DEFAULT_MAX_DISTANCE} precision ${r.atDefault.precision} recall ${r.atDefault.recall}; best F1 ${r.bestF1.f1} at D=${r.bestF1.maxDistance} (precision ${r.bestF1.precision}, recall ${r.bestF1.recall}); hash ${r.medianHashMs} ms, with decode ${r.medianDecodeAndHashMs} ms`,
    );
    results.push(r);
  }
  return {
    machine: `${process.platform} ${process.arch}, Node ${process.version}`,
    photos: PHOTOS,
    copyKinds: COPY_KINDS,
    defaultMaxDistance: DEFAULT_MAX_DISTANCE,
    results,
    summary: Object.fromEntries(results.map((r) => [r.hasher, { atDefault: r.atDefault, bestF1: r.bestF1, medianHashMs: r.medianHashMs }])),
  };
}

/**
 * A training data set in the usual layout: one folder per label (`DIR/cat/*.jpg`, `DIR/dog/*.png`),
 * on disk or under an S3 prefix. Every image is decoded once, to a square "master" a little larger
 * than the largest training size, and kept in memory; augmentation crops and resizes from it.
 *
 * Unreadable images are skipped and listed, never fatal. A label with too few readable images is an
 * error naming it. Unbalanced labels get a warning and class weights (n / (k · count)).
 */
import { createHash } from 'node:crypto';
import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { decodeImage, ImageError } from '../inference/image.ts';
import { seededRandom } from '../model/random-weights.ts';

/** Where the images come from: a local folder or an S3 prefix (see `s3Source` in the CLI). */
export interface ImageSource {
  /** `label/name` paths, one folder level per label. */
  list(): Promise<string[]>;
  read(path: string): Promise<Uint8Array>;
  describe: string;
}

/** A source's way of saying one image cannot be read (gone, too large, archived): skipped, not fatal. */
export class UnreadableImage extends Error {
  override name = 'UnreadableImage';
}

export interface Sample {
  path: string;
  label: number;
  /** HWC uint8 RGB, `size`×`size`. */
  pixels: Uint8Array;
}

export interface Dataset {
  labels: string[];
  /** Square size of every sample's pixels. */
  size: number;
  train: Sample[];
  val: Sample[];
  skipped: { path: string; reason: string }[];
  /** SHA-256 over each readable image's path and content hash, in path order: what the model was trained on. */
  sha256: string;
  /** Per label: readable images. */
  counts: number[];
  /** Loss weight per label when the labels are unbalanced (else undefined). */
  classWeights?: number[];
  warnings: string[];
}

export interface DatasetOptions {
  /** Pixels per side of each decoded master. */
  size: number;
  /** Held-out fraction per label (stratified). Default 0.2. */
  val?: number;
  seed?: number;
  /** Fewest readable images a label may have. Default 10. */
  minPerLabel?: number;
  /** Largest / smallest label size above which class weights are used. Default 1.5. */
  imbalance?: number;
  onProgress?: (done: number, total: number) => void;
}

const IMAGE_NAME = /\.(jpe?g|png|webp|gif|tiff?|avif|heic|heif)$/i;

export function folderSource(dir: string): ImageSource {
  return {
    describe: dir,
    async list() {
      const out: string[] = [];
      for (const label of (await readdir(dir, { withFileTypes: true })).filter((d) => d.isDirectory())) {
        for (const f of await readdir(join(dir, label.name), { withFileTypes: true }))
          if (f.isFile() && !f.name.startsWith('.')) out.push(`${label.name}/${f.name}`);
      }
      return out;
    },
    read: (path) =>
      readFile(join(dir, path)).catch((err: NodeJS.ErrnoException) => {
        throw new UnreadableImage(`cannot read: ${err.code ?? err.message}`);
      }),
  };
}

/** Stratified, seeded: each label's images shuffled, then `val` of them (at least one) held out. */
export function splitStratified<T extends { label: number }>(items: readonly T[], val: number, seed: number): { train: T[]; val: T[] } {
  const rand = seededRandom(seed);
  const byLabel = new Map<number, T[]>();
  for (const it of items) {
    const group = byLabel.get(it.label);
    if (group) group.push(it);
    else byLabel.set(it.label, [it]);
  }
  const out = { train: [] as T[], val: [] as T[] };
  for (const label of [...byLabel.keys()].sort((a, b) => a - b)) {
    const group = shuffle(byLabel.get(label)!, rand);
    const n = val > 0 ? Math.max(1, Math.round(group.length * val)) : 0;
    out.val.push(...group.slice(0, n));
    out.train.push(...group.slice(n));
  }
  return out;
}

export function shuffle<T>(items: T[], rand: () => number): T[] {
  for (let i = items.length - 1; i > 0; i--) {
    const j = Math.floor(rand() * (i + 1));
    [items[i], items[j]] = [items[j], items[i]];
  }
  return items;
}

export async function loadDataset(source: ImageSource, options: DatasetOptions): Promise<Dataset> {
  const { size, val = 0.2, seed = 1, minPerLabel = 10, imbalance = 1.5 } = options;
  const paths = (await source.list()).sort();
  const folders = [...new Set(paths.map((p) => p.slice(0, p.indexOf('/'))))].sort();
  if (folders.length < 2)
    throw new Error(`${source.describe}: found ${folders.length} label folder(s); a data set has one folder per label, at least two`);
  const skipped: Dataset['skipped'] = [];
  const samples: Sample[] = [];
  const hash = createHash('sha256');
  let done = 0;
  for (const path of paths) {
    options.onProgress?.(done++, paths.length);
    if (!IMAGE_NAME.test(path)) {
      skipped.push({ path, reason: 'not an image by its name' });
      continue;
    }
    try {
      const bytes = await source.read(path);
      const image = await decodeImage(bytes, size);
      samples.push({ path, label: folders.indexOf(path.slice(0, path.indexOf('/'))), pixels: image.pixels });
      hash.update(`${path}\0${createHash('sha256').update(bytes).digest('hex')}\n`);
    } catch (err) {
      if (err instanceof ImageError) skipped.push({ path, reason: `${err.reason}: ${err.message}` });
      else if (err instanceof UnreadableImage) skipped.push({ path, reason: err.message });
      else throw err;
    }
  }
  options.onProgress?.(paths.length, paths.length);
  const counts = folders.map((_, i) => samples.filter((s) => s.label === i).length);
  const few = folders.filter((_, i) => counts[i] < minPerLabel);
  if (few.length)
    throw new Error(
      `too few readable images for label${few.length > 1 ? 's' : ''} ${few.map((f) => `"${f}" (${counts[folders.indexOf(f)]})`).join(', ')}: each label needs at least ${minPerLabel}`,
    );
  const warnings: string[] = [];
  let classWeights: number[] | undefined;
  const [lo, hi] = [Math.min(...counts), Math.max(...counts)];
  if (hi / lo > imbalance) {
    classWeights = counts.map((c) => samples.length / (folders.length * c));
    warnings.push(
      `unbalanced labels (${folders.map((f, i) => `${f} ${counts[i]}`).join(', ')}): training weights each label's loss by ${classWeights.map((w) => w.toFixed(2)).join(' / ')}`,
    );
  }
  const split = splitStratified(samples, val, seed);
  return { labels: folders, size, ...split, skipped, sha256: hash.digest('hex'), counts, classWeights, warnings };
}

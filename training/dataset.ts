/**
 * A training data set in the usual layout: one folder per label (`DIR/cat/*.jpg`, `DIR/dog/*.png`),
 * on disk or under an S3 prefix. Every image is decoded once, to a square "master" a little larger
 * than the largest training size, and kept in memory; augmentation crops and resizes from it.
 *
 * Unreadable images are skipped and listed, never fatal. A label with too few readable images is an
 * error naming it. Unbalanced labels get a warning and class weights (n / (k · count)).
 */
import { createHash } from 'node:crypto';
import type { Dirent } from 'node:fs';
import { readdir, readFile, realpath, stat } from 'node:fs/promises';
import { join, relative, sep } from 'node:path';
import { decodeImage, ImageError } from '../inference/image.ts';
import { seededRandom } from '../model/random-weights.ts';

/** Where the images come from: a local folder or an S3 prefix (see `s3Source` in the CLI). */
export interface ImageSource {
  /** `label/name` paths, one folder level per label. */
  list(): Promise<string[]>;
  read(path: string): Promise<Uint8Array>;
  describe: string;
  /** Filled by `list()`: what it left out and why (links leading outside the data root). */
  warnings?: string[];
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

const utf8 = new TextDecoder('utf-8', { fatal: true });

/** A file name as bytes, shown with its non-UTF-8 bytes as \xNN. */
const showBytes = (name: Buffer) =>
  [...name].map((b) => (b >= 0x20 && b < 0x7f ? String.fromCharCode(b) : `\\x${b.toString(16).padStart(2, '0')}`)).join('');

/**
 * A folder's entries with their names decoded. A name that is not UTF-8 is refused, naming it: Node
 * would decode it lossily (U+FFFD), so the path it gives back does not exist, and two such names
 * become one label.
 */
async function entries(path: string, what: string): Promise<Dirent[]> {
  const raw = await readdir(path, { withFileTypes: true, encoding: 'buffer' });
  return raw.map((d) => {
    try {
      utf8.decode(d.name);
    } catch {
      throw new Error(
        `${what} "${showBytes(d.name)}" in ${path}: its name is not UTF-8; rename it (label folders and image names must be UTF-8)`,
      );
    }
    return Object.assign(d, { name: d.name.toString('utf8') }) as unknown as Dirent;
  });
}

/**
 * Images under `dir`, one folder per label. A symbolic link (a label folder or an image) is followed
 * when it leads to somewhere inside `dir` and left out with a warning otherwise (a data set is what
 * lies under its root; a link out of it would train on files nobody listed).
 */
export function folderSource(dir: string): ImageSource {
  const source: ImageSource = {
    describe: dir,
    warnings: [],
    async list() {
      const root = await realpath(dir);
      const inside = (p: string) => {
        const r = relative(root, p);
        return r !== '' && !r.startsWith(`..${sep}`) && r !== '..';
      };
      const warnings: string[] = [];
      // A link's kind is its target's; one leading outside the root (or nowhere) is reported and left out.
      const kind = async (parent: string, d: Dirent, what: string): Promise<'dir' | 'file' | undefined> => {
        if (!d.isSymbolicLink()) return d.isDirectory() ? 'dir' : d.isFile() ? 'file' : undefined;
        const at = join(parent, d.name);
        const target = await realpath(at).catch(() => undefined);
        if (!target) {
          warnings.push(`${what} ${relative(dir, at)} is a broken symbolic link: left out`);
          return undefined;
        }
        if (!inside(target)) {
          warnings.push(`${what} ${relative(dir, at)} is a symbolic link to ${target}, outside the data root ${root}: left out`);
          return undefined;
        }
        const st = await stat(target);
        return st.isDirectory() ? 'dir' : st.isFile() ? 'file' : undefined;
      };
      const out: string[] = [];
      for (const label of await entries(dir, 'label folder')) {
        if (label.name.startsWith('.') || (await kind(dir, label, 'label folder')) !== 'dir') continue;
        const folder = join(dir, label.name);
        for (const f of await entries(folder, 'image')) {
          if (f.name.startsWith('.')) continue;
          if ((await kind(folder, f, 'image')) === 'file') out.push(`${label.name}/${f.name}`);
        }
      }
      source.warnings = warnings;
      return out;
    },
    read: (path) =>
      readFile(join(dir, path)).catch((err: NodeJS.ErrnoException) => {
        throw new UnreadableImage(`cannot read: ${err.code ?? err.message}`);
      }),
  };
  return source;
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
  const warnings: string[] = [...(source.warnings ?? [])];
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

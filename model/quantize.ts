/**
 * Static int8 quantization of a weights artifact (`effitag weights quantize`): activation ranges
 * calibrated on the user's own images, decoded exactly as the pipeline decodes them (decodeImage at the
 * model's resolution), then a quality gate on images held back from calibration: top-1 agreement and
 * top-5 overlap of the int8 graph with the float graph. Below `minTop1` nothing is written unless forced.
 *
 * The result is an ordinary artifact (same float weights.bin, same hash) whose manifest carries the
 * ranges and the gate's figures; the onnxruntime engine exports it as a QDQ graph (model/onnx/export.ts).
 */
import { parseS3Folder } from '../base/s3-url.ts';
import { messageOf } from '../base/errors.ts';
import { createHash } from 'node:crypto';
import { readdir, readFile, stat } from 'node:fs/promises';
import { join, relative } from 'node:path';
import * as ort from 'onnxruntime-node';
import { decodeImage, toBatch, toNchwBatch, type DecodedImage } from '../inference/image.ts';
import { exportOnnx, exportProbed, inputNormalization } from './onnx/export.ts';
import { seededRandom } from './random-weights.ts';
import type { ObjectStore } from '../pipeline/ports.ts';
import { loadArtifact, planFor, writeArtifact, type QuantizationRecord, type WeightsManifest } from './weights.ts';

/** Where calibration images come from (a folder, an S3 prefix): paths, and their bytes. */
export interface CalibrationSource {
  list(): Promise<string[]>;
  read(path: string): Promise<Uint8Array>;
  describe: string;
}

const IMAGE_NAME = /\.(jpe?g|png|webp|gif|tiff?|avif|heic|heif)$/i;

/** Every image file under a folder, recursively (by name; undecodable ones are skipped and counted). */
export function folderCalibrationSource(dir: string): CalibrationSource {
  return {
    describe: dir,
    async list() {
      const entries = await readdir(dir, { recursive: true, withFileTypes: true });
      return entries.filter((e) => e.isFile() && IMAGE_NAME.test(e.name)).map((e) => relative(dir, join(e.parentPath, e.name)));
    },
    read: (path) => readFile(join(dir, path)),
  };
}

/** Every image object under an S3 prefix. */
export function s3CalibrationSource(store: ObjectStore, url: string, maxBytes = 50 * 1024 * 1024): CalibrationSource {
  const { bucket, prefix } = parseS3Folder(url);
  return {
    describe: url,
    async list() {
      const keys: string[] = [];
      let continuationToken: string | undefined;
      do {
        const page = await store.list(bucket, { prefix, continuationToken });
        for (const o of page.objects) if (o.size > 0 && IMAGE_NAME.test(o.key)) keys.push(o.key);
        continuationToken = page.nextContinuationToken;
      } while (continuationToken);
      return keys;
    },
    read: async (key) => (await store.get({ bucket, key }, { maxBytes })).bytes,
  };
}

export interface QuantizeOptions {
  weightsDir: string;
  source: CalibrationSource;
  out: string;
  /** Most images to use (calibration + held out); default 200. */
  images?: number;
  /** Fraction held back for the gate; default 0.25 (at least one image). */
  heldOut?: number;
  /** Lowest top-1 agreement written without `force`; default 0.99. */
  minTop1?: number;
  force?: boolean;
  /** Which ops are int8 (see QuantizeSpec; default 'all', the faster: README, Engines). */
  ops?: 'conv' | 'all';
  /** Keep the squeeze-and-excite branch in float (default false). */
  floatSqueezeExcite?: boolean;
  /** Weight bits (default 7: no saturation on CPUs without VNNI, see QuantizeSpec.weightBits). */
  weightBits?: 7 | 8;
  seed?: number;
  threads?: number;
  log?: (msg: string) => void;
}

export interface QuantizeResult {
  manifest: WeightsManifest;
  record: QuantizationRecord;
  written: boolean;
}

export class QualityGateError extends Error {
  override name = 'QualityGateError';
  constructor(
    message: string,
    readonly record: QuantizationRecord,
  ) {
    super(message);
  }
}

const BATCH = 8;

async function session(bytes: Uint8Array, threads: number): Promise<ort.InferenceSession> {
  return ort.InferenceSession.create(bytes, {
    graphOptimizationLevel: 'all',
    intraOpNumThreads: threads,
    interOpNumThreads: 1,
    executionMode: 'sequential',
  });
}

/** Batches as a graph takes them: raw NHWC (the probed calibration graph) or normalised NCHW (the engine's export). */
type Input = { layout: 'nhwc' } | { layout: 'nchw'; scale: number[]; shift: number[] };

async function* batches(images: readonly DecodedImage[], resolution: number, input: Input = { layout: 'nhwc' }) {
  for (let i = 0; i < images.length; i += BATCH) {
    const chunk = images.slice(i, i + BATCH);
    const tensor =
      input.layout === 'nchw'
        ? new ort.Tensor('float32', toNchwBatch(chunk, input.scale, input.shift), [chunk.length, 3, resolution, resolution])
        : new ort.Tensor('float32', toBatch(chunk), [chunk.length, resolution, resolution, 3]);
    yield { chunk, feed: { images: tensor } };
  }
}

/** Class indices of the k largest values, best first. */
export function topK(p: ArrayLike<number>, k: number): number[] {
  const idx: number[] = [];
  for (let i = 0; i < p.length; i++) {
    idx.push(i);
    idx.sort((a, b) => p[b] - p[a]);
    if (idx.length > k) idx.pop();
  }
  return idx;
}

/** Top-1 agreement and mean top-5 overlap of two models' outputs (rows of `classes` values). */
export function agreement(
  reference: Float32Array,
  candidate: Float32Array,
  classes: number,
): { top1: number; top5Overlap: number; images: number } {
  const n = reference.length / classes;
  let same = 0,
    overlap = 0;
  const k = Math.min(5, classes);
  for (let i = 0; i < n; i++) {
    const a = topK(reference.subarray(i * classes, (i + 1) * classes), k);
    const b = topK(candidate.subarray(i * classes, (i + 1) * classes), k);
    if (a[0] === b[0]) same++;
    overlap += a.filter((c) => b.includes(c)).length / k;
  }
  return { images: n, top1: n ? same / n : 0, top5Overlap: n ? overlap / n : 0 };
}

async function outputs(s: ort.InferenceSession, images: readonly DecodedImage[], resolution: number, input: Input): Promise<Float32Array> {
  const parts: Float32Array[] = [];
  for await (const { feed } of batches(images, resolution, input))
    parts.push((await s.run(feed, ['probabilities'])).probabilities.data as Float32Array);
  const out = new Float32Array(parts.reduce((s, p) => s + p.length, 0));
  let o = 0;
  for (const p of parts) {
    out.set(p, o);
    o += p.length;
  }
  return out;
}

export async function quantizeArtifact(options: QuantizeOptions): Promise<QuantizeResult> {
  const log = options.log ?? (() => {});
  const threads = options.threads ?? 2;
  const artifact = await loadArtifact(options.weightsDir);
  const { manifest } = artifact;
  if (manifest.quantization) throw new Error(`${options.weightsDir} is already int8; quantize its float model`);
  if (!manifest.includeTop)
    throw new Error(`${options.weightsDir}: weights without a classifier top cannot be gated (no predictions to compare)`);
  if (
    await stat(options.out).then(
      () => true,
      () => false,
    )
  )
    throw new Error(`${options.out} exists; quantize writes a new artifact directory (remove it or pick another --out)`);
  const plan = planFor(manifest);
  const resolution = manifest.resolution;

  // Images: sorted paths, a seeded shuffle, at most `images`; decoded as the pipeline decodes them.
  const paths = (await options.source.list()).sort();
  const rand = seededRandom(options.seed ?? 1);
  for (let i = paths.length - 1; i > 0; i--) {
    const j = Math.floor(rand() * (i + 1));
    [paths[i], paths[j]] = [paths[j], paths[i]];
  }
  const wanted = options.images ?? 200;
  const decoded: { path: string; image: DecodedImage }[] = [];
  const hash = createHash('sha256');
  let skipped = 0;
  for (const path of paths) {
    if (decoded.length >= wanted) break;
    try {
      const bytes = await options.source.read(path);
      decoded.push({ path, image: await decodeImage(bytes, resolution) });
      hash.update(path).update(createHash('sha256').update(bytes).digest());
    } catch (err) {
      skipped++;
      log(`skipped ${path}: ${messageOf(err)}`);
    }
  }
  const heldOutCount = Math.max(1, Math.round(decoded.length * (options.heldOut ?? 0.25)));
  if (decoded.length < heldOutCount + 1)
    throw new Error(
      `${options.source.describe}: ${decoded.length} readable image(s); quantization needs at least 2 (calibration and a held-out check), 50 or more for ranges worth having`,
    );
  const heldOut = decoded.slice(0, heldOutCount).map((d) => d.image);
  const calibration = decoded.slice(heldOutCount).map((d) => d.image);
  log(`calibrating on ${calibration.length} image(s), holding out ${heldOut.length}, at ${resolution}×${resolution}`);

  // Ranges: min/max of every tensor a convolution reads or writes, over the calibration images.
  const { bytes: probedBytes, probes } = exportProbed(plan, artifact.weights);
  const ranges: Record<string, [number, number]> = {};
  for (const p of probes) ranges[p] = [Infinity, -Infinity];
  const probeSession = await session(probedBytes, threads);
  try {
    for await (const { feed } of batches(calibration, resolution)) {
      const result = await probeSession.run(feed, probes);
      for (const p of probes) {
        const data = result[p].data as Float32Array;
        const r = ranges[p];
        for (let i = 0; i < data.length; i++) {
          const v = data[i];
          if (v < r[0]) r[0] = v;
          if (v > r[1]) r[1] = v;
        }
      }
    }
  } finally {
    await probeSession.release();
  }

  // Gate: the float graph and the int8 graph on the held-out images, as the engine runs them (NCHW export).
  const floatSqueezeExcite = options.floatSqueezeExcite ?? false;
  const ops = options.ops ?? 'all';
  const input: Input = { layout: 'nchw', ...inputNormalization(plan, artifact.weights) };
  const floatBytes = exportOnnx(plan, artifact.weights, { layout: 'nchw' });
  const weightBits = options.weightBits ?? 7;
  const int8Bytes = exportOnnx(plan, artifact.weights, { layout: 'nchw', quantize: { ranges, ops, floatSqueezeExcite, weightBits } });
  const [floatSession, int8Session] = [await session(floatBytes, threads), await session(int8Bytes, threads)];
  let figures: ReturnType<typeof agreement>;
  try {
    figures = agreement(
      await outputs(floatSession, heldOut, resolution, input),
      await outputs(int8Session, heldOut, resolution, input),
      manifest.classes,
    );
  } finally {
    await floatSession.release();
    await int8Session.release();
  }
  const record: QuantizationRecord = {
    scheme: 'int8-qdq',
    floatSha256: manifest.sha256,
    ops,
    floatSqueezeExcite,
    weightBits,
    ranges,
    calibration: { images: calibration.length, heldOut: heldOut.length, skipped, dataSha256: hash.digest('hex') },
    agreement: [{ resolution, images: figures.images, top1: figures.top1, top5Overlap: figures.top5Overlap }],
    forced: false,
  };
  const pct = (v: number) => `${(100 * v).toFixed(1)} %`;
  log(
    `held out ${figures.images} image(s) at ${resolution}: top-1 agreement ${pct(figures.top1)}, top-5 overlap ${pct(figures.top5Overlap)}`,
  );
  const minTop1 = options.minTop1 ?? 0.99;
  if (figures.top1 < minTop1) {
    if (!options.force)
      throw new QualityGateError(
        `int8 model refused: top-1 agreement with the float model ${pct(figures.top1)} on ${figures.images} held-out image(s) is below ${pct(minTop1)} (top-5 overlap ${pct(figures.top5Overlap)}); nothing written to ${options.out}. More calibration images may help; --force writes it anyway and records the figures.`,
        record,
      );
    record.forced = true;
  }
  const written = await writeArtifact(
    options.out,
    plan,
    artifact.weights,
    { ...manifest.source, note: `int8 (QDQ) of ${manifest.sha256.slice(0, 16)}${manifest.source.note ? `; ${manifest.source.note}` : ''}` },
    manifest.custom,
    record,
  );
  return { manifest: written, record, written: true };
}

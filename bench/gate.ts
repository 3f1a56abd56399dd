/**
 * The int8 quality gate measured on real photographs: the colour and grey photographs Debian's
 * python3-skimage ships (or any folder: EFFITAG_GATE_PHOTOS) and augmented copies of each (crops,
 * mirror, rotation, brightness and saturation, blur, JPEG re-encoding: sharp), written as files and
 * given to `weights quantize` as a user's folder would be; for each variant at its resolution.
 *
 * Weights: pretrained ones cannot be downloaded here, so the network is randomly initialised and its
 * BatchNorm statistics are then measured on these photographs (training/trainer.ts recalibrateBatchNorm),
 * and the result says so. Without that step a random B0 answers the same class for every image (its
 * deep features do not depend on the input), which would agree with anything; the row records how
 * many distinct classes the float network names and its median top-1 margin, so the figure can be
 * judged. Such a network still has small margins between 1000 classes, so a rounding flips its top-1
 * more easily than a trained network's: a harsh test of the gate.
 * Quantization is forced so that every figure is recorded; `passes` says whether the gate let it by.
 */
import { readdir, readFile, writeFile, mkdir } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import sharp from 'sharp';
import { decodeImage } from '../inference/image.ts';
import { ortEngine } from '../inference/ort-engine.ts';
import { planModel } from '../model/plan.ts';
import { folderCalibrationSource, quantizeArtifact, topK } from '../model/quantize.ts';
import { randomWeights, seededRandom } from '../model/random-weights.ts';
import { writeArtifact } from '../model/weights.ts';
import { useTfjsBackend } from '../model/tfjs-backend.ts';
import { buildNet, disposeNet, readWeights, recalibrateBatchNorm } from '../training/trainer.ts';
import { median, type BenchContext } from './util.ts';
import { SKIMAGE_DATA } from './hashes.ts';

/** The photographs among skimage's data files (the rest are drawings, test patterns and arrays). */
const SKIMAGE_PHOTOS = [
  'astronaut.png',
  'brick.png',
  'camera.png',
  'chelsea.png',
  'coffee.png',
  'coins.png',
  'grass.png',
  'gravel.png',
  'hubble_deep_field.jpg',
  'ihc.png',
  'moon.png',
  'motorcycle_left.png',
  'motorcycle_right.png',
  'page.png',
  'retina.jpg',
  'rocket.jpg',
];

export interface GateRow {
  variant: string;
  resolution: number;
  ops: 'all' | 'conv';
  floatSqueezeExcite: boolean;
  weightBits: 7 | 8;
  calibrationImages: number;
  heldOutImages: number;
  top1: number;
  top5Overlap: number;
  passes: boolean;
  seconds: number;
  /** How discriminating the float network is on these images: distinct top-1 classes, median top-1 − top-2 probability. */
  floatDistinctTop1: number;
  floatMedianMargin: number;
}

/** `copies` augmented JPEGs of one photograph (seeded). */
async function augment(bytes: Buffer, copies: number, rand: () => number): Promise<Buffer[]> {
  const meta = await sharp(bytes).metadata();
  const w = meta.width ?? 0,
    h = meta.height ?? 0;
  const out: Buffer[] = [];
  for (let i = 0; i < copies; i++) {
    const f = 0.5 + 0.5 * rand();
    const cw = Math.max(32, Math.round(w * f)),
      ch = Math.max(32, Math.round(h * f));
    let img = sharp(bytes).extract({
      left: Math.floor(rand() * (w - cw + 1)),
      top: Math.floor(rand() * (h - ch + 1)),
      width: Math.min(cw, w),
      height: Math.min(ch, h),
    });
    if (rand() < 0.5) img = img.flop();
    const angle = Math.round((rand() - 0.5) * 30);
    if (angle) img = img.rotate(angle, { background: { r: 0, g: 0, b: 0 } });
    img = img.modulate({ brightness: 0.7 + 0.6 * rand(), saturation: 0.6 + 0.8 * rand() });
    if (rand() < 0.3) img = img.blur(0.5 + rand());
    out.push(await img.jpeg({ quality: Math.round(60 + 35 * rand()) }).toBuffer());
  }
  return out;
}

export async function benchGate(
  ctx: BenchContext,
  opts: { variants: string[]; copies?: number; opsVariants?: boolean },
): Promise<
  | { photos: string; photoCount: number; images: number; weights: string; rows: GateRow[]; failed?: { variant: string; error: string }[] }
  | { unavailable: string }
> {
  const dir = process.env.EFFITAG_GATE_PHOTOS ?? SKIMAGE_DATA;
  if (!existsSync(dir)) return { unavailable: `no photographs at ${dir} (apt-get install python3-skimage, or set EFFITAG_GATE_PHOTOS)` };
  const files = dir === SKIMAGE_DATA ? SKIMAGE_PHOTOS.filter((f) => existsSync(join(dir, f))) : await readdir(dir);
  const folder = join(ctx.workDir, 'gate-photos');
  await mkdir(folder, { recursive: true });
  const rand = seededRandom(25);
  const copies = opts.copies ?? 11;
  let photoCount = 0,
    images = 0;
  for (const f of files.sort()) {
    const bytes = await readFile(join(dir, f));
    try {
      await decodeImage(bytes, 64);
    } catch {
      continue; // not an image the pipeline reads
    }
    photoCount++;
    await writeFile(join(folder, f), bytes);
    for (const [i, b] of (await augment(bytes, copies, rand)).entries()) await writeFile(join(folder, `${f}.aug${i}.jpg`), b);
    images += 1 + copies;
  }
  if (photoCount === 0) return { unavailable: `no readable photographs in ${dir}` };
  ctx.log(`gate: ${photoCount} photographs from ${dir} and ${copies} augmented copies of each (${images} images)`);

  const rows: GateRow[] = [];
  const failed: { variant: string; error: string }[] = [];
  for (const variant of opts.variants) {
    const plan = planModel(variant);
    const floatDir = join(ctx.workDir, `gate-${variant}-float`);
    // Random weights, BatchNorm statistics measured on the photographs (tfjs, training mode: each layer
    // normalised by the statistics of its own inputs, in one pass).
    await useTfjsBackend();
    const master = Math.ceil((plan.resolution * 1.125) / 8) * 8;
    const samples = await Promise.all(
      (await readdir(folder)).sort().map(async (p, i) => ({
        path: p,
        label: i % 2,
        pixels: (await decodeImage(await readFile(join(folder, p)), master)).pixels,
      })),
    );
    const net = buildNet(plan, randomWeights(plan, 1));
    try {
      // Batches of 8: tfjs's wasm heap aborted on B2 at 260 px in batches of 16 (2026-12-07).
      recalibrateBatchNorm(net, samples, master, plan.resolution, 8);
    } catch (err) {
      disposeNet(net);
      failed.push({ variant, error: `BatchNorm recalibration on tfjs failed: ${err instanceof Error ? err.message : String(err)}` });
      ctx.log(`gate ${variant}: ${failed.at(-1)!.error}; skipped`);
      continue;
    }
    await writeArtifact(floatDir, plan, readWeights(net), {
      kind: 'random',
      note: 'gate benchmark: BatchNorm statistics measured on the photographs',
    });
    disposeNet(net);
    // A network that names one class for every image agrees with anything: say how discriminating it is.
    const model = await ortEngine({ threads: 2, log: () => {} }).load(floatDir);
    const top1 = new Set<number>();
    const margins: number[] = [];
    try {
      for (const p of (await readdir(folder)).sort()) {
        const [probs] = await model.classify([await decodeImage(await readFile(join(folder, p)), plan.resolution)]);
        const [a, b] = topK(probs, 2);
        top1.add(a);
        margins.push(probs[a] - probs[b]);
      }
    } finally {
      await model.dispose();
    }
    const diagnostics = { floatDistinctTop1: top1.size, floatMedianMargin: median(margins) };
    const settings: { ops: 'all' | 'conv'; floatSqueezeExcite: boolean; weightBits: 7 | 8 }[] =
      opts.opsVariants && variant === 'b0'
        ? [
            { ops: 'all', floatSqueezeExcite: false, weightBits: 7 },
            { ops: 'all', floatSqueezeExcite: false, weightBits: 8 },
            { ops: 'all', floatSqueezeExcite: true, weightBits: 7 },
            { ops: 'conv', floatSqueezeExcite: false, weightBits: 7 },
          ]
        : [{ ops: 'all', floatSqueezeExcite: false, weightBits: 7 }];
    for (const s of settings) {
      const t0 = performance.now();
      const out = join(ctx.workDir, `gate-${variant}-int8-${s.ops}${s.floatSqueezeExcite ? '-fse' : ''}-w${s.weightBits}`);
      const { record } = await quantizeArtifact({
        weightsDir: floatDir,
        source: folderCalibrationSource(folder),
        out,
        images: images,
        force: true,
        ...s,
      });
      const a = record.agreement[0];
      const row: GateRow = {
        variant,
        resolution: plan.resolution,
        ...s,
        calibrationImages: record.calibration.images,
        heldOutImages: record.calibration.heldOut,
        top1: a.top1,
        top5Overlap: a.top5Overlap,
        passes: !record.forced,
        seconds: (performance.now() - t0) / 1000,
        ...diagnostics,
      };
      rows.push(row);
      ctx.log(
        `gate ${variant} ${plan.resolution}px ops ${s.ops}${s.floatSqueezeExcite ? ' (SE float)' : ''}, ${s.weightBits}-bit weights: held out ${a.images}: top-1 agreement ${(100 * a.top1).toFixed(1)} %, top-5 overlap ${(100 * a.top5Overlap).toFixed(1)} % → ${row.passes ? 'passes' : 'refused without --force'} (float model: ${row.floatDistinctTop1} distinct top-1 classes over ${images} images, median top-1 margin ${row.floatMedianMargin.toPrecision(2)})`,
      );
    }
  }
  return {
    photos: dir,
    photoCount,
    images,
    weights: 'random initialisation with BatchNorm statistics measured on these photographs (no pretrained weights can be downloaded here)',
    rows,
    ...(failed.length ? { failed } : {}),
  };
}

/**
 * `npm run bench -- train`: what training costs on this machine, and what progressive learning buys.
 *
 * 1. Feature extraction for the head phase: B0 on onnxruntime, images/s.
 * 2. A fine-tuning step on tfjs (the backend that loads; wasm here): B0 with its top block unfrozen
 *    at 96 and 224 px, its frozen part on tfjs (as before) and on onnxruntime (as `train` runs it),
 *    and a whole tiny network from scratch, images/s.
 * 3. End to end on generated data (shapes and textures in random colours, positions and
 *    backgrounds): a tiny compound-scaled network from scratch, with progressive learning and
 *    without it (every stage at full size and full regularisation), held-out accuracy and time.
 * 4. The defaults, as a new user runs them (`--data`, `--name`, `--base` and nothing else): a small
 *    generated shape set, each stage until its held-out accuracy stops improving; held-out accuracy
 *    (the exported ONNX graph), time, epochs per stage and whether it converged; from scratch with
 *    and without progressive learning, and head only on a network trained here on other patterns.
 * Peak memory is the process's maximum resident set size.
 */
import { join } from 'node:path';
import { planModel } from '../model/plan.ts';
import { randomWeights, seededRandom } from '../model/random-weights.ts';
import { tf, useTfjsBackend } from '../model/tfjs-backend.ts';
import { enableWasmTraining } from '../model/wasm-training.ts';
import { loadArtifact } from '../model/weights.ts';
import { writePatternDataset } from '../test/support/shapes.ts';
import { randomArtifact } from '../test/support/fixtures.ts';
import { trainBatch } from '../training/augment.ts';
import { folderSource, loadDataset } from '../training/dataset.ts';
import { extractFeatures } from '../training/head.ts';
import { cutBefore, defaultUnfreeze, train } from '../training/train.ts';
import { buildNet, disposeNet, frozenOnOnnxruntime, learningInput, weightedCrossEntropy } from '../training/trainer.ts';
import type { BenchContext } from './util.ts';

const peakMb = () => Math.round(process.resourceUsage().maxRSS / 1024);

export interface TrainBenchOptions {
  /** The network trained from scratch. */
  variant: string;
  perLabel: number;
  epochs: number;
  stages: number;
  patterns: string[];
}

export async function benchTrain(ctx: BenchContext, options: TrainBenchOptions) {
  const backend = await useTfjsBackend(undefined, () => {});
  if (backend.name === 'wasm') enableWasmTraining();
  ctx.log(`tfjs backend: ${backend.name}`);

  // 1. Features on onnxruntime.
  await randomArtifact(join(ctx.workDir, 'b0'), 'b0', { seed: 1 });
  const b0 = await loadArtifact(join(ctx.workDir, 'b0'));
  const rand = seededRandom(1);
  const masters = Array.from({ length: 64 }, (_, i) => ({
    path: `${i}`,
    label: i % 4,
    pixels: new Uint8Array(256 * 256 * 3).map(() => rand() * 255),
  }));
  const features = await extractFeatures(b0, masters, { masterSize: 256, passes: 1, randAugment: 5, rand, workDir: ctx.workDir });
  ctx.log(`B0 features on onnxruntime: ${features.imagesPerSecond.toFixed(1)} images/s`);

  // 2. Training steps on tfjs.
  // Fine-tuning's frozen part on tfjs (as before) or on onnxruntime (as `train` runs it now).
  const step = async (variant: string, size: number, batch: number, fineTune: boolean, frozenOn: 'tfjs' | 'onnxruntime' = 'tfjs') => {
    const plan = planModel(variant, { classes: 4, resolution: size });
    const net = buildNet(plan, randomWeights(plan, 1), fineTune ? cutBefore(plan, defaultUnfreeze(plan)) : undefined);
    const closeFrozen = frozenOn === 'onnxruntime' ? await frozenOnOnnxruntime(net, ctx.workDir) : async () => {};
    const built = net.learning;
    const optimizer = tf.train.adam(1e-4);
    const vars = built.model.trainableWeights.map((w) => w.read() as tf.Variable);
    const m = Math.ceil((size * 1.125) / 8) * 8;
    const samples = Array.from({ length: batch }, (_, i) => ({
      path: `${i}`,
      label: i % 4,
      pixels: new Uint8Array(m * m * 3).map(() => rand() * 255),
    }));
    const times: number[] = [];
    for (let k = 0; k < 4; k++) {
      const started = performance.now();
      const { x, y } = trainBatch(samples, m, 4, { size, randAugment: 10, mixup: 0, rand });
      const input = await learningInput(net, x);
      const loss = optimizer.minimize(
        () => weightedCrossEntropy(y, built.model.apply(input, { training: true }) as tf.Tensor2D),
        true,
        vars,
      );
      if (input !== x) input.dispose();
      await loss?.data();
      tf.dispose([x, y, loss!]);
      if (k > 0) times.push(performance.now() - started);
    }
    optimizer.dispose();
    await closeFrozen();
    disposeNet(net);
    const ms = times.sort((a, b) => a - b)[1];
    const result = {
      variant,
      size,
      batch,
      mode: fineTune ? `fine-tune (block7 + top), frozen part on ${frozenOn}` : 'whole network',
      msPerStep: Math.round(ms),
      imagesPerSecond: +((batch * 1000) / ms).toFixed(1),
    };
    ctx.log(`step ${result.mode} ${variant} at ${size} px, batch ${batch}: ${result.msPerStep} ms, ${result.imagesPerSecond} images/s`);
    return result;
  };
  const steps = [
    await step('b0', 96, 16, true),
    await step('b0', 96, 16, true, 'onnxruntime'),
    await step('b0', 224, 16, true),
    await step('b0', 224, 16, true, 'onnxruntime'),
    await step(options.variant, planModel(options.variant).resolution, 32, false),
  ];

  // 3. From scratch, with and without progressive learning, on the same data, split and seed.
  const data = join(ctx.workDir, 'shapes');
  await writePatternDataset(data, { patterns: options.patterns, perLabel: options.perLabel, size: 80, seed: 3 });
  const loaded = await loadDataset(folderSource(data), { size: 72 });
  ctx.log(`data: ${options.patterns.join(', ')}; ${loaded.train.length} training, ${loaded.val.length} held-out images`);
  const runs = [];
  for (const progressive of [true, false]) {
    const started = performance.now();
    const { report } = await train({
      source: folderSource(data),
      name: progressive ? 'shapes-pl' : 'shapes-flat',
      base: options.variant,
      out: join(ctx.workDir, progressive ? 'pl' : 'flat'),
      epochs: options.epochs,
      stages: options.stages,
      progressive,
      batchSize: 32,
      log: (l) => ctx.log(`  ${l}`),
    });
    const run = {
      progressive,
      accuracy: report.final.accuracy,
      seconds: Math.round((performance.now() - started) / 1000),
      stages: report.stages.map((s) => ({
        size: s.size,
        randAugment: s.randAugment,
        dropout: s.dropout,
        valAccuracy: s.valAccuracy,
        seconds: Math.round(s.seconds),
      })),
      confusion: report.final.confusion,
    };
    ctx.log(`${progressive ? 'with' : 'without'} progressive learning: ${(run.accuracy * 100).toFixed(1)} % held-out in ${run.seconds} s`);
    runs.push(run);
  }
  const summary = {
    featuresImagesPerSecond: +features.imagesPerSecond.toFixed(1),
    steps: steps.map((s) => `${s.mode} ${s.variant}@${s.size}: ${s.imagesPerSecond} images/s`),
    progressive: `${(runs[0].accuracy * 100).toFixed(1)} % in ${runs[0].seconds} s`,
    flat: `${(runs[1].accuracy * 100).toFixed(1)} % in ${runs[1].seconds} s`,
    peakMemoryMb: peakMb(),
  };
  const defaults = await benchTrainDefaults(ctx, { variant: options.variant });
  return { backend: backend.name, options, steps, runs, defaults, summary: { ...summary, defaults: defaults.summary } };
}

/** The shape set of the must-show run: 4 shapes, random colours, sizes, positions and noisy backgrounds, 96 px. */
export const DEFAULT_SET = { patterns: ['cross', 'disc', 'square', 'stripes'], perLabel: 80, size: 96, seed: 11 };

/** The set a base network is trained on for the head-only case: other patterns than DEFAULT_SET's. */
export const BASE_SET = { patterns: ['checks', 'dots', 'grain', 'ring'], perLabel: 80, size: 96, seed: 12 };

export type DefaultsCase = 'progressive' | 'flat' | 'head-only';

/**
 * 4. `effitag train --data D --name N --base VARIANT`, nothing else: what a new user gets, from scratch
 * with progressive learning (the default) and without it (`--no-progressive`); and head only
 * (`--weights` of a network trained here from scratch, with the defaults, on BASE_SET, and `--epochs 0`).
 */
export async function benchTrainDefaults(ctx: BenchContext, options: { variant: string; perLabel?: number; cases?: DefaultsCase[] }) {
  const set = { ...DEFAULT_SET, perLabel: options.perLabel ?? DEFAULT_SET.perLabel };
  const data = join(ctx.workDir, 'defaults-shapes');
  await writePatternDataset(data, set);
  const runs: Record<string, unknown>[] = [];
  for (const which of options.cases ?? (['progressive', 'flat', 'head-only'] as const)) {
    let base: { seconds: number; accuracy: number; convergence: string } | undefined;
    const out = join(ctx.workDir, `defaults-${which}`);
    if (which === 'head-only') {
      const baseData = join(ctx.workDir, 'base-shapes');
      await writePatternDataset(baseData, BASE_SET);
      const started = performance.now();
      const { report } = await train({
        source: folderSource(baseData),
        name: 'base-shapes',
        base: options.variant,
        out: join(ctx.workDir, 'base'),
        stages: 4,
        log: (l) => ctx.log(`  base: ${l}`),
      });
      base = {
        seconds: Math.round((performance.now() - started) / 1000),
        accuracy: report.final.accuracy,
        convergence: report.convergence,
      };
    }
    const started = performance.now();
    const { report } = await train({
      source: folderSource(data),
      name: `shapes-${which}`,
      base: options.variant,
      out,
      stages: 4,
      ...(which === 'flat' ? { progressive: false } : {}),
      ...(which === 'head-only' ? { weights: join(ctx.workDir, 'base'), epochs: 0 } : {}),
      log: (l) => ctx.log(`  ${which}: ${l}`),
    });
    const seconds = Math.round((performance.now() - started) / 1000);
    const result = {
      case: which,
      accuracy: report.final.accuracy,
      converged: report.converged,
      convergence: report.convergence,
      alerts: report.alerts,
      seconds,
      ...(base ? { base: { data: BASE_SET, ...base } } : {}),
      stages: report.stages.map((s) => ({
        phase: s.phase,
        size: s.size,
        epochs: s.epochs,
        stop: s.stop,
        valAccuracy: s.valAccuracy,
        trainAccuracy: s.trainAccuracy,
        seconds: Math.round(s.seconds),
      })),
      confusion: report.final.confusion,
    };
    ctx.log(`defaults, ${which}: ${(result.accuracy * 100).toFixed(1)} % held-out in ${seconds} s, ${report.convergence}`);
    runs.push(result);
  }
  return {
    data: set,
    runs,
    summary: Object.fromEntries(
      runs.map((r) => [r.case, `${((r.accuracy as number) * 100).toFixed(1)} % in ${r.seconds} s, ${r.convergence}`]),
    ),
  };
}

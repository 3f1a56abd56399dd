/**
 * Phase 1 of fine-tuning, as the Keras guide does it: the backbone frozen, a new classifier trained on
 * its features. The frozen backbone runs on onnxruntime (the engine the pipeline uses, ~15× tfjs on a
 * CPU here), once per augmentation pass, so every epoch after that costs only the classifier.
 *
 * The classifier is EfficientNet's own top with a new class count (avg_pool → top_dropout →
 * predictions): the features are the pooled output of `top_activation`, so the trained model is a
 * plain EfficientNet artifact with N classes.
 */
import { mkdir, rm, writeFile } from 'node:fs/promises';
import { availableParallelism } from 'node:os';
import { join } from 'node:path';
import { startSessionThread } from '../inference/ort-thread.ts';
import { exportOnnx } from '../model/onnx/export.ts';
import { tf } from '../model/tfjs-backend.ts';
import { planFor, type WeightsArtifact } from '../model/weights.ts';
import { augmentImages, evalBatch } from './augment.ts';
import { shuffle, type Sample } from './dataset.ts';
import { earlyStopper, type StopReason, weightedCrossEntropy } from './trainer.ts';

const TOP = ['predictions/kernel:0', 'predictions/bias:0'];

export interface Features {
  /** [images, channels], row-major. */
  data: Float32Array;
  channels: number;
  labels: number[];
}

/**
 * Pooled backbone features of `samples` on onnxruntime: `passes` augmented passes (the first one plain),
 * `randAugment` as in the first progressive stage.
 */
export async function extractFeatures(
  base: WeightsArtifact,
  samples: readonly Sample[],
  options: {
    masterSize: number;
    passes: number;
    randAugment: number;
    rand: () => number;
    workDir: string;
    batchSize?: number;
    onBatch?: (done: number, total: number) => void;
  },
): Promise<Features & { imagesPerSecond: number }> {
  const plan = planFor({ ...base.manifest, includeTop: false, pooling: 'avg' });
  const weights = new Map([...base.weights].filter(([name]) => !TOP.includes(name)));
  await mkdir(options.workDir, { recursive: true });
  const path = join(options.workDir, `features-${base.manifest.sha256.slice(0, 16)}-r${plan.resolution}.onnx`);
  await writeFile(path, exportOnnx(plan, weights));
  const session = await startSessionThread(path, {
    graphOptimizationLevel: 'all',
    intraOpNumThreads: availableParallelism(),
    executionProviders: ['cpu'],
  });
  const channels = plan.nodes.find((n) => n.name === 'avg_pool')!.outShape.at(-1)!;
  const size = plan.resolution;
  const batchSize = options.batchSize ?? 16;
  const total = samples.length * options.passes;
  const data = new Float32Array(total * channels);
  const labels: number[] = [];
  const started = performance.now();
  try {
    let row = 0;
    for (let pass = 0; pass < options.passes; pass++) {
      for (let i = 0; i < samples.length; i += batchSize) {
        const batch = samples.slice(i, i + batchSize);
        const x =
          pass === 0
            ? evalBatch(batch, options.masterSize, size)
            : augmentImages(batch, options.masterSize, { size, randAugment: options.randAugment, rand: options.rand });
        // A copy of our own: the session thread takes over (transfers) the buffer it is given.
        const pixels = ((await x.data()) as Float32Array).slice();
        tf.dispose(x);
        const out = await session.run(pixels, [batch.length, size, size, 3]);
        data.set(out.data, row * channels);
        row += batch.length;
        labels.push(...batch.map((s) => s.label));
        options.onBatch?.(row, total);
      }
    }
  } finally {
    await session.close();
    await rm(path, { force: true });
  }
  return { data, channels, labels, imagesPerSecond: total / ((performance.now() - started) / 1000) };
}

export interface HeadOptions {
  classes: number;
  epochs: number;
  learningRate: number;
  dropout: number;
  batchSize?: number;
  classWeights?: number[];
  rand: () => number;
  /** Early stopping on the held-out loss (restoring the best epoch's head); without it, `epochs` epochs run. */
  patience?: number;
  /** performance.now() past which no new epoch starts (early stopping only). */
  deadline?: number;
  onEpoch?: (epoch: number, loss: number, valAccuracy: number, valLoss: number) => void;
}

/** The trained classifier, as the artifact names it. */
export interface Head {
  kernel: Float32Array;
  bias: Float32Array;
  history: { loss: number; valAccuracy: number; valLoss: number }[];
  stop: StopReason;
  /** The epoch whose head was kept (the last one on a fixed schedule). */
  bestEpoch: number;
  /** Accuracy of the kept head on the (plain and augmented) training features. */
  trainAccuracy: number;
}

/**
 * Per-channel mean and standard deviation of the training features. The classifier trains on
 * standardised features (a frozen backbone's channels differ in scale by orders of magnitude, which
 * slows a linear classifier down badly), and the standardisation is folded into its kernel and bias
 * afterwards: W' = W / σ, b' = b − (μ / σ) · W. The model stays a plain EfficientNet top.
 */
function channelStats(f: Features): { mean: Float32Array; std: Float32Array } {
  const n = f.labels.length;
  const mean = new Float32Array(f.channels);
  const std = new Float32Array(f.channels);
  for (let i = 0; i < n; i++) for (let c = 0; c < f.channels; c++) mean[c] += f.data[i * f.channels + c] / n;
  for (let i = 0; i < n; i++) for (let c = 0; c < f.channels; c++) std[c] += (f.data[i * f.channels + c] - mean[c]) ** 2 / n;
  for (let c = 0; c < f.channels; c++) std[c] = Math.sqrt(std[c]);
  // A channel that barely varies on the training images must not get a huge weight once folded in
  // (W / σ): any shift in it later, from fine-tuning or a new image, would swamp the logits.
  const floor = 0.05 * (std.reduce((a, b) => a + b, 0) / f.channels) + 1e-12;
  for (let c = 0; c < f.channels; c++) std[c] = Math.max(std[c], floor);
  return { mean, std };
}

/** Train `top_dropout → predictions` on features; reports held-out accuracy per epoch. */
export async function trainHead(train: Features, val: Features, options: HeadOptions): Promise<Head> {
  const { classes, channels } = { classes: options.classes, channels: train.channels };
  const stats = channelStats(train);
  const kernel = tf.variable(tf.randomNormal([channels, classes], 0, Math.sqrt(1 / channels), 'float32', 7));
  const bias = tf.variable(tf.zeros([classes]));
  const optimizer = tf.train.adam(options.learningRate);
  const weights = options.classWeights ? tf.tensor1d(options.classWeights) : undefined;
  const [mu, sigma] = [tf.tensor1d(stats.mean), tf.tensor1d(stats.std)];
  const standard = (f: Features) => tf.tidy(() => tf.tensor2d(f.data, [f.labels.length, channels]).sub(mu).div(sigma) as tf.Tensor2D);
  const x = standard(train);
  const y = tf.oneHot(tf.tensor1d(train.labels, 'int32'), classes).toFloat();
  const vx = standard(val);
  const vy = tf.oneHot(tf.tensor1d(val.labels, 'int32'), classes).toFloat() as tf.Tensor2D;
  // Dropout seeded from the run's generator: the same --seed, the same head.
  const logits = (input: tf.Tensor2D, training: boolean) =>
    (training && options.dropout > 0 ? tf.dropout(input, options.dropout, undefined, Math.floor(options.rand() * 2 ** 31)) : input)
      .matMul(kernel)
      .add(bias);
  const history: Head['history'] = [];
  const batchSize = options.batchSize ?? 64;
  const early = options.patience !== undefined;
  const stopper = earlyStopper(options.patience ?? 0);
  let kept: tf.Tensor[] | undefined;
  let bestEpoch = -1;
  let stop: StopReason = early ? 'max-epochs' : 'fixed';
  try {
    for (let epoch = 0; epoch < options.epochs; epoch++) {
      if (early && epoch > 0 && options.deadline !== undefined && performance.now() > options.deadline) {
        stop = 'time-budget';
        break;
      }
      const order = tf.tensor1d(
        shuffle(
          Array.from({ length: train.labels.length }, (_, i) => i),
          options.rand,
        ),
        'int32',
      );
      let lossSum = 0;
      for (let i = 0; i < train.labels.length; i += batchSize) {
        const idx = order.slice(i, Math.min(batchSize, train.labels.length - i));
        const loss = optimizer.minimize(
          () =>
            weightedCrossEntropy(
              y.gather(idx) as tf.Tensor2D,
              tf.softmax(logits(x.gather(idx) as tf.Tensor2D, true)) as tf.Tensor2D,
              weights,
            ),
          true,
          [kernel, bias],
        )!;
        lossSum += (await loss.data())[0] * idx.shape[0];
        tf.dispose([idx, loss]);
      }
      order.dispose();
      const [predicted, vloss] = tf.tidy(() => {
        const l = logits(vx, false);
        return [l.argMax(1), weightedCrossEntropy(vy, tf.softmax(l) as tf.Tensor2D)];
      });
      const p = await predicted.data();
      const valLoss = (await vloss.data())[0];
      tf.dispose([predicted, vloss]);
      const valAccuracy = val.labels.filter((l, i) => p[i] === l).length / Math.max(1, val.labels.length);
      history.push({ loss: lossSum / train.labels.length, valAccuracy, valLoss });
      options.onEpoch?.(epoch, lossSum / train.labels.length, valAccuracy, valLoss);
      if (!early || stopper.improved(valLoss)) {
        tf.dispose(kept ?? []);
        kept = [kernel.clone(), bias.clone()];
        bestEpoch = epoch;
      }
      if (early && stopper.exhausted) {
        stop = 'converged';
        break;
      }
    }
    if (kept) {
      kernel.assign(kept[0] as tf.Tensor2D);
      bias.assign(kept[1] as tf.Tensor1D);
    }
    const trainPredicted = tf.tidy(() => logits(x, false).argMax(1));
    const tp = await trainPredicted.data();
    trainPredicted.dispose();
    const trainAccuracy = train.labels.filter((l, i) => tp[i] === l).length / Math.max(1, train.labels.length);
    // Fold the standardisation into the layer: logits = ((f − μ) / σ) · W + b = f · (W / σ) + (b − (μ / σ) · W).
    const folded = tf.tidy(() => {
      const w = kernel.div(sigma.expandDims(1));
      return [w, bias.sub(mu.expandDims(0).matMul(w).squeeze([0]))];
    });
    const [k, b] = await Promise.all(folded.map((t) => t.data() as Promise<Float32Array>));
    tf.dispose(folded);
    return { kernel: k, bias: b, history, stop, bestEpoch, trainAccuracy };
  } finally {
    tf.dispose([kernel, bias, x, y, vx, vy, mu, sigma, ...(weights ? [weights] : []), ...(kept ?? [])]);
    optimizer.dispose();
  }
}

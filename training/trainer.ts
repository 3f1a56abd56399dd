/**
 * The tfjs side of training: a custom loop (soft Mixup labels and class weights need their own loss),
 * evaluation, BatchNorm recalibration, and moving weights between models built at different image
 * sizes (progressive learning rebuilds the network per stage; weights do not depend on the size).
 */
import { tf } from '../model/tfjs-backend.ts';
import { buildTfjsModel, type TfjsModel } from '../model/tfjs-model.ts';
import type { ModelPlan } from '../model/plan.ts';
import { evalBatch, trainBatch } from './augment.ts';
import { shuffle, type Sample } from './dataset.ts';
import type { Stage } from './progressive.ts';

/** The named weights of a built model (Keras names), copied out of tfjs. */
export function readWeights(built: TfjsModel): Map<string, Float32Array> {
  const out = new Map<string, Float32Array>();
  for (const node of built.plan.nodes) {
    if (!node.weights.length) continue;
    const values = built.model.getLayer(node.name).getWeights();
    for (const [i, w] of node.weights.entries()) out.set(w.name, values[i].dataSync() as Float32Array);
  }
  return out;
}

/**
 * The network rebuilt at another image size with the same weights (the old one is disposed).
 * Which layers train and whether BatchNorm learns are set again by `configureTraining`.
 */
export function rebuildAt(built: TfjsModel, plan: ModelPlan): TfjsModel {
  const next = buildTfjsModel(plan);
  for (const node of built.plan.nodes) {
    if (node.weights.length) next.model.getLayer(node.name).setWeights(built.model.getLayer(node.name).getWeights());
  }
  built.model.dispose();
  return next;
}

export interface TrainableSet {
  /** Layer names that learn; everything else is frozen. */
  trainable: (name: string) => boolean;
  /**
   * BatchNorm in inference mode (moving statistics, never updated), as Keras runs a frozen BatchNorm and as
   * fine-tuning wants: tfjs ignores `trainable` here and would normalise by batch statistics.
   */
  frozenBatchNorm: boolean;
}

export function configureTraining(built: TfjsModel, set: TrainableSet): void {
  for (const layer of built.model.layers) {
    layer.trainable = set.trainable(layer.name);
    if (set.frozenBatchNorm && layer.getClassName() === 'BatchNormalization') {
      layer.trainable = false;
      const call = layer.call.bind(layer);
      layer.call = (inputs, kwargs) => call(inputs, { ...kwargs, training: false });
    }
  }
}

/** Set every top-level dropout (not stochastic depth) to a stage's rate. */
export function setDropout(built: TfjsModel, rate: number): void {
  for (const node of built.plan.nodes)
    if (node.op === 'dropout' && !node.perSample) (built.model.getLayer(node.name) as unknown as { rate: number }).rate = rate;
}

/**
 * A fresh seed for every dropout layer, drawn from the run's generator: each step draws new masks, and
 * the same --seed trains the same model (tfjs would otherwise seed dropout from Math.random).
 */
function reseedDropout(built: TfjsModel, rand: () => number): void {
  for (const node of built.plan.nodes)
    if (node.op === 'dropout') (built.model.getLayer(node.name) as unknown as { seed: number }).seed = Math.floor(rand() * 2 ** 31);
}

export interface EpochResult {
  loss: number;
  images: number;
  seconds: number;
}

export interface FitStageOptions {
  stage: Stage;
  epochs: number;
  batchSize: number;
  learningRate: number;
  classes: number;
  masterSize: number;
  classWeights?: number[];
  rand: () => number;
  onBatch?: (done: number, total: number, loss: number) => void;
  onEpoch?: (epoch: number, result: EpochResult) => void;
}

/** Weighted categorical cross-entropy on (soft) labels: mean over the batch of w(y) · −Σ y log p. */
export function weightedCrossEntropy(y: tf.Tensor2D, p: tf.Tensor2D, classWeights?: tf.Tensor1D): tf.Scalar {
  const perImage = y
    .mul(tf.log(p.clipByValue(1e-7, 1)))
    .sum(1)
    .neg();
  const weighted = classWeights ? perImage.mul(y.mul(classWeights).sum(1)) : perImage;
  return weighted.mean() as tf.Scalar;
}

/** Train one stage: `epochs` passes over `train`, shuffled, augmented as the stage says. */
export async function fitStage(built: TfjsModel, train: readonly Sample[], options: FitStageOptions): Promise<EpochResult[]> {
  const optimizer = tf.train.adam(options.learningRate);
  const vars = built.model.trainableWeights.map((w) => w.read() as tf.Variable);
  const weights = options.classWeights ? tf.tensor1d(options.classWeights) : undefined;
  setDropout(built, options.stage.dropout);
  const results: EpochResult[] = [];
  const batches = Math.ceil(train.length / options.batchSize);
  try {
    for (let epoch = 0; epoch < options.epochs; epoch++) {
      const started = performance.now();
      const order = shuffle([...train], options.rand);
      let lossSum = 0;
      for (let b = 0; b < batches; b++) {
        const batch = order.slice(b * options.batchSize, (b + 1) * options.batchSize);
        const { x, y } = trainBatch(batch, options.masterSize, options.classes, {
          size: options.stage.size,
          randAugment: options.stage.randAugment,
          mixup: options.stage.mixup,
          rand: options.rand,
        });
        reseedDropout(built, options.rand);
        const loss = optimizer.minimize(
          () => weightedCrossEntropy(y, built.model.apply(x, { training: true }) as tf.Tensor2D, weights),
          true,
          vars,
        );
        if (!loss) throw new Error('the optimizer returned no loss');
        const value = (await loss.data())[0];
        tf.dispose([x, y, loss]);
        if (!Number.isFinite(value)) throw new Error(`the loss became ${value} in stage ${options.stage.index + 1}: lower --lr`);
        lossSum += value * batch.length;
        options.onBatch?.(b + 1, batches, value);
      }
      const result = { loss: lossSum / train.length, images: train.length, seconds: (performance.now() - started) / 1000 };
      results.push(result);
      options.onEpoch?.(epoch, result);
      await tf.nextFrame?.();
    }
  } finally {
    optimizer.dispose();
    weights?.dispose();
  }
  return results;
}

/**
 * Re-estimate every BatchNorm's moving statistics at the current image size: forward passes in
 * training mode over unaugmented training images, with the moving average's momentum lowered so they
 * converge in a few batches. Without this, a network trained from scratch on few steps keeps moving
 * averages far behind its weights and scores near chance at inference.
 */
export function recalibrateBatchNorm(
  built: TfjsModel,
  train: readonly Sample[],
  masterSize: number,
  size: number,
  batchSize: number,
): void {
  const bns = built.model.layers.filter((l) => l.getClassName() === 'BatchNormalization') as unknown as { momentum: number }[];
  const saved = bns.map((l) => l.momentum);
  const batches = Math.min(Math.ceil(train.length / batchSize), 20);
  for (let b = 0; b < batches; b++) {
    // A cumulative average: batch b contributes 1/(b+1).
    for (const l of bns) l.momentum = b / (b + 1);
    tf.tidy(() => {
      built.model.apply(evalBatch(train.slice(b * batchSize, (b + 1) * batchSize), masterSize, size), { training: true });
    });
  }
  bns.forEach((l, i) => {
    l.momentum = saved[i];
  });
}

/** Class probabilities for held-out images, in batches, without augmentation. */
export async function predictAll(
  built: TfjsModel,
  samples: readonly Sample[],
  masterSize: number,
  size: number,
  batchSize: number,
): Promise<Float32Array[]> {
  const out: Float32Array[] = [];
  for (let i = 0; i < samples.length; i += batchSize) {
    const p = tf.tidy(() => built.model.predict(evalBatch(samples.slice(i, i + batchSize), masterSize, size)) as tf.Tensor2D);
    const rows = (await p.array()) as number[][];
    p.dispose();
    for (const r of rows) out.push(Float32Array.from(r));
  }
  return out;
}

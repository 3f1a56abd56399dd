/**
 * The tfjs side of training: a custom loop (soft Mixup labels and class weights need their own loss),
 * evaluation, BatchNorm recalibration, and moving weights between models built at different image
 * sizes (progressive learning rebuilds the network per stage; weights do not depend on the size).
 */
import { mkdir, rm, writeFile } from 'node:fs/promises';
import { availableParallelism } from 'node:os';
import { join } from 'node:path';
import { startSessionThread, type SessionThread } from '../inference/ort-thread.ts';
import { exportOnnx } from '../model/onnx/export.ts';
import { tf } from '../model/tfjs-backend.ts';
import { assignWeights, buildTfjsModel, buildTfjsModelAfter, type TfjsModel } from '../model/tfjs-model.ts';
import type { ModelPlan } from '../model/plan.ts';
import { evalBatch, trainBatch } from './augment.ts';
import { shuffle, type Sample } from './dataset.ts';
import type { Stage } from './progressive.ts';

/**
 * The network being trained. From scratch, all of it learns. Fine-tuning cuts it before the first
 * unfrozen block: the frozen part runs in inference mode outside the gradient tape, once per batch,
 * and only the part after the cut is recorded and trained (recording the whole of B0 at 224 px,
 * batch 16, overflows the wasm backend's 4 GB; and the frozen part's BatchNorm and stochastic depth
 * must run as at inference anyway).
 */
export interface Net {
  plan: ModelPlan;
  /**
   * The whole network, holding the frozen part's weights; `toCut` runs it up to the cut on tfjs, and
   * `ort`, once `frozenOnOnnxruntime` has started it, on onnxruntime (what the stages use).
   */
  frozen?: { whole: TfjsModel; toCut: tf.LayersModel; cut: string; ort?: SessionThread };
  /** What learns: the whole network, or the part after the cut. */
  learning: TfjsModel;
  /** BatchNorm in the learning part runs in inference mode (fine-tuning, as Keras runs a frozen BatchNorm). */
  frozenBatchNorm: boolean;
}

const layersOf = (model: tf.LayersModel) => new Map(model.layers.map((l) => [l.name, l]));

/**
 * Build a net from named weights. `cut`: the plan node whose output feeds the first trained layer
 * (fine-tuning); without it the whole network learns, BatchNorm included (from scratch).
 */
export function buildNet(plan: ModelPlan, weights: ReadonlyMap<string, Float32Array>, cut?: string): Net {
  const whole = buildTfjsModel(plan);
  assignWeights(whole, weights);
  if (!cut) return { plan, learning: whole, frozenBatchNorm: false };
  const learning = buildTfjsModelAfter(plan, cut);
  const source = layersOf(whole.model);
  for (const layer of learning.model.layers) {
    const from = source.get(layer.name);
    if (from && layer.getWeights().length) layer.setWeights(from.getWeights());
  }
  const toCut = tf.model({ inputs: whole.model.inputs, outputs: whole.model.getLayer(cut).output as tf.SymbolicTensor });
  const net: Net = { plan, frozen: { whole, toCut, cut }, learning, frozenBatchNorm: true };
  // tfjs ignores `trainable` on BatchNorm and would normalise by batch statistics in training mode.
  for (const layer of learning.model.layers) {
    if (layer.getClassName() !== 'BatchNormalization') continue;
    layer.trainable = false;
    const call = layer.call.bind(layer);
    layer.call = (inputs, kwargs) => call(inputs, { ...kwargs, training: false });
  }
  return net;
}

/** The net's named weights (Keras names), copied out of tfjs: the frozen part's and the learned part's. */
export function readWeights(net: Net): Map<string, Float32Array> {
  const out = new Map<string, Float32Array>();
  const learned = layersOf(net.learning.model);
  const frozen = net.frozen ? layersOf(net.frozen.whole.model) : new Map();
  for (const node of net.plan.nodes) {
    if (!node.weights.length) continue;
    const values = (learned.get(node.name) ?? frozen.get(node.name))!.getWeights();
    for (const [i, w] of node.weights.entries()) out.set(w.name, values[i].dataSync() as Float32Array);
  }
  return out;
}

export function disposeNet(net: Net): void {
  net.learning.model.dispose();
  net.frozen?.whole.model.dispose();
}

/**
 * Run a fine-tuned net's frozen part on onnxruntime from now on: the plan up to the cut, exported with
 * the frozen weights (in inference mode, as `toCut` runs it) and opened on a session thread. The frozen
 * part is most of the work of a fine-tuning step (B0 at 224 px with block 7 unfrozen: 4.1 images/s
 * on tfjs wasm), and onnxruntime runs it several times faster. Returns the closer (the thread keeps the
 * process alive until it is closed). A net without a frozen part needs nothing.
 */
export async function frozenOnOnnxruntime(net: Net, workDir: string): Promise<() => Promise<void>> {
  const frozen = net.frozen;
  if (!frozen) return async () => {};
  const cut = frozen.cut;
  const at = net.plan.nodes.findIndex((n) => n.name === cut);
  if (at < 0) throw new Error(`the frozen part ends at ${cut}, which ${net.plan.spec.variant} lacks`);
  const plan = { ...net.plan, includeTop: false, nodes: net.plan.nodes.slice(0, at + 1), output: cut };
  const weights = readWeights(net);
  const names = new Set(plan.nodes.flatMap((n) => n.weights.map((w) => w.name)));
  await mkdir(workDir, { recursive: true });
  const path = join(workDir, `frozen-${net.plan.spec.variant}-r${net.plan.resolution}-${cut}.onnx`);
  await writeFile(path, exportOnnx(plan, new Map([...weights].filter(([n]) => names.has(n)))));
  try {
    frozen.ort = await startSessionThread(path, {
      graphOptimizationLevel: 'all',
      intraOpNumThreads: availableParallelism(),
      executionProviders: ['cpu'],
    });
  } finally {
    // The session has read the graph; the file is not needed again.
    await rm(path, { force: true });
  }
  return async () => {
    const ort = frozen.ort;
    frozen.ort = undefined;
    await ort?.close();
  };
}

/** The learning part's input for a batch of images: the images, or the frozen part's output at the cut. */
export async function learningInput(net: Net, x: tf.Tensor4D): Promise<tf.Tensor> {
  if (!net.frozen) return x;
  if (!net.frozen.ort) return tf.tidy(() => net.frozen!.toCut.predict(x) as tf.Tensor);
  // A copy of our own: the session thread takes over (transfers) the buffer it is given.
  const pixels = ((await x.data()) as Float32Array).slice();
  const out = await net.frozen.ort.run(pixels, x.shape);
  return tf.tensor(out.data, [...out.dims]);
}

/** Set the classifier's dropout (not stochastic depth) to a stage's rate. */
function setDropout(net: Net, rate: number): void {
  const layers = layersOf(net.learning.model);
  for (const node of net.plan.nodes) {
    const layer = layers.get(node.name);
    if (node.op === 'dropout' && !node.perSample && layer) (layer as unknown as { rate: number }).rate = rate;
  }
}

/**
 * A fresh seed for every dropout layer, drawn from the run's generator: each step draws new masks, and
 * the same --seed trains the same model (tfjs would otherwise seed dropout from Math.random).
 */
function reseedDropout(net: Net, rand: () => number): void {
  for (const layer of net.learning.model.layers)
    if (layer.getClassName() === 'Dropout') (layer as unknown as { seed: number }).seed = Math.floor(rand() * 2 ** 31);
}

export interface EpochResult {
  loss: number;
  images: number;
  seconds: number;
  /** Adam's step size during this epoch. */
  learningRate: number;
  /** With early stopping: this epoch's held-out scores. */
  valLoss?: number;
  valAccuracy?: number;
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
  /**
   * Early stopping: scored after every epoch; the stage ends when its held-out accuracy (loss breaking
   * ties) has not improved for `patience` epochs (heldOutStopper), halving the learning rate every `PLATEAU` epochs without an
   * improvement, and the weights of the best epoch are restored (Keras' EarlyStopping with
   * restore_best_weights, and ReduceLROnPlateau). Without it, `epochs` epochs run (a fixed schedule).
   */
  validate?: () => Promise<HeldOut>;
  patience?: number;
  /** performance.now() past which no new epoch starts (the time budget's share of this stage). */
  deadline?: number;
  /** Steps over which the learning rate ramps up linearly from learningRate / steps to learningRate (0: none). */
  warmupSteps?: number;
  /** The random resized crop's smallest share of the area (augment.ts). */
  minCropArea?: number;
}

/** Epochs without an improvement after which a stage halves its learning rate (early stopping only). */
export const PLATEAU = 2;

/** Held-out loss (mean cross-entropy) and accuracy. */
export interface HeldOut {
  loss: number;
  accuracy: number;
}

/** Why a stage or phase ended: its held-out scores stopped improving, or a budget ran out first, or a fixed schedule. */
export type StopReason = 'converged' | 'max-epochs' | 'time-budget' | 'fixed';

export interface StageOutcome {
  results: EpochResult[];
  stop: StopReason;
  /** With `validate`: the restored epoch and its held-out scores. */
  best?: HeldOut & { epoch: number };
  /** The learning rate at the end (after any halvings): where a following stage may carry on from. */
  learningRate: number;
}

/** Mean cross-entropy and accuracy of predicted probabilities against labels. */
export function heldOutScores(probabilities: readonly ArrayLike<number>[], labels: readonly number[]): HeldOut {
  let loss = 0;
  let correct = 0;
  for (const [i, p] of probabilities.entries()) {
    loss -= Math.log(Math.max(p[labels[i]], 1e-7));
    let best = 0;
    for (let c = 1; c < p.length; c++) if (p[c] > p[best]) best = c;
    if (best === labels[i]) correct++;
  }
  const n = Math.max(1, labels.length);
  return { loss: loss / n, accuracy: correct / n };
}

/**
 * The early-stopping bookkeeping, shared by the stages and the head phase: whether an epoch's held-out
 * loss is the best yet, and whether patience has run out. Improvement means at least 0.1 % lower.
 */
export function earlyStopper(patience: number) {
  let best = Number.POSITIVE_INFINITY;
  let since = 0;
  return {
    /** True when this epoch is the best so far (the caller snapshots its weights). */
    improved(loss: number): boolean {
      if (loss < best * 0.999) {
        best = loss;
        since = 0;
        return true;
      }
      since++;
      return false;
    },
    get exhausted() {
      return since >= patience;
    },
  };
}

/**
 * The stages' early stopping. An epoch is the best yet when its held-out accuracy is higher, or equal
 * with a 0.1 % lower loss: that epoch's weights are kept, and the stage ends `patience` epochs after the
 * last best one. Loss alone stopped a from-scratch run at 67 %: over 64 held-out images it jumps by
 * ±0.3 from epoch to epoch while accuracy still climbs; and counting a new lowest loss as progress kept
 * a 32-px stage going past 33 epochs while its accuracy had stayed between 52 and 61 % since epoch 14
 * (measured: docs/training.md). `stale` (epochs since the best) drives the learning rate's halving.
 */
export function heldOutStopper(patience: number) {
  let bestAccuracy = Number.NEGATIVE_INFINITY;
  let bestLoss = Number.POSITIVE_INFINITY;
  let stale = 0;
  return {
    /** True when this epoch is the best so far (the caller snapshots its weights). */
    improved(scores: HeldOut): boolean {
      const best = scores.accuracy > bestAccuracy || (scores.accuracy === bestAccuracy && scores.loss < bestLoss * 0.999);
      if (best) {
        bestAccuracy = scores.accuracy;
        bestLoss = scores.loss;
      }
      stale = best ? 0 : stale + 1;
      return best;
    },
    get stale() {
      return stale;
    },
    get exhausted() {
      return stale >= patience;
    },
  };
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

/**
 * Train one stage: up to `epochs` passes over `train`, shuffled, augmented as the stage says; with
 * `validate`, until the held-out scores stop improving (see FitStageOptions).
 */
export async function fitStage(net: Net, train: readonly Sample[], options: FitStageOptions): Promise<StageOutcome> {
  const optimizer = tf.train.adam(options.learningRate);
  const vars = net.learning.model.trainableWeights.map((w) => w.read() as tf.Variable);
  const weights = options.classWeights ? tf.tensor1d(options.classWeights) : undefined;
  setDropout(net, options.stage.dropout);
  const results: EpochResult[] = [];
  const batches = Math.ceil(train.length / options.batchSize);
  const stopper = heldOutStopper(options.patience ?? 5);
  // Adam's step size, halved after every `PLATEAU` epochs without an improvement (Keras' ReduceLROnPlateau).
  const adam = optimizer as unknown as { learningRate: number };
  let rate = options.learningRate;
  const warmup = options.warmupSteps ?? 0;
  let step = 0;
  let snapshot: tf.Tensor[] | undefined;
  let best: StageOutcome['best'];
  let stop: StopReason = options.validate ? 'max-epochs' : 'fixed';
  try {
    for (let epoch = 0; epoch < options.epochs; epoch++) {
      if (options.validate && epoch > 0 && options.deadline !== undefined && performance.now() > options.deadline) {
        stop = 'time-budget';
        break;
      }
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
          minCropArea: options.minCropArea,
        });
        // A fresh Adam's first steps move every weight by about the full learning rate: ramp up to it.
        adam.learningRate = step < warmup ? (rate * (step + 1)) / warmup : rate;
        step++;
        reseedDropout(net, options.rand);
        const input = await learningInput(net, x);
        const loss = optimizer.minimize(
          () => weightedCrossEntropy(y, net.learning.model.apply(input, { training: true }) as tf.Tensor2D, weights),
          true,
          vars,
        );
        if (input !== x) input.dispose();
        if (!loss) throw new Error('the optimizer returned no loss');
        const value = (await loss.data())[0];
        tf.dispose([x, y, loss]);
        if (!Number.isFinite(value)) throw new Error(`the loss became ${value} in stage ${options.stage.index + 1}: lower --lr`);
        lossSum += value * batch.length;
        options.onBatch?.(b + 1, batches, value);
      }
      const result = {
        loss: lossSum / train.length,
        images: train.length,
        seconds: (performance.now() - started) / 1000,
        learningRate: rate,
      };
      results.push(result);
      let scores: HeldOut | undefined;
      if (options.validate) {
        scores = await options.validate();
        if (stopper.improved(scores)) {
          // Every weight, BatchNorm statistics included: a copy the optimizer's updates do not touch.
          tf.dispose(snapshot ?? []);
          snapshot = net.learning.model.getWeights().map((w) => w.clone());
          best = { ...scores, epoch };
        }
      }
      if (options.validate && stopper.stale > 0 && stopper.stale % PLATEAU === 0) rate /= 2;
      options.onEpoch?.(epoch, { ...result, ...(scores ? { valLoss: scores.loss, valAccuracy: scores.accuracy } : {}) });
      await tf.nextFrame?.();
      if (stopper.exhausted && options.validate) {
        stop = 'converged';
        break;
      }
    }
    if (snapshot) net.learning.model.setWeights(snapshot);
  } finally {
    tf.dispose(snapshot ?? []);
    optimizer.dispose();
    weights?.dispose();
  }
  return { results, stop, best, learningRate: rate };
}

/**
 * Re-estimate every BatchNorm's moving statistics at the current image size: forward passes in
 * training mode over unaugmented training images, with the moving average's momentum lowered so they
 * converge in a few batches. Without this, a network trained from scratch on few steps keeps moving
 * averages far behind its weights and scores near chance at inference.
 */
export function recalibrateBatchNorm(net: Net, train: readonly Sample[], masterSize: number, size: number, batchSize: number): void {
  if (net.frozenBatchNorm) throw new Error('a fine-tuned network keeps its BatchNorm statistics');
  const built = net.learning;
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
  net: Net,
  samples: readonly Sample[],
  masterSize: number,
  size: number,
  batchSize: number,
): Promise<Float32Array[]> {
  const out: Float32Array[] = [];
  for (let i = 0; i < samples.length; i += batchSize) {
    const x = evalBatch(samples.slice(i, i + batchSize), masterSize, size);
    const input = await learningInput(net, x);
    const p = tf.tidy(() => net.learning.model.predict(input) as tf.Tensor2D);
    const rows = (await p.array()) as number[][];
    tf.dispose([x, input, p]);
    for (const r of rows) out.push(Float32Array.from(r));
  }
  return out;
}

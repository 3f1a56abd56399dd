/**
 * `effitag train`: a model on one's own labels, as a weights artifact like any other.
 *
 * With base weights (`--weights`), two phases, as the Keras fine-tuning guide runs them:
 *   1. head: the backbone frozen, its features computed on onnxruntime, a new classifier trained;
 *   2. fine-tune: the top blocks unfrozen (whole blocks; BatchNorm in inference mode; a small learning
 *      rate), trained in tfjs with progressive learning (progressive.ts).
 * Without base weights the whole network trains from scratch with progressive learning (BatchNorm
 * learning, its statistics recalibrated at each stage's size).
 *
 * Each phase and stage ends in a checkpoint (an artifact under OUT/checkpoints/, and state.json);
 * `resume` continues after the last one. The result is scored by the exported ONNX graph on the
 * held-out images, decoded as the pipeline decodes them: the metrics are what tagging will do.
 */
import { mkdir, readFile, rename, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { ortEngine } from '../inference/ort-engine.ts';
import { decodeImage } from '../inference/image.ts';
import { ensureOnnx, onnxFileName } from '../model/onnx/cache.ts';
import { planModel, type ModelPlan } from '../model/plan.ts';
import { randomWeights, seededRandom } from '../model/random-weights.ts';
import { isReservedModelName } from '../model/spec.ts';
import { useTfjsBackend } from '../model/tfjs-backend.ts';
import { enableWasmTraining } from '../model/wasm-training.ts';
import { loadArtifact, writeArtifact, type CustomModelRecord, type WeightsArtifact, type WeightsManifest } from '../model/weights.ts';
import { loadDataset, type Dataset, type ImageSource } from './dataset.ts';
import { extractFeatures, trainHead } from './head.ts';
import { progressiveRanges, stages as planStages, type ProgressiveRanges, type Stage } from './progressive.ts';
import { argmax, evaluate, judge, reportHtml, type EpochPoint, type TrainingReport } from './report.ts';
import {
  buildNet,
  disposeNet,
  fitStage,
  frozenOnOnnxruntime,
  heldOutScores,
  predictAll,
  readWeights,
  recalibrateBatchNorm,
} from './trainer.ts';

/** Progress of long steps, drawn by the CLI (bars) or ignored. */
export interface TrainProgress {
  start(label: string, total: number): void;
  update(done: number, info?: string): void;
  stop(): void;
}

export interface TrainOptions {
  source: ImageSource;
  /** The custom model's name: what tiers say (`model: NAME`) and what its tags' marker starts with. */
  name: string;
  /** The variant to train (with `weights`: must match them). */
  base: string;
  /** The base's weights artifact; without it the network trains from scratch. */
  weights?: string;
  out: string;
  val?: number;
  seed?: number;
  /**
   * Epochs per progressive stage (fine-tune or scratch), a fixed schedule. 0: head only. Unset: each
   * stage runs until its held-out accuracy (loss breaking ties) has not improved for `patience`
   * epochs (halving the learning rate on the way, trainer.ts heldOutStopper), restoring the best
   * epoch's weights; the head phase until its held-out loss stops improving; within `maxEpochs` per stage and
   * `timeBudget` in all.
   */
  epochs?: number;
  /** Early stopping's most epochs per stage (default 40; the head phase: 200). */
  maxEpochs?: number;
  /** Early stopping's time budget for the whole run, seconds (default DEFAULT_TIME_BUDGET): shared out over the phases left. */
  timeBudget?: number;
  /** Epochs after the best held-out accuracy before a stage stops (default 5; the head phase: 10, on its loss). */
  patience?: number;
  stages: number;
  progressive?: boolean;
  ranges?: Partial<ProgressiveRanges>;
  /** Epochs of the head phase, a fixed schedule; unset: early stopping, as the stages. */
  headEpochs?: number;
  /** Feature passes for the head phase: the plain images, then augmented copies. */
  headPasses?: number;
  /** Blocks unfrozen for fine-tuning, counted from the top. Default: the last stage's blocks. */
  unfreezeBlocks?: number;
  batchSize?: number;
  learningRate?: number;
  /** The random resized crop's smallest share of the area (augment.ts MIN_CROP_AREA). */
  minCropArea?: number;
  headLearningRate?: number;
  minPerLabel?: number;
  backend?: string;
  resume?: boolean;
  log?: (line: string) => void;
  progress?: () => TrainProgress;
}

export interface TrainResult {
  manifest: WeightsManifest;
  report: TrainingReport;
  onnx: string;
}

interface State {
  dataSha256: string;
  /** Checkpoints done, in order: `head`, `stage-1`, … */
  done: string[];
  stages: TrainingReport['stages'];
  epochs: EpochPoint[];
}

const silent: TrainProgress = { start() {}, update() {}, stop() {} };

/**
 * The whole run's default time budget, seconds: a bound on a run that would not stop, not the way it
 * normally stops (early stopping is). 1,800 s was under a default run of 320 images from scratch on a
 * shared 2-core host (1,760 s at a load average of 5 to 14), so the budget, not convergence, could end
 * it; 2 hours leaves such a run room at several times that load (docs/training.md, The defaults).
 */
export const DEFAULT_TIME_BUDGET = 7200;

/** Block prefixes (`block6a_`, …) in network order. */
function blockPrefixes(plan: ModelPlan): string[] {
  const seen: string[] = [];
  for (const n of plan.nodes) {
    const m = /^(block\d+[a-z]+_)/.exec(n.name);
    if (m && !seen.includes(m[1])) seen.push(m[1]);
  }
  return seen;
}

/**
 * Where fine-tuning cuts the network: the output feeding the first of the top `blocks` blocks (with
 * none, the one feeding `top_conv`). Everything after it learns.
 */
export function cutBefore(plan: ModelPlan, blocks: number): string {
  const prefixes = blockPrefixes(plan);
  if (blocks > prefixes.length) throw new Error(`--unfreeze ${blocks}: ${plan.spec.variant} has ${prefixes.length} blocks`);
  const first = blocks > 0 ? prefixes[prefixes.length - blocks] : 'top_conv';
  return plan.nodes.find((n) => n.name.startsWith(first))!.inputs[0];
}

/** The last stage's blocks: Keras' guide unfreezes from `block7` (B0's last stage). */
export function defaultUnfreeze(plan: ModelPlan): number {
  const blocks = blockPrefixes(plan);
  const last = /^block(\d+)/.exec(blocks.at(-1)!)![1];
  return blocks.filter((b) => b.startsWith(`block${last}`)).length;
}

export async function train(options: TrainOptions): Promise<TrainResult> {
  const log = options.log ?? ((l: string) => process.stderr.write(`${l}\n`));
  const progress = options.progress ?? (() => silent);
  if (isReservedModelName(options.name) || !/^[a-z][a-z0-9-]{0,39}$/.test(options.name))
    throw new Error(
      `--name "${options.name}": lowercase letters, digits and dashes, starting with a letter, and not a variant name (nor NAME-int8, an int8 model's)`,
    );
  if (options.epochs !== 0 && options.stages < 1) throw new Error('--stages must be at least 1');
  const started = performance.now();
  // Early stopping unless a fixed schedule was asked for; the budget is shared out over the phases left.
  const early = options.epochs === undefined;
  const deadline = started + (options.timeBudget ?? DEFAULT_TIME_BUDGET) * 1000;
  // A phase's share of what is left is its cost over the cost of the phases left (an epoch costs about
  // the image area; the head phase's epochs cost next to nothing once its features are computed).
  const shareOf = (cost: number, costLeft: number) =>
    performance.now() + (Math.max(0, deadline - performance.now()) * cost) / Math.max(cost, costLeft);

  const backend = await useTfjsBackend(options.backend, log);
  if (backend.name === 'wasm') enableWasmTraining();
  const backendName = `tfjs ${backend.name}`;

  let baseArtifact: WeightsArtifact | undefined;
  if (options.weights) baseArtifact = await loadArtifact(options.weights, options.base);
  const variant = baseArtifact?.manifest.variant ?? planModel(options.base).spec.variant;
  const resolution = baseArtifact?.manifest.resolution ?? planModel(variant).resolution;
  // Masters a little larger than the largest size, so crops keep detail.
  const masterSize = Math.ceil((resolution * 1.125) / 8) * 8;

  const bar = progress();
  bar.start('reading images', 1);
  const data: Dataset = await loadDataset(options.source, {
    size: masterSize,
    val: options.val ?? 0.2,
    seed: options.seed ?? 1,
    minPerLabel: options.minPerLabel,
    onProgress: (done, total) => {
      if (done === 0) bar.start('reading images', total);
      bar.update(done);
    },
  });
  bar.stop();
  for (const w of data.warnings) log(`warning: ${w}`);
  if (data.skipped.length)
    log(`skipped ${data.skipped.length} unreadable image(s):\n  ${data.skipped.map((s) => `${s.path}: ${s.reason}`).join('\n  ')}`);
  log(
    `${data.labels.length} labels (${data.labels.join(', ')}): ${data.train.length} training, ${data.val.length} held-out images; ${backendName}`,
  );

  const classes = data.labels.length;
  const fullPlan = planModel(variant, { classes });
  const ranges = progressiveRanges(variant, options.ranges);
  const schedule = options.epochs !== 0 ? planStages(ranges, options.stages, options.progressive ?? true) : [];
  const stageEpochs = options.epochs ?? options.maxEpochs ?? 40;
  const rand = seededRandom((options.seed ?? 1) * 7919);
  const checkpoints = join(options.out, 'checkpoints');
  const stateFile = join(checkpoints, 'state.json');

  let state: State = { dataSha256: data.sha256, done: [], stages: [], epochs: [] };
  let weights: Map<string, Float32Array> | undefined;
  if (options.resume) {
    const saved = await readFile(stateFile, 'utf8').then(
      (t) => JSON.parse(t) as State,
      () => undefined,
    );
    if (saved) {
      if (saved.dataSha256 !== data.sha256)
        throw new Error(`${stateFile}: the checkpoints were trained on other data; start afresh without --resume`);
      state = saved;
      const last = state.done.at(-1);
      if (last) weights = new Map((await loadArtifact(join(checkpoints, last))).weights);
      log(`resuming after ${last ?? 'nothing'} (${state.done.join(', ') || 'no checkpoints'})`);
    }
  } else {
    await rm(checkpoints, { recursive: true, force: true });
  }
  const checkpoint = async (id: string, w: Map<string, Float32Array>) => {
    await writeArtifact(join(checkpoints, id), fullPlan, w, { kind: 'trained', note: `checkpoint ${id} of ${options.name}` });
    state.done.push(id);
    await mkdir(checkpoints, { recursive: true });
    await writeFile(stateFile, `${JSON.stringify(state, null, 1)}\n`);
  };
  let phaseStart = performance.now();
  // Phase 1: the head on frozen features.
  if (baseArtifact && !state.done.includes('head')) {
    phaseStart = performance.now();
    const headEarly = options.headEpochs === undefined;
    const headEpochs = options.headEpochs ?? 200;
    const passes = options.headPasses ?? 3;
    const fbar = progress();
    fbar.start(`features on onnxruntime (${passes} passes)`, data.train.length * passes);
    const common = { masterSize, randAugment: ranges.randAugment.from, rand, workDir: join(checkpoints, 'work') };
    const trainFeatures = await extractFeatures(baseArtifact, data.train, { ...common, passes, onBatch: (d) => fbar.update(d) });
    fbar.stop();
    const valFeatures = await extractFeatures(baseArtifact, data.val, { ...common, passes: 1 });
    log(`features: ${trainFeatures.imagesPerSecond.toFixed(1)} images/s on onnxruntime`);
    const hbar = progress();
    hbar.start('head epochs', headEpochs);
    const head = await trainHead(trainFeatures, valFeatures, {
      classes,
      epochs: headEpochs,
      learningRate: options.headLearningRate ?? 1e-3,
      dropout: fullPlan.spec.dropout,
      classWeights: data.classWeights,
      rand,
      ...(headEarly ? { patience: options.patience ?? 10, deadline: deadline } : {}),
      onEpoch: (e, loss, acc, valLoss) => {
        hbar.update(e + 1, `loss ${loss.toFixed(3)} held-out ${(acc * 100).toFixed(1)} %`);
        state.epochs.push({ phase: 'head', stage: 0, epoch: e, loss, valLoss, valAccuracy: acc, size: resolution });
      },
    });
    hbar.stop();
    weights = new Map([...baseArtifact.weights].filter(([n]) => !n.startsWith('predictions/')));
    weights.set('predictions/kernel:0', head.kernel);
    weights.set('predictions/bias:0', head.bias);
    const seconds = (performance.now() - phaseStart) / 1000;
    state.stages.push({
      phase: 'head',
      stage: 0,
      size: resolution,
      randAugment: ranges.randAugment.from,
      mixup: 0,
      dropout: fullPlan.spec.dropout,
      epochs: head.history.length,
      valAccuracy: head.history[head.bestEpoch]?.valAccuracy ?? 0,
      trainAccuracy: head.trainAccuracy,
      stop: head.stop,
      seconds,
    });
    log(
      `head: held-out accuracy ${((head.history[head.bestEpoch]?.valAccuracy ?? 0) * 100).toFixed(1)} % after ${head.history.length} epochs${stopNote(head.stop, head.bestEpoch)} (${seconds.toFixed(0)} s)`,
    );
    await checkpoint('head', weights);
  }

  // Phase 2: progressive stages (fine-tune, or the whole network from scratch).
  const scratch = !baseArtifact;
  if (!weights) {
    weights = randomWeights(fullPlan, options.seed ?? 1);
    // From scratch: BatchNorm starts at identity (random statistics are for inference-only fixtures).
    for (const [name, w] of weights) {
      if (/(moving_mean|beta):0$/.test(name)) w.fill(0);
      if (/(moving_variance|gamma):0$/.test(name)) w.fill(1);
    }
  }
  const unfreeze = options.unfreezeBlocks ?? defaultUnfreeze(fullPlan);
  const phase = scratch ? 'scratch' : 'fine-tune';
  const cut = scratch ? undefined : cutBefore(fullPlan, unfreeze);
  for (const stage of schedule) {
    const id = `stage-${stage.index + 1}`;
    if (state.done.includes(id)) continue;
    phaseStart = performance.now();
    // Built afresh per stage: the size changes, the weights carry over by name.
    const net = buildNet(planModel(variant, { classes, resolution: stage.size }), weights, cut);
    let closeFrozen = async () => {};
    try {
      // Fine-tuning: the frozen part on onnxruntime, as the head phase's features.
      closeFrozen = await frozenOnOnnxruntime(net, join(checkpoints, 'work'));
      const sbar = progress();
      sbar.start(`${phase} stage ${stage.index + 1}/${schedule.length} at ${stage.size} px`, stageEpochs);
      // Scored as at inference: from scratch, BatchNorm's statistics re-estimated at this size first.
      const validate = async () => {
        if (scratch) recalibrateBatchNorm(net, data.train, masterSize, stage.size, 32);
        return heldOutScores(
          await predictAll(net, data.val, masterSize, stage.size, 32),
          data.val.map((s) => s.label),
        );
      };
      const outcome = await fitStage(net, data.train, {
        stage,
        epochs: stageEpochs,
        ...(early
          ? {
              validate,
              patience: options.patience ?? 5,
              deadline: shareOf(
                stage.size ** 2,
                schedule.filter((s) => s.index >= stage.index).reduce((sum, s) => sum + s.size ** 2, 0),
              ),
            }
          : {}),
        batchSize: options.batchSize ?? 16,
        // Each stage starts afresh at the stage learning rate. Carrying on at the rate the last stage
        // ended at (halved on its plateaus) was measured worse: from scratch the halvings compound
        // (1e-2 -> 6e-4 after the 32-px stage, 8e-5 after the 40-px one) and the 56-px stage, which
        // has to adapt to the new size, stayed at 65.6 % (docs/training.md, The defaults). A fresh
        // Adam moves every weight by about the full rate in its first steps (a restart at 1e-2 cost 8
        // to 13 points in each stage's first epoch), so under early stopping each stage ramps up to
        // it over its first epoch. Not in a fixed schedule (--epochs): the user's epochs are the
        // schedule, and in training.test.ts' 10-epoch stages the ramp cost the scratch and head-only
        // tests their margins (both failed).
        learningRate: options.learningRate ?? (scratch ? 1e-2 : 1e-4),
        warmupSteps: early ? Math.ceil(data.train.length / (options.batchSize ?? 16)) : 0,
        minCropArea: options.minCropArea,
        classes,
        masterSize,
        classWeights: data.classWeights,
        rand,
        onEpoch: (epoch, r) => {
          sbar.update(
            epoch + 1,
            `loss ${r.loss.toFixed(3)}${r.valAccuracy === undefined ? '' : ` held-out ${(r.valAccuracy * 100).toFixed(1)} %`} ${(r.images / r.seconds).toFixed(1)} images/s`,
          );
          state.epochs.push({
            phase,
            stage: stage.index,
            epoch,
            loss: r.loss,
            valLoss: r.valLoss,
            valAccuracy: r.valAccuracy,
            size: stage.size,
            learningRate: r.learningRate,
          });
        },
      });
      sbar.stop();
      let acc = outcome.best?.accuracy;
      if (acc === undefined) {
        if (scratch) recalibrateBatchNorm(net, data.train, masterSize, stage.size, 32);
        acc = accuracy(await predictAll(net, data.val, masterSize, stage.size, 32), data);
        state.epochs.at(-1)!.valAccuracy = acc;
      }
      // Training accuracy on up to 128 unaugmented training images, every label represented: to tell overfitting.
      const every = Math.ceil(data.train.length / 128);
      const probe = data.train.filter((_, i) => i % every === 0);
      const trainAccuracy = heldOutScores(
        await predictAll(net, probe, masterSize, stage.size, 32),
        probe.map((s) => s.label),
      ).accuracy;
      const seconds = (performance.now() - phaseStart) / 1000;
      state.stages.push({
        phase,
        stage: stage.index,
        ...stageKnobs(stage),
        epochs: outcome.results.length,
        valAccuracy: acc,
        trainAccuracy,
        stop: outcome.stop,
        seconds,
      });
      log(
        `${phase} stage ${stage.index + 1}/${schedule.length} at ${stage.size} px: held-out accuracy ${(acc * 100).toFixed(1)} % after ${outcome.results.length} epochs${stopNote(outcome.stop, outcome.best?.epoch)} (${seconds.toFixed(0)} s)`,
      );
      weights = readWeights(net);
    } finally {
      await closeFrozen();
      disposeNet(net);
    }
    await checkpoint(id, weights);
  }

  const custom: CustomModelRecord = {
    name: options.name,
    labels: data.labels,
    base: { variant, ...(baseArtifact ? { sha256: baseArtifact.manifest.sha256 } : {}) },
    dataSha256: data.sha256,
    images: { train: data.train.length, val: data.val.length, skipped: data.skipped.length },
    stages: state.stages.map((s) => ({
      phase: s.phase,
      resolution: s.size,
      epochs: s.epochs,
      valAccuracy: s.valAccuracy,
      seconds: s.seconds,
    })),
    metrics: { valAccuracy: 0, perClass: [] },
    backend: backendName,
  };
  // Score the exported graph on the held-out images as the pipeline decodes them, then record it.
  const scored = await scoreExport(options, fullPlan, weights, custom, data);
  custom.metrics = { valAccuracy: scored.evaluation.accuracy, perClass: scored.evaluation.perClass };
  const manifest = await writeArtifact(options.out, fullPlan, weights, { kind: 'trained', note: `effitag train ${options.name}` }, custom);
  // The same weights, so the same ONNX graph: move the scored export in beside the model instead of exporting again.
  await mkdir(join(options.out, 'onnx'), { recursive: true });
  await rename(scored.onnx, join(options.out, 'onnx', onnxFileName(manifest)));
  await rm(scored.dir, { recursive: true, force: true });
  const onnx = (await ensureOnnx(options.out)).path;
  const report: TrainingReport = {
    name: options.name,
    base: variant + (baseArtifact ? ` (weights ${baseArtifact.manifest.sha256.slice(0, 12)})` : ' (from scratch)'),
    backend: backendName,
    labels: data.labels,
    images: custom.images,
    skipped: data.skipped,
    warnings: data.warnings,
    stages: state.stages,
    epochs: state.epochs,
    final: scored.evaluation,
    seconds: (performance.now() - started) / 1000,
    ...judge(state.stages, scored.evaluation.accuracy, classes),
  };
  await writeFile(join(options.out, 'report.json'), `${JSON.stringify(report, null, 1)}\n`);
  await writeFile(join(options.out, 'report.html'), reportHtml(report));
  for (const w of report.alerts) log(`warning: ${w}`);
  log(
    `${options.name}: held-out accuracy ${(scored.evaluation.accuracy * 100).toFixed(1)} % (ONNX export, ${data.val.length} images); ${report.convergence}; report ${join(options.out, 'report.html')}`,
  );
  return { manifest, report, onnx };
}

const stopNote = (stop: string, best?: number) =>
  stop === 'fixed'
    ? ''
    : stop === 'converged'
      ? `, converged (best epoch ${(best ?? 0) + 1} kept)`
      : `, stopped by the ${stop === 'time-budget' ? 'time budget' : 'epoch budget'} before converging`;

const stageKnobs = (s: Stage) => ({ size: s.size, randAugment: s.randAugment, mixup: s.mixup, dropout: s.dropout });

function accuracy(probabilities: Float32Array[], data: Dataset): number {
  return probabilities.filter((p, i) => argmax(p) === data.val[i].label).length / Math.max(1, data.val.length);
}

/** Write the artifact to a scratch folder, export it and run it on onnxruntime over the held-out images. */
async function scoreExport(
  options: TrainOptions,
  plan: ModelPlan,
  weights: Map<string, Float32Array>,
  custom: CustomModelRecord,
  data: Dataset,
) {
  const dir = join(options.out, 'checkpoints', 'final');
  await writeArtifact(dir, plan, weights, { kind: 'trained' }, custom);
  const exported = await ensureOnnx(dir);
  const model = await ortEngine({ log: () => {} }).load(dir);
  try {
    const predicted: number[] = [];
    for (let i = 0; i < data.val.length; i += 16) {
      const batch = data.val.slice(i, i + 16);
      const images = await Promise.all(batch.map(async (s) => decodeImage(await options.source.read(s.path), plan.resolution)));
      for (const p of await model.classify(images)) predicted.push(argmax(p));
    }
    const evaluation = evaluate(
      data.labels,
      data.val.map((s) => s.label),
      predicted,
    );
    return { evaluation, dir, onnx: exported.path };
  } finally {
    await model.dispose();
  }
}

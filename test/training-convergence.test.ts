/**
 * Training that runs until it has learned: a stage stops when its held-out loss has not improved for
 * `patience` epochs and keeps the best epoch's weights, or stops at its time budget and says so; the
 * report says whether the run converged and warns when held-out accuracy is near chance or far below
 * training accuracy. (The head phase's early stopping runs end to end in training.test.ts.)
 */
import { before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { planModel } from '../model/plan.ts';
import { randomWeights, seededRandom } from '../model/random-weights.ts';
import { tf, useTfjsBackend } from '../model/tfjs-backend.ts';
import { enableWasmTraining } from '../model/wasm-training.ts';
import { execFile } from 'node:child_process';
import { join } from 'node:path';
import { folderSource } from '../training/dataset.ts';
import { judge, type StageRecord } from '../training/report.ts';
import { train } from '../training/train.ts';
import { tempDir } from './support/fixtures.ts';
import { noiseSamples, stage32 } from './support/training.ts';
import { writePatternDataset } from './support/shapes.ts';
import { buildNet, disposeNet, earlyStopper, fitStage, heldOutScores, heldOutStopper, PLATEAU, readWeights } from '../training/trainer.ts';

const record = (over: Partial<StageRecord>): StageRecord => ({
  phase: 'scratch',
  stage: 0,
  size: 32,
  randAugment: 5,
  mixup: 0,
  dropout: 0.1,
  epochs: 5,
  valAccuracy: 0.9,
  seconds: 1,
  ...over,
});

describe('early stopping', () => {
  before(async () => {
    const backend = await useTfjsBackend(undefined, () => {});
    if (backend.name === 'wasm') enableWasmTraining();
  });

  it('counts epochs without a 0.1 % better held-out loss; held-out scores are mean cross-entropy and accuracy', () => {
    const s = earlyStopper(2);
    assert.equal(s.improved(1), true);
    assert.equal(s.improved(0.9995), false, 'under 0.1 % is no improvement');
    assert.equal(s.exhausted, false);
    assert.equal(s.improved(0.5), true);
    assert.equal(s.improved(0.6), false);
    assert.equal(s.improved(0.7), false);
    assert.equal(s.exhausted, true);
    const scores = heldOutScores([Float32Array.from([0.5, 0.5]), Float32Array.from([0.9, 0.1])], [1, 0]);
    assert.ok(Math.abs(scores.loss - (-Math.log(0.5) - Math.log(0.9)) / 2) < 1e-6);
    assert.equal(scores.accuracy, 0.5);
  });

  it('a stage keeps the epoch with the best held-out accuracy (loss breaks ties) and stops `patience` epochs after it', () => {
    const s = heldOutStopper(2);
    assert.equal(s.improved({ accuracy: 0.5, loss: 1 }), true);
    // Over 64 held-out images the loss jumps while accuracy climbs: a loss-only stopper ended runs at 67 %.
    assert.equal(s.improved({ accuracy: 0.6, loss: 1.3 }), true, 'higher accuracy with a worse loss is the best epoch');
    assert.equal(s.improved({ accuracy: 0.6, loss: 1.2 }), true, 'equal accuracy, lower loss than the kept epoch’s');
    assert.equal(s.improved({ accuracy: 0.6, loss: 1.1999 }), false, 'under 0.1 % lower is no improvement');
    assert.equal(s.stale, 1);
    assert.equal(s.exhausted, false);
    // A lower loss at a lower accuracy is no progress: it kept a 32-px stage going for 20 flat epochs.
    assert.equal(s.improved({ accuracy: 0.55, loss: 0.5 }), false);
    assert.equal(s.stale, 2);
    assert.equal(s.exhausted, true);
  });

  it('a stage halves its learning rate after every 2 epochs without an improvement', async () => {
    const plan = planModel('custom-w0.25-d0.25-r32', { classes: 2 });
    const rand = seededRandom(6);
    const samples = noiseSamples(4, rand);
    const stage = stage32();
    const net = buildNet(plan, randomWeights(plan, 1));
    try {
      const rates: number[] = [];
      const scores = [
        { accuracy: 0.5, loss: 1 },
        { accuracy: 0.5, loss: 1 },
        { accuracy: 0.5, loss: 1 },
        { accuracy: 0.75, loss: 1 },
        { accuracy: 0.5, loss: 1 },
        { accuracy: 0.5, loss: 1 },
        { accuracy: 0.5, loss: 1 },
        { accuracy: 0.5, loss: 1 },
      ];
      let calls = 0;
      const outcome = await fitStage(net, samples, {
        stage,
        epochs: 40,
        batchSize: 4,
        learningRate: 0.04,
        classes: 2,
        masterSize: 40,
        rand,
        patience: 4,
        validate: async () => scores[calls++],
        onEpoch: (_, r) => rates.push(r.learningRate),
      });
      assert.equal(PLATEAU, 2);
      // Best at epochs 1 and 4; then stale 1, 2 (halved), best, 1, 2 (halved), 3, 4: stopped.
      assert.deepEqual(rates, [0.04, 0.04, 0.04, 0.02, 0.02, 0.02, 0.01, 0.01]);
      assert.equal(outcome.stop, 'converged');
      assert.equal(outcome.best?.epoch, 3);
      // Halved once more after the last epoch (stale 4): where the next stage carries on from.
      assert.equal(outcome.learningRate, 0.005);
    } finally {
      disposeNet(net);
    }
  });

  it('a stage warms its learning rate up over `warmupSteps`: its first step moves the weights a tenth as far with 10', async () => {
    const plan = planModel('custom-w0.25-d0.25-r32', { classes: 2 });
    // Adam's first step moves each weight by about the learning rate whatever the gradient's size.
    const firstStep = async (warmupSteps: number) => {
      const net = buildNet(plan, randomWeights(plan, 1));
      try {
        const before = readWeights(net).get('stem_conv/kernel:0')!;
        const rand = seededRandom(7);
        await fitStage(net, noiseSamples(4, rand), {
          stage: stage32(),
          epochs: 1,
          batchSize: 4,
          learningRate: 1e-2,
          classes: 2,
          masterSize: 40,
          rand,
          warmupSteps,
        });
        const after = readWeights(net).get('stem_conv/kernel:0')!;
        return Math.max(...before.map((w, i) => Math.abs(after[i] - w)));
      } finally {
        disposeNet(net);
      }
    };
    const plain = await firstStep(0);
    const warm = await firstStep(10);
    assert.ok(plain > 5e-3 && plain < 2e-2, `without warmup the first step moves a weight by ~1e-2 (${plain})`);
    assert.ok(Math.abs(warm / plain - 0.1) < 0.02, `with 10 warmup steps, a tenth as far (${warm} vs ${plain})`);
  });

  it('a stage stops `patience` epochs after its best held-out loss and restores that epoch’s weights; a deadline stops it unconverged', async () => {
    const plan = planModel('custom-w0.25-d0.25-r32', { classes: 2 });
    const rand = seededRandom(4);
    const samples = noiseSamples(8, rand);
    const stage = stage32();
    const net = buildNet(plan, randomWeights(plan, 1));
    try {
      // Scripted held-out losses: the best at epoch 2 (index 1), then three worse ones.
      const losses = [1, 0.8, 0.85, 0.9, 0.95, 0.7];
      const seen: Map<string, Float32Array>[] = [];
      let calls = 0;
      const outcome = await fitStage(net, samples, {
        stage,
        epochs: 40,
        batchSize: 8,
        learningRate: 1e-2,
        classes: 2,
        masterSize: 40,
        rand,
        patience: 3,
        validate: async () => {
          seen.push(readWeights(net));
          return { loss: losses[calls++], accuracy: 0.5 };
        },
      });
      assert.equal(outcome.stop, 'converged');
      assert.equal(outcome.results.length, 5, 'epoch 2 the best, then 3 without improvement');
      assert.equal(outcome.best?.epoch, 1);
      const now = readWeights(net);
      assert.deepEqual(now.get('stem_conv/kernel:0'), seen[1].get('stem_conv/kernel:0'), 'the best epoch’s weights restored');
      assert.notDeepEqual(now.get('stem_conv/kernel:0'), seen[4].get('stem_conv/kernel:0'));

      // A deadline already past: one epoch (every stage trains at least one), then stopped by time.
      const timed = await fitStage(net, samples, {
        stage,
        epochs: 40,
        batchSize: 8,
        learningRate: 1e-2,
        classes: 2,
        masterSize: 40,
        rand,
        validate: async () => ({ loss: 1, accuracy: 0.5 }),
        deadline: performance.now() - 1,
      });
      assert.equal(timed.stop, 'time-budget');
      assert.equal(timed.results.length, 1);
      // Without validation: the fixed schedule.
      const fixed = await fitStage(net, samples, { stage, epochs: 2, batchSize: 8, learningRate: 1e-2, classes: 2, masterSize: 40, rand });
      assert.equal(fixed.stop, 'fixed');
      assert.equal(fixed.results.length, 2);
    } finally {
      disposeNet(net);
    }
    assert.ok(tf.memory().numTensors < 10_000);
  });

  it('the report says whether the run converged, and warns when held-out accuracy is near chance or far below training accuracy', () => {
    assert.deepEqual(judge([record({ stop: 'converged', trainAccuracy: 0.95 })], 0.92, 4), {
      converged: true,
      convergence: 'converged',
      alerts: [],
    });
    const fixed = judge([record({ stop: 'fixed' })], 0.9, 4);
    assert.equal(fixed.converged, null);
    assert.match(fixed.convergence, /fixed schedule \(--epochs\): convergence not checked/);
    const timed = judge([record({ stop: 'converged' }), record({ stop: 'time-budget' })], 0.9, 4);
    assert.equal(timed.converged, false);
    assert.match(timed.convergence, /did not converge: the time budget ran out \(raise --time-budget\)/);
    assert.match(judge([record({ stop: 'max-epochs' })], 0.9, 4).convergence, /raise --max-epochs/);
    // 4 labels: chance 25 %; 40 % is near it, 50 % is not.
    const near = judge([record({ stop: 'converged' })], 0.4, 4).alerts;
    assert.equal(near.length, 1);
    assert.match(near[0], /held-out accuracy 40\.0 % is near chance \(25\.0 %\)/);
    assert.deepEqual(judge([record({ stop: 'converged' })], 0.5, 4).alerts, []);
    const overfit = judge([record({ stop: 'converged', trainAccuracy: 1 })], 0.7, 4).alerts;
    assert.equal(overfit.length, 1);
    assert.match(overfit[0], /held-out accuracy 70\.0 % is far below training accuracy 100\.0 %/);
  });

  it('end to end from scratch without --epochs: each stage scored per epoch and stopped by patience or its budget; the last line says which', async () => {
    const data = await tempDir('effitag-converge-');
    await writePatternDataset(data, { patterns: ['plain', 'stripes'], perLabel: 12, size: 40, seed: 6 });
    const out = await tempDir('effitag-converge-out-');
    const lines: string[] = [];
    const base = {
      source: folderSource(data),
      name: 'conv',
      base: 'custom-w0.25-d0.25-r32',
      stages: 2,
      batchSize: 8,
      log: (l: string) => lines.push(l),
    };
    const { report } = await train({ ...base, out: join(out, 'a'), maxEpochs: 8, patience: 2 });
    assert.equal(report.stages.length, 2);
    for (const s of report.stages) {
      assert.ok(s.stop === 'converged' || s.stop === 'max-epochs', `stage stopped by ${s.stop}`);
      assert.ok(s.epochs >= 1 && s.epochs <= 8);
      if (s.stop === 'max-epochs') assert.equal(s.epochs, 8);
      assert.ok(s.trainAccuracy !== undefined);
      const points = report.epochs.filter((e) => e.stage === s.stage);
      assert.equal(points.length, s.epochs);
      assert.ok(
        points.every((p) => p.valLoss !== undefined && p.valAccuracy !== undefined),
        'every epoch scored on the held-out images',
      );
    }
    // Each stage starts afresh at 1e-2 (carrying the first stage's halved rate on was measured worse),
    // and the report records each epoch's rate.
    const rates = (stage: number) => report.epochs.filter((e) => e.stage === stage).map((e) => e.learningRate!);
    assert.equal(report.stages[0].stop, 'converged');
    assert.equal(rates(0)[0], 1e-2);
    assert.equal(rates(1)[0], 1e-2);
    const last = report.stages.at(-1)!;
    assert.equal(report.converged, last.stop === 'converged');
    assert.match(
      lines.at(-1)!,
      last.stop === 'converged' ? /; converged; report / : /; did not converge: the epoch budget ran out \(raise --max-epochs\)/,
    );

    // A time budget already spent: one epoch per stage, and the run says it did not converge.
    lines.length = 0;
    const timed = await train({ ...base, out: join(out, 'b'), timeBudget: 0.001 });
    assert.deepEqual(
      timed.report.stages.map((s) => [s.epochs, s.stop]),
      [
        [1, 'time-budget'],
        [1, 'time-budget'],
      ],
    );
    assert.equal(timed.report.converged, false);
    assert.match(lines.at(-1)!, /; did not converge: the time budget ran out \(raise --time-budget\)/);

    // The CLI's last line says it too, with the budget flags.
    const cli = await new Promise<{ stdout: string; stderr: string }>((resolve, reject) =>
      execFile(
        process.execPath,
        [
          'bin/effitag.js',
          'train',
          '--data',
          data,
          '--name',
          'conv',
          '--base',
          'custom-w0.25-d0.25-r32',
          '--out',
          join(out, 'c'),
          '--stages',
          '1',
          '--batch-size',
          '8',
          '--max-epochs',
          '3',
          '--time-budget',
          '0.001',
        ],
        (err, stdout, stderr) => (err ? reject(new Error(stderr)) : resolve({ stdout, stderr })),
      ),
    );
    assert.match(cli.stdout, /^conv: [\d.]+ % held-out accuracy, did not converge: the time budget ran out \(raise --time-budget\)/m);
  });
});

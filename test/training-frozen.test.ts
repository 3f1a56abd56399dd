/**
 * Fine-tuning's frozen part on onnxruntime: the network up to the cut, exported with the frozen
 * weights, computes what tfjs computes there, and a fine-tuning stage feeds the learning part from it
 * (every training and held-out batch), learning what it learns with the frozen part on tfjs.
 */
import { before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { planModel } from '../model/plan.ts';
import { randomWeights, seededRandom } from '../model/random-weights.ts';
import { tf, useTfjsBackend } from '../model/tfjs-backend.ts';
import { enableWasmTraining } from '../model/wasm-training.ts';
import { cutBefore } from '../training/train.ts';
import { buildNet, disposeNet, fitStage, frozenOnOnnxruntime, learningInput, predictAll, readWeights } from '../training/trainer.ts';
import { tempDir } from './support/fixtures.ts';
import { noiseSamples, stage32 } from './support/training.ts';

const VARIANT = 'custom-w0.25-d0.25-r32';

describe('fine-tuning with the frozen part on onnxruntime', () => {
  before(async () => {
    const backend = await useTfjsBackend(undefined, () => {});
    if (backend.name === 'wasm') enableWasmTraining();
  });

  it('the frozen part’s output at the cut equals tfjs’; a stage’s batches all run through it and learn the same weights', async () => {
    const work = await tempDir();
    const plan = planModel(VARIANT, { classes: 2 });
    // Two blocks unfrozen: the cut sits inside the network, with convolutions and BatchNorm on both sides.
    const cut = cutBefore(plan, 2);
    const weights = randomWeights(plan, 7);
    const rand = seededRandom(5);
    const samples = noiseSamples(12, rand);
    const stage = stage32(5);
    const fit = async (onOrt: boolean) => {
      const net = buildNet(plan, weights, cut);
      const close = onOrt ? await frozenOnOnnxruntime(net, join(work, 'work')) : async () => {};
      let runs = 0;
      if (net.frozen?.ort) {
        const run = net.frozen.ort.run.bind(net.frozen.ort);
        net.frozen.ort.run = (data, dims) => {
          runs++;
          return run(data, dims);
        };
      }
      try {
        const x = tf.tensor4d(Float32Array.from(samples.slice(0, 4).flatMap((s) => [...s.pixels.slice(0, 32 * 32 * 3)])), [4, 32, 32, 3]);
        const atCut = await learningInput(net, x);
        const cutValues = (await atCut.data()) as Float32Array;
        tf.dispose([x, atCut]);
        const draws = seededRandom(9);
        await fitStage(net, samples, {
          stage,
          epochs: 2,
          batchSize: 4,
          learningRate: 1e-2,
          classes: 2,
          masterSize: 40,
          rand: draws,
          validate: async () => ({ loss: 1, accuracy: 0 }),
          patience: 5,
        });
        const probabilities = await predictAll(net, samples, 40, 32, 6);
        return { cutValues, learned: readWeights(net), probabilities, runs };
      } finally {
        await close();
        disposeNet(net);
      }
    };
    const onTfjs = await fit(false);
    const onOrt = await fit(true);
    // 1 direct call, 2 epochs × 3 training batches, 2 held-out batches.
    assert.equal(onOrt.runs, 1 + 2 * 3 + 2, 'every batch’s frozen part ran on onnxruntime');
    assert.equal(onTfjs.runs, 0);
    const scale = Math.max(...onTfjs.cutValues.map(Math.abs));
    assert.ok(scale > 0, 'the frozen part passes a signal');
    const diff = Math.max(...onTfjs.cutValues.map((v, i) => Math.abs(v - onOrt.cutValues[i])));
    assert.ok(diff <= 1e-4 * scale, `output at the cut differs by ${diff} (scale ${scale})`);
    // The learned part moved, and by the same amount either way.
    let moved = 0;
    for (const [name, w] of onOrt.learned) {
      const before = weights.get(name)!;
      const ref = onTfjs.learned.get(name)!;
      for (let i = 0; i < w.length; i++) {
        moved = Math.max(moved, Math.abs(w[i] - before[i]));
        assert.ok(Math.abs(w[i] - ref[i]) <= 1e-3 * (1 + Math.abs(ref[i])), `${name}[${i}]: ${w[i]} on onnxruntime, ${ref[i]} on tfjs`);
      }
    }
    assert.ok(moved > 1e-3, 'the learning part trained');
    for (const [i, p] of onOrt.probabilities.entries())
      for (let c = 0; c < 2; c++) assert.ok(Math.abs(p[c] - onTfjs.probabilities[i][c]) < 1e-3, `image ${i}`);
  });
});

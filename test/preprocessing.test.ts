import assert from 'node:assert/strict';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { planModel } from '../model/plan.ts';
import { importKerasWeights, loadArtifact } from '../model/weights.ts';
import { assignWeights, buildTfjsModel } from '../model/tfjs-model.ts';
import { useTfjsBackend, tf } from '../model/tfjs-backend.ts';
import { randomWeights } from '../model/random-weights.ts';
import { PUBLISHED_IMAGENET_MEAN as MEAN, PUBLISHED_IMAGENET_STD as STD, writeKerasH5 } from './support/keras-h5-writer.ts';
import { tempDir } from './support/fixtures.ts';

/** Output of the layer that feeds the stem conv, for a constant-colour image. */
async function stemInput(model: tf.LayersModel, layer: string, rgb: [number, number, number], size: number): Promise<Float32Array> {
  const probe = tf.model({ inputs: model.inputs, outputs: model.getLayer(layer).output as tf.SymbolicTensor });
  const image = tf.tidy(() => tf.tensor1d(rgb).reshape([1, 1, 1, 3]).tile([1, size, size, 1]));
  const out = probe.predict(image) as tf.Tensor;
  const data = (await out.data()) as Float32Array;
  tf.dispose([image, out]);
  return data;
}

const RGB: [number, number, number] = [200, 100, 50];

describe('preprocessing inside the model', () => {
  it('V1 file storing std as variance (as published): stem input = (x/255 − mean)/std', async () => {
    await useTfjsBackend();
    const dir = await tempDir();
    const plan = planModel('b0');
    await writeKerasH5(join(dir, 'b0.h5'), plan, { stdAsVariance: true });
    const m = await importKerasWeights(join(dir, 'b0.h5'), { variant: 'b0', out: join(dir, 'art') });
    assert.match(m.source.note ?? '', /std/);
    const built = buildTfjsModel(plan);
    assignWeights(built, (await loadArtifact(join(dir, 'art'))).weights);
    const out = await stemInput(built.model, 'normalization', RGB, plan.resolution);
    for (let c = 0; c < 3; c++) {
      const expected = (RGB[c] / 255 - MEAN[c]) / STD[c];
      assert.ok(Math.abs(out[c] - expected) < 1e-5, `channel ${c}: ${out[c]} vs ${expected}`);
      assert.ok(Math.abs(out[out.length - 3 + c] - expected) < 1e-5);
    }
    built.model.dispose();
  });

  it('normalization "variance" mode keeps a true variance as stored', async () => {
    const dir = await tempDir();
    const plan = planModel('b0');
    await writeKerasH5(join(dir, 'b0.h5'), plan, { stdAsVariance: false });
    const m = await importKerasWeights(join(dir, 'b0.h5'), { variant: 'b0', out: join(dir, 'art') });
    assert.equal(m.source.note, undefined);
    const w = (await loadArtifact(join(dir, 'art'))).weights.get('normalization/variance:0')!;
    assert.ok(Math.abs(w[0] - STD[0] ** 2) < 1e-7);
  });

  // V2-B0's constants live in the code only (no stored weights): the published values, as literals, check them.
  it('V2-B0: constant ImageNet normalisation; V2-S: x/128 − 1', async () => {
    await useTfjsBackend();
    for (const [variant, layer, expected] of [
      ['v2-b0', 'normalization', (x: number, c: number) => (x / 255 - MEAN[c]) / STD[c]],
      ['v2-s', 'rescaling', (x: number) => x / 128 - 1],
    ] as const) {
      const plan = planModel(variant, { resolution: 64 });
      const built = buildTfjsModel(plan);
      assignWeights(built, randomWeights(plan));
      const out = await stemInput(built.model, layer, RGB, 64);
      for (let c = 0; c < 3; c++) assert.ok(Math.abs(out[c] - expected(RGB[c], c)) < 1e-5, `${variant} channel ${c}`);
      built.model.dispose();
    }
  });
});

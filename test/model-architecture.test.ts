import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { planModel, planWeights, correctPad } from '../model/plan.ts';
import { countParams, countMacs } from '../model/stats.ts';
import { compoundCoefficients, decodeVariant, OFFICIAL_VARIANTS, roundFilters, roundRepeats } from '../model/spec.ts';
import { buildTfjsModel } from '../model/tfjs-model.ts';
import { useTfjsBackend, tf } from '../model/tfjs-backend.ts';

// Keras `model.count_params()` of keras.applications, from ../shared/reference/efficientnet.md.
const KERAS_PARAMS: Record<string, [withTop: number, noTop: number]> = {
  b0: [5_330_571, 4_049_571],
  b1: [7_856_239, 6_575_239],
  b2: [9_177_569, 7_768_569],
  b3: [12_320_535, 10_783_535],
  b4: [19_466_823, 17_673_823],
  b5: [30_562_527, 28_513_527],
  b6: [43_265_143, 40_960_143],
  b7: [66_658_687, 64_097_687],
  'v2-b0': [7_200_312, 5_919_312],
  'v2-b1': [8_212_124, 6_931_124],
  'v2-b2': [10_178_374, 8_769_374],
  'v2-b3': [14_467_622, 12_930_622],
  'v2-s': [21_612_360, 20_331_360],
  'v2-m': [54_431_388, 53_150_388],
  'v2-l': [119_027_848, 117_746_848],
};

describe('architecture from data', () => {
  it('covers all 15 official variants', () => {
    assert.deepEqual([...OFFICIAL_VARIANTS].sort(), Object.keys(KERAS_PARAMS).sort());
  });

  for (const [variant, [withTop, noTop]] of Object.entries(KERAS_PARAMS)) {
    it(`${variant}: parameter counts equal Keras (${withTop} with top, ${noTop} without)`, () => {
      assert.equal(countParams(planModel(variant)).total, withTop);
      assert.equal(countParams(planModel(variant, { includeTop: false })).total, noTop);
    });
  }

  it('B0 trainable parameters equal torchvision (total − BN statistics − 7 normalization values)', () => {
    const p = countParams(planModel('b0'));
    assert.equal(p.trainable, 5_288_548);
    assert.equal(p.nonTrainable, 42_023);
  });

  it('multiply-adds match the papers (B0 ≈ 0.39 G, B7 ≈ 37 G, V2-S ≈ 8.4 G)', () => {
    const g = (v: string) => countMacs(planModel(v)) / 1e9;
    assert.ok(Math.abs(g('b0') - 0.39) < 0.01, `b0 ${g('b0')}`);
    assert.ok(Math.abs(g('b7') - 37) < 1.5, `b7 ${g('b7')}`);
    assert.ok(Math.abs(g('v2-s') - 8.4) < 0.2, `v2-s ${g('v2-s')}`);
  });

  it('round_filters and round_repeats follow Keras, including the V1 10 % bump', () => {
    assert.equal(roundFilters(32, 1.0, true), 32);
    assert.equal(roundFilters(32, 1.1, true), 32); // 35.2 → 32 (not below 0.9·35.2)
    assert.equal(roundFilters(1280, 2.0, true), 2560);
    assert.equal(roundFilters(16, 1.4, true), 24); // 22.4 → 24
    assert.equal(roundFilters(12, 1.0, true), 16); // 12 → 16, the minimum-of-divisor rule
    assert.equal(roundFilters(36, 1.0, true), 40); // 40 rounds up as (36+4)//8*8
    assert.equal(roundFilters(20, 1.0, true), 24); // 24 ≥ 0.9·20
    assert.equal(roundFilters(10, 1.0, false), 8);
    assert.equal(roundFilters(100, 0.5, true), 48); // 50 → 48, and 48 ≥ 0.9·50: no bump
    // 17·0.7 = 11.9 rounds to 8 < 0.9·11.9: V1 bumps to 16, V2 keeps 8.
    assert.equal(roundFilters(17, 0.7, true), 16);
    assert.equal(roundFilters(17, 0.7, false), 8);
    assert.equal(roundRepeats(3, 3.1), 10);
    assert.equal(roundRepeats(1, 1.1), 2);
  });

  it('compound coefficient φ: d = 1.2^φ, w = 1.1^φ, r = round(224·1.15^φ)', () => {
    assert.deepEqual(compoundCoefficients(0), { width: 1, depth: 1, resolution: 224, dropout: 0.2 });
    const one = compoundCoefficients(1);
    assert.deepEqual([one.width, one.depth, one.resolution], [1.1, 1.2, 258]);
    const two = compoundCoefficients(2);
    assert.deepEqual([two.width, two.depth, two.resolution], [1.21, 1.44, 296]);
    const spec = decodeVariant('phi-1.5');
    assert.equal(spec.resolution, Math.round(224 * 1.15 ** 1.5));
    assert.equal(spec.origin, 'phi');
    // φ = 0 is B0's architecture exactly.
    assert.equal(countParams(planModel('phi-0')).total, KERAS_PARAMS.b0[0]);
  });

  it('explicit (w, d, r) custom variants and name forms decode; unknown names list the known ones', () => {
    const c = decodeVariant('custom-w1.1-d1.2-r256');
    assert.deepEqual([c.width, c.depth, c.resolution, c.origin], [1.1, 1.2, 256, 'custom']);
    assert.equal(decodeVariant('EfficientNetB3').variant, 'b3');
    assert.equal(decodeVariant('efficientnetv2-s').variant, 'v2-s');
    assert.throws(() => decodeVariant('b9'), /unknown variant "b9"; known: b0, b1/);
    assert.throws(() => decodeVariant('phi-11'), /\[0, 10\]/);
  });

  it('any class count and pooling without top', () => {
    const p = planModel('b0', { classes: 10 });
    assert.equal(countParams(p).total, KERAS_PARAMS.b0[1] + 1280 * 10 + 10);
    assert.equal(planModel('b0', { includeTop: false, pooling: 'max' }).output, 'max_pool');
    assert.equal(planModel('b0', { includeTop: false, pooling: 'none' }).output, 'top_activation');
  });

  it('correct_pad is TF "same" for stride 2: extra padding at bottom/right on even sizes', () => {
    assert.deepEqual(correctPad(224, 224, 3), [
      [0, 1],
      [0, 1],
    ]);
    assert.deepEqual(correctPad(15, 15, 5), [
      [2, 2],
      [2, 2],
    ]);
    assert.deepEqual(correctPad(14, 15, 5), [
      [1, 2],
      [2, 2],
    ]);
    // B1 block6a sees an odd 15×15 map at its native 240 resolution.
    const b1 = planModel('b1');
    const pad = b1.nodes.find((n) => n.name === 'block6a_dwconv_pad')!;
    assert.equal(
      pad.op === 'zeropad' && JSON.stringify(pad.pad),
      JSON.stringify([
        [2, 2],
        [2, 2],
      ]),
    );
    const dw = b1.nodes.find((n) => n.name === 'block6a_dwconv')!;
    assert.deepEqual(dw.outShape, [8, 8, 672]);
  });
});

describe('tfjs LayersModel', () => {
  for (const variant of ['b0', 'v2-b0', 'v2-s']) {
    it(`${variant}: tfjs countParams and trainable weights equal the plan`, async () => {
      await useTfjsBackend();
      const { model, plan } = buildTfjsModel(variant);
      const p = countParams(plan);
      assert.equal(model.countParams(), p.total);
      const trainable = model.trainableWeights.reduce((s, w) => s + w.shape.reduce((a: number, b) => a * (b as number), 1), 0);
      assert.equal(trainable, p.trainable);
      model.dispose();
    });
  }

  it('explicit ZeroPadding2D(correct_pad) + valid conv equals a TF "same" conv numerically', async () => {
    await useTfjsBackend();
    for (const size of [16, 15]) {
      const x = tf.randomNormal([1, size, size, 4], 0, 1, 'float32', 3);
      const k = tf.randomNormal([3, 3, 4, 5], 0, 1, 'float32', 4);
      const pad = correctPad(size, size, 3);
      const explicit = tf.conv2d(tf.pad(x, [[0, 0], [...pad[0]], [...pad[1]], [0, 0]]) as tf.Tensor4D, k as tf.Tensor4D, 2, 'valid');
      const same = tf.conv2d(x as tf.Tensor4D, k as tf.Tensor4D, 2, 'same');
      assert.deepEqual(explicit.shape, same.shape);
      const diff = (await tf.max(tf.abs(tf.sub(explicit, same))).data())[0];
      assert.ok(diff < 1e-4, `size ${size}: max diff ${diff}`);
      tf.dispose([x, k, explicit, same]);
    }
  });

  it('the input shape is static at the variant resolution', () => {
    const { model } = buildTfjsModel('b3');
    assert.deepEqual(model.inputs[0].shape, [null, 300, 300, 3]);
    model.dispose();
  });

  it('weight order of each tfjs layer matches the plan weight shapes', () => {
    const { model, plan } = buildTfjsModel('b0');
    for (const node of plan.nodes) {
      const layer = model.getLayer(node.name);
      assert.deepEqual(
        layer.weights.map((w) => w.shape),
        node.weights.map((w) => [...w.shape]),
        node.name,
      );
    }
    assert.equal(planWeights(plan).length, model.weights.length);
    model.dispose();
  });
});

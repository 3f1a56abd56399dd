import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { planModel, planWeights } from '../model/plan.ts';
import { buildTfjsModel } from '../model/tfjs-model.ts';

/** Weight name → shape, as the plan and the tfjs model both carry them. */
function weightTable(variant: string): Map<string, number[]> {
  return new Map(planWeights(planModel(variant)).map((w) => [w.name, [...w.shape]]));
}

const bn = (layer: string, c: number): [string, number[]][] =>
  ['gamma', 'beta', 'moving_mean', 'moving_variance'].map((w) => [`${layer}/${w}:0`, [c]]);

describe('Keras layer and weight names', () => {
  it('B0: stem, one stride-2 MBConv block (block2a) and the head carry every Keras weight name and shape', () => {
    const weights = weightTable('b0');
    const expected: [string, number[]][] = [
      ['normalization/mean:0', [3]],
      ['normalization/variance:0', [3]],
      ['normalization/count:0', []],
      ['stem_conv/kernel:0', [3, 3, 3, 32]],
      ...bn('stem_bn', 32),
      ['block2a_expand_conv/kernel:0', [1, 1, 16, 96]],
      ...bn('block2a_expand_bn', 96),
      ['block2a_dwconv/depthwise_kernel:0', [3, 3, 96, 1]],
      ...bn('block2a_bn', 96),
      ['block2a_se_reduce/kernel:0', [1, 1, 96, 4]],
      ['block2a_se_reduce/bias:0', [4]],
      ['block2a_se_expand/kernel:0', [1, 1, 4, 96]],
      ['block2a_se_expand/bias:0', [96]],
      ['block2a_project_conv/kernel:0', [1, 1, 96, 24]],
      ...bn('block2a_project_bn', 24),
      ['top_conv/kernel:0', [1, 1, 320, 1280]],
      ...bn('top_bn', 1280),
      ['predictions/kernel:0', [1280, 1000]],
      ['predictions/bias:0', [1000]],
    ];
    for (const [name, shape] of expected) assert.deepEqual(weights.get(name), shape, name);
    // The whole block2a has exactly these weights.
    assert.equal([...weights.keys()].filter((n) => n.startsWith('block2a_')).length, 1 + 4 + 1 + 4 + 4 + 1 + 4);
  });

  it('B0: layer names in Keras graph order, with padding layers only before stride-2 convs', () => {
    const { model } = buildTfjsModel('b0');
    const names = model.layers.map((l) => l.name);
    assert.deepEqual(names.slice(0, 7), [
      'input_1',
      'rescaling',
      'normalization',
      'stem_conv_pad',
      'stem_conv',
      'stem_bn',
      'stem_activation',
    ]);
    assert.deepEqual(
      names.filter((n) => n.startsWith('block2a_')),
      [
        'block2a_expand_conv',
        'block2a_expand_bn',
        'block2a_expand_activation',
        'block2a_dwconv_pad',
        'block2a_dwconv',
        'block2a_bn',
        'block2a_activation',
        'block2a_se_squeeze',
        'block2a_se_reshape',
        'block2a_se_reduce',
        'block2a_se_expand',
        'block2a_se_excite',
        'block2a_project_conv',
        'block2a_project_bn',
      ],
    );
    // block2b: stride 1, in == out → residual with stochastic-depth dropout, no padding layer.
    assert.ok(names.includes('block2b_drop') && names.includes('block2b_add') && !names.includes('block2b_dwconv_pad'));
    // block1a has expand ratio 1: no expand layers.
    assert.ok(!names.includes('block1a_expand_conv'));
    assert.deepEqual(names.slice(-6), ['top_conv', 'top_bn', 'top_activation', 'avg_pool', 'top_dropout', 'predictions']);
    assert.equal(names.filter((n) => /^block\d[a-z]_$/.test(n.slice(0, 8))).length > 0, true);
    model.dispose();
  });

  it('V2-S: Fused-MBConv blocks (expand 1 and expand 4), an MBConv block with dwconv2, stem and head', () => {
    const weights = weightTable('v2-s');
    const expected: [string, number[]][] = [
      ['stem_conv/kernel:0', [3, 3, 3, 24]],
      ...bn('stem_bn', 24),
      // Fused with expand 1: a single k×k project conv + BN (+ project_activation, no weights).
      ['block1a_project_conv/kernel:0', [3, 3, 24, 24]],
      ...bn('block1a_project_bn', 24),
      // Fused with expand 4: k×k strided expand conv, then a 1×1 project conv.
      ['block2a_expand_conv/kernel:0', [3, 3, 24, 96]],
      ...bn('block2a_expand_bn', 96),
      ['block2a_project_conv/kernel:0', [1, 1, 96, 48]],
      ...bn('block2a_project_bn', 48),
      // MBConv: V2 names the depthwise conv dwconv2.
      ['block4a_expand_conv/kernel:0', [1, 1, 64, 256]],
      ...bn('block4a_expand_bn', 256),
      ['block4a_dwconv2/depthwise_kernel:0', [3, 3, 256, 1]],
      ...bn('block4a_bn', 256),
      ['block4a_se_reduce/kernel:0', [1, 1, 256, 16]],
      ['block4a_se_reduce/bias:0', [16]],
      ['block4a_se_expand/kernel:0', [1, 1, 16, 256]],
      ['block4a_se_expand/bias:0', [256]],
      ['block4a_project_conv/kernel:0', [1, 1, 256, 128]],
      ...bn('block4a_project_bn', 128),
      ['top_conv/kernel:0', [1, 1, 256, 1280]],
      ...bn('top_bn', 1280),
      ['predictions/kernel:0', [1280, 1000]],
      ['predictions/bias:0', [1000]],
    ];
    for (const [name, shape] of expected) assert.deepEqual(weights.get(name), shape, name);
    assert.equal([...weights.keys()].filter((n) => n.startsWith('block1a_')).length, 5);
    assert.equal([...weights.keys()].filter((n) => n.startsWith('block2a_')).length, 10);
    // V2 keeps its normalisation constants out of the weights, and uses no explicit padding layers.
    assert.ok(![...weights.keys()].some((n) => n.startsWith('normalization/')));
    const { model } = buildTfjsModel('v2-s');
    const names = model.layers.map((l) => l.name);
    assert.ok(names.includes('block1a_project_activation') && !names.includes('block2a_project_activation'));
    assert.ok(!names.some((n) => n.endsWith('_pad')));
    assert.ok(names.includes('block1b_add') && !names.includes('block2a_add'));
    assert.deepEqual(names.slice(0, 5), ['input_1', 'rescaling', 'stem_conv', 'stem_bn', 'stem_activation']);
    model.dispose();
  });
});

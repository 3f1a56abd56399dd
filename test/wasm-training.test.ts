/**
 * Training on tfjs's wasm backend: the Conv2D and depthwise gradients built from wasm-supported ops
 * (model/wasm-training.ts) equal the pure-JS cpu backend's own kernels, for the kernel sizes,
 * strides and paddings EfficientNet uses; and a tiny compound-scaled network then trains on wasm.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { planModel } from '../model/plan.ts';
import { randomWeights } from '../model/random-weights.ts';
import { tf, useTfjsBackend } from '../model/tfjs-backend.ts';
import { assignWeights, buildTfjsModel } from '../model/tfjs-model.ts';
import { enableWasmTraining } from '../model/wasm-training.ts';

const quiet = () => {};
// Seeds from 1: tfjs takes a seed of 0 for none.
const seeded = (shape: number[], seed: number) => tf.randomNormal(shape, 0, 1, 'float32', seed + 1);

function maxRelativeError(a: Float32Array | Int32Array | Uint8Array, b: Float32Array | Int32Array | Uint8Array): number {
  let max = 0;
  let scale = 1e-6;
  for (let i = 0; i < a.length; i++) scale = Math.max(scale, Math.abs(b[i]));
  for (let i = 0; i < a.length; i++) max = Math.max(max, Math.abs(a[i] - b[i]) / scale);
  return max;
}

// EfficientNet's cases: 1×1 expand/project convs, the 3×3 stride-2 stem after explicit padding
// ('valid'), 3×3 and 5×5 depthwise at stride 1 ('same') and stride 2 ('valid' after padding).
const CASES = [
  { kind: 'conv', k: 1, stride: 1, pad: 'same', h: 8, w: 8 },
  { kind: 'conv', k: 3, stride: 2, pad: 'valid', h: 9, w: 9 },
  { kind: 'conv', k: 3, stride: 1, pad: 'same', h: 7, w: 6 },
  { kind: 'depthwise', k: 3, stride: 1, pad: 'same', h: 8, w: 8 },
  { kind: 'depthwise', k: 5, stride: 1, pad: 'same', h: 7, w: 9 },
  { kind: 'depthwise', k: 3, stride: 2, pad: 'valid', h: 9, w: 9 },
  { kind: 'depthwise', k: 5, stride: 2, pad: 'valid', h: 11, w: 11 },
  { kind: 'depthwise', k: 3, stride: 2, pad: 'same', h: 8, w: 8 },
] as const;

/** The gradients of Σ conv(x, w) ⊙ dy with respect to x and w, on the active backend. */
function gradientsOf(c: (typeof CASES)[number], n: number): { dx: Float32Array; dw: Float32Array } {
  return tf.tidy(() => {
    const x = seeded([2, c.h, c.w, 4], n);
    const w = seeded(c.kind === 'conv' ? [c.k, c.k, 4, 5] : [c.k, c.k, 4, 1], 100 + n);
    const f = (xx: tf.Tensor, ww: tf.Tensor) =>
      c.kind === 'conv'
        ? tf.conv2d(xx as tf.Tensor4D, ww as tf.Tensor4D, c.stride, c.pad)
        : tf.depthwiseConv2d(xx as tf.Tensor4D, ww as tf.Tensor4D, c.stride, c.pad);
    const dy = seeded(f(x, w).shape, 200 + n);
    const [dx, dw] = tf.grads((xx: tf.Tensor, ww: tf.Tensor) => f(xx, ww).mul(dy).sum())([x, w]);
    return { dx: dx.dataSync() as Float32Array, dw: dw.dataSync() as Float32Array };
  });
}

describe('training on the wasm backend', () => {
  it('conv and depthwise gradients equal the cpu backend kernels (1×1, 3×3, 5×5; stride 1 and 2; same and valid)', async () => {
    const reference: { dx: Float32Array; dw: Float32Array }[] = [];
    await useTfjsBackend('cpu', quiet);
    for (const [n, c] of CASES.entries()) reference.push(gradientsOf(c, n));
    await useTfjsBackend('wasm', quiet);
    assert.equal(enableWasmTraining(), true);
    for (const [n, c] of CASES.entries()) {
      const { dx, dw } = gradientsOf(c, n);
      const label = `${c.kind} ${c.k}×${c.k} stride ${c.stride} ${c.pad}`;
      assert.ok(maxRelativeError(dw, reference[n].dw) < 1e-4, `${label}: filter gradient`);
      assert.ok(maxRelativeError(dx, reference[n].dx) < 1e-4, `${label}: input gradient`);
    }
  });

  it('a tiny compound-scaled EfficientNet trains on wasm: the loss on a fixed batch falls', async () => {
    await useTfjsBackend('wasm', quiet);
    assert.equal(enableWasmTraining(), true);
    const plan = planModel('custom-w0.25-d0.25-r32', { classes: 3 });
    const built = buildTfjsModel(plan);
    assignWeights(built, randomWeights(plan, 5));
    built.model.compile({ optimizer: tf.train.adam(3e-3), loss: 'categoricalCrossentropy' });
    const x = tf.randomUniform([12, 32, 32, 3], 0, 255, 'float32', 1);
    const y = tf.oneHot(tf.tensor1d([0, 1, 2, 0, 1, 2, 0, 1, 2, 0, 1, 2], 'int32'), 3);
    const losses: number[] = [];
    for (let step = 0; step < 12; step++) losses.push(Number(await built.model.trainOnBatch(x, y)));
    assert.ok(losses.every(Number.isFinite), JSON.stringify(losses));
    assert.ok(losses.at(-1)! < losses[0] * 0.7, `loss ${losses[0].toFixed(3)} → ${losses.at(-1)!.toFixed(3)}`);
  });
});

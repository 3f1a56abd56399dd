/**
 * The engine's ONNX export takes normalised NCHW pixels (issue 25: the graph starts at the stem
 * convolution, as torchvision's export does, instead of Mul, Add and Transpose passes over the input);
 * every other reader keeps the raw NHWC graph. Both must compute the same function, and the int8 graph
 * must quantize the stem convolution's input, now the graph input itself.
 */
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import * as ort from 'onnxruntime-node';
import { decodeImage, toBatch, toNchwBatch, type DecodedImage } from '../inference/image.ts';
import { ensureOnnx } from '../model/onnx/cache.ts';
import { exportOnnx, inputNormalization } from '../model/onnx/export.ts';
import { ModelProto } from '../model/onnx/schema.ts';
import { planModel } from '../model/plan.ts';
import { randomWeights } from '../model/random-weights.ts';
import { gradientImage, randomArtifact, tempDir } from './support/fixtures.ts';

type Graph = { graph: { node: { op_type: string; input: string[] }[]; input: { name: string }[] } };
const decode = (bytes: Uint8Array) => ModelProto.decode(bytes) as unknown as Graph;

describe('ONNX input layouts', () => {
  it('the NCHW graph (normalised by toNchwBatch) equals the NHWC graph (raw pixels), and starts at the stem convolution', async () => {
    // b0 at a small size: its V1 normalisation (rescale + per-channel mean and variance) is not the identity.
    const plan = planModel('b0', { resolution: 64 });
    const weights = randomWeights(plan, 5);
    const nchw = exportOnnx(plan, weights, { layout: 'nchw' });
    const nhwc = exportOnnx(plan, weights);
    assert.equal(decode(nchw).graph.node[0].op_type, 'Conv');
    assert.deepEqual(decode(nchw).graph.node[0].input[0], 'images');
    assert.deepEqual(
      decode(nhwc)
        .graph.node.slice(0, 3)
        .map((n) => n.op_type),
      ['Mul', 'Add', 'Transpose'],
    );
    const images: DecodedImage[] = await Promise.all([0, 1, 2].map(async (s) => decodeImage(await gradientImage(90, 70, 'png', s), 64)));
    const { scale, shift } = inputNormalization(plan, weights);
    assert.ok(scale.some((a) => Math.abs(a - 1) > 0.01) && shift.some((b) => Math.abs(b) > 0.01), `${scale} ${shift}`);
    // Every intermediate tensor, not only the output: a random network's deep layers barely depend on its input.
    const [nchwProbes, nhwcProbes]: string[][] = [[], []];
    const pa = exportOnnx(plan, weights, { layout: 'nchw', probe: true }, nchwProbes);
    const pb = exportOnnx(plan, weights, { probe: true }, nhwcProbes);
    // The NHWC graph also has its transposed input (to_nchw); every other tensor is in both.
    assert.deepEqual(
      nhwcProbes.filter((p) => !nchwProbes.includes(p)),
      ['to_nchw'],
    );
    const probes = nchwProbes;
    const [a, b] = [await ort.InferenceSession.create(pa), await ort.InferenceSession.create(pb)];
    try {
      const ra = await a.run({ images: new ort.Tensor('float32', toNchwBatch(images, scale, shift), [3, 3, 64, 64]) }, probes);
      const rb = await b.run({ images: new ort.Tensor('float32', toBatch(images), [3, 64, 64, 3]) }, probes);
      assert.ok(probes.length > 50, String(probes.length));
      for (const p of probes) {
        const [x, y] = [ra[p].data as Float32Array, rb[p].data as Float32Array];
        let max = 0,
          scaleOf = 0;
        for (let i = 0; i < x.length; i++) {
          max = Math.max(max, Math.abs(x[i] - y[i]));
          scaleOf = Math.max(scaleOf, Math.abs(y[i]));
        }
        assert.ok(max <= 1e-4 * Math.max(1, scaleOf), `${p}: max |Δ| = ${max} (scale ${scaleOf})`);
      }
      // Not vacuous: the stem sees the images differ.
      const stem = rb[probes.find((p) => p.startsWith('stem'))!].data as Float32Array;
      const third = stem.length / 3;
      assert.ok(
        stem.slice(0, third).some((v, i) => Math.abs(v - stem[third + i]) > 1e-2),
        'the stem tells the images apart',
      );
    } finally {
      await a.release();
      await b.release();
    }
  });

  it('the cache keeps the two layouts apart; the int8 NCHW graph quantizes its input for the stem convolution', async () => {
    const dir = join(await tempDir('effitag-layout-'), 'm');
    await randomArtifact(dir, 'custom-w0.25-d0.25-r32');
    const [x, y] = [await ensureOnnx(dir), await ensureOnnx(dir, { layout: 'nchw' })];
    assert.notEqual(x.path, y.path);
    assert.equal(x.input.layout, 'nhwc');
    assert.equal(y.input.layout, 'nchw');
    assert.deepEqual(decode(await readFile(y.path)).graph.node[0].op_type, 'Conv');

    const plan = planModel('custom-w0.25-d0.25-r32');
    const weights = randomWeights(plan, 7);
    const probes: string[] = [];
    exportOnnx(plan, weights, { probe: true }, probes);
    const ranges = Object.fromEntries(probes.map((p) => [p, [-3, 3] as [number, number]]));
    const int8 = decode(exportOnnx(plan, weights, { layout: 'nchw', quantize: { ranges, ops: 'all', floatSqueezeExcite: false } }));
    const first = int8.graph.node.find((n) => n.input.includes('images'))!;
    assert.equal(first.op_type, 'QuantizeLinear', 'the graph input is quantized before the stem convolution reads it');
    const stem = int8.graph.node.find((n) => n.op_type === 'Conv')!;
    assert.equal(stem.input[0], 'images/dequantize');
  });
});

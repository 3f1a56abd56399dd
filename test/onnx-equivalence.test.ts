import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { stat } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { describe, it } from 'node:test';
import { planModel } from '../model/plan.ts';
import { randomWeights } from '../model/random-weights.ts';
import { writeArtifact } from '../model/weights.ts';
import { ensureOnnx, onnxFileName } from '../model/onnx/cache.ts';
import { ortEngine } from '../inference/ort-engine.ts';
import { tfjsEngine } from '../inference/tfjs-engine.ts';
import { decodeImage, type DecodedImage } from '../inference/image.ts';
import { topK } from '../inference/engine.ts';
import { gradientImage, tempDir } from './support/fixtures.ts';

const quiet = () => {};
// A reduced input size keeps the suite fast. 112 px (not 96) so the last stride-2 convolution sees
// a 7×7 map: odd inputs take the other padding branch (Keras correct_pad, TF 'same'), checked below.
const SIZE = 112;

/**
 * Random weights with a sharpened classifier, so the softmax is peaked and a top-5 comparison
 * means something (near-uniform probabilities would agree trivially).
 */
async function artifact(variant: string, seed: number, includeTop = true): Promise<string> {
  const dir = await tempDir();
  const plan = planModel(variant, { resolution: SIZE, includeTop });
  const weights = randomWeights(plan, seed);
  const kernel = weights.get('predictions/kernel:0');
  if (kernel) for (let i = 0; i < kernel.length; i++) kernel[i] *= 100;
  await writeArtifact(dir, plan, weights, { kind: 'random' });
  return dir;
}

async function images(n: number): Promise<DecodedImage[]> {
  return Promise.all(
    Array.from({ length: n }, async (_, i) => decodeImage(await gradientImage(130 + 17 * i, 100 + 9 * i, 'png', i), SIZE)),
  );
}

describe('ONNX export ≡ tfjs model', () => {
  it(`at ${SIZE} px, stride-2 convolutions see both even and odd inputs (both padding branches are compared)`, () => {
    for (const variant of ['b0', 'v2-b0']) {
      const plan = planModel(variant, { resolution: SIZE });
      const shapes = new Map(plan.nodes.map((n) => [n.name, n.outShape]));
      const sides = plan.nodes
        .filter((n) => (n.op === 'conv' || n.op === 'dwconv') && n.stride === 2)
        .map((n) => {
          const input = plan.nodes.find((m) => m.name === n.inputs[0])!;
          return (input.op === 'zeropad' ? shapes.get(input.inputs[0]) : shapes.get(n.inputs[0]))![0];
        });
      assert.ok(sides.some((h) => h % 2 === 1) && sides.some((h) => h % 2 === 0), `${variant}: stride-2 input sides ${sides.join(', ')}`);
    }
  });

  for (const [variant, seed] of [
    ['b0', 3],
    ['b3', 4],
    ['v2-b0', 5],
  ] as const) {
    it(`${variant}: ort and tfjs give the same top-5 and probabilities within 1e-4`, async () => {
      const dir = await artifact(variant, seed);
      const ort = await ortEngine({ log: quiet }).load(dir);
      const tfjs = await tfjsEngine().load(dir);
      const batch = await images(3);
      const [a, b] = [await ort.classify(batch), await tfjs.classify(batch)];
      for (let i = 0; i < batch.length; i++) {
        const labels = Array.from({ length: 1000 }, (_, k) => String(k));
        const topOrt = topK(a[i], 5, labels),
          topTfjs = topK(b[i], 5, labels);
        assert.deepEqual(
          topOrt.map((p) => p.index),
          topTfjs.map((p) => p.index),
          `image ${i} top-5`,
        );
        assert.ok(topOrt[0].probability > 0.01, `peaked distribution, over 10× uniform (top-1 ${topOrt[0].probability})`);
        let max = 0;
        for (let k = 0; k < 1000; k++) max = Math.max(max, Math.abs(a[i][k] - b[i][k]));
        assert.ok(max < 1e-4, `image ${i}: max |Δp| = ${max}`);
      }
      await ort.dispose();
      await tfjs.dispose();
    });
  }

  it('no-top export: pooled features equal the tfjs no-top model', async () => {
    const dir = await artifact('b0', 9, false);
    const { path } = await ensureOnnx(dir);
    const ort = await import('onnxruntime-node');
    const session = await ort.InferenceSession.create(path);
    const batch = await images(2);
    const pixels = new Float32Array(2 * SIZE * SIZE * 3);
    batch.forEach((img, i) => {
      pixels.set(img.pixels, i * SIZE * SIZE * 3);
    });
    const out = await session.run({ images: new ort.Tensor('float32', pixels, [2, SIZE, SIZE, 3]) });
    assert.deepEqual(out.features.dims, [2, 1280]);
    const { useTfjsBackend, tf } = await import('../model/tfjs-backend.ts');
    const { buildTfjsModel, assignWeights } = await import('../model/tfjs-model.ts');
    const { loadArtifact, planFor } = await import('../model/weights.ts');
    await useTfjsBackend();
    const art = await loadArtifact(dir);
    const built = buildTfjsModel(planFor(art.manifest));
    assignWeights(built, art.weights);
    const expected = (built.model.predict(tf.tensor4d(pixels, [2, SIZE, SIZE, 3])) as import('@tensorflow/tfjs').Tensor).dataSync();
    const got = out.features.data as Float32Array;
    let max = 0,
      scale = 0;
    for (let i = 0; i < got.length; i++) {
      max = Math.max(max, Math.abs(got[i] - expected[i]));
      scale = Math.max(scale, Math.abs(expected[i]));
    }
    assert.ok(max < 1e-4 * Math.max(1, scale), `max |Δ| = ${max} (scale ${scale})`);
    await session.release();
  });

  it('dynamic batch: an image scores the same alone and in a batch', async () => {
    const dir = await artifact('b0', 12);
    const model = await ortEngine({ log: quiet }).load(dir);
    const batch = await images(4);
    const together = await model.classify(batch);
    const alone = await model.classify([batch[2]]);
    for (let k = 0; k < 1000; k++) assert.ok(Math.abs(together[2][k] - alone[0][k]) < 1e-6);
    await model.dispose();
  });

  it('exports are cached beside the weights, keyed by the content hash; the CLI reuses them', async () => {
    const dir = await artifact('b0', 13);
    const first = await ensureOnnx(dir);
    assert.equal(first.cached, false);
    assert.equal(first.path, join(dir, 'onnx', onnxFileName(first.manifest)));
    assert.ok(first.path.includes(first.manifest.sha256.slice(0, 16)));
    const mtime = (await stat(first.path)).mtimeMs;
    const second = await ensureOnnx(dir);
    assert.equal(second.cached, true);
    assert.equal((await stat(second.path)).mtimeMs, mtime);
    const { stdout } = await promisify(execFile)(process.execPath, [
      'bin/effitag.js',
      'weights',
      'export-onnx',
      '--weights',
      dir,
      '--variant',
      'b0',
    ]);
    assert.match(stdout, /^cached .*\.onnx/);
    const out = join(dir, 'explicit.onnx');
    const third = await promisify(execFile)(process.execPath, ['bin/effitag.js', 'weights', 'export-onnx', '--weights', dir, '--out', out]);
    assert.match(third.stdout, /^exported /);
    assert.ok((await stat(out)).size > 5_000_000);
  });
});

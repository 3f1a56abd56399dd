/**
 * Cross-check against an independent implementation: writes, per variant, seeded random weights
 * (Keras names and layouts, as `effitag weights import` produces) and the ONNX graph EffiTag exports
 * from them, for check.py to compare with timm's TensorFlow-compatible EfficientNets.
 *
 *   npx tsx scripts/timm-parity/prepare.ts OUT_DIR [variant[:classes]…]     (default: b0 v2-b0)
 *
 * A smaller classifier (`b1:10`) keeps the files small; the network before it is unchanged.
 *
 * Plain random weights make a network that forgets its input: with BatchNorm statistics that do
 * not match the activations, the signal shrinks layer by layer until every image gives the same
 * output, and a comparison would prove little. So each BatchNorm's moving mean and variance are
 * set, in network order, to the statistics of its actual input on the test images (through the
 * tfjs model built from the same plan), as data-dependent initialisation does. The images are
 * written beside the weights (`images.bin`, float32 NHWC) for check.py to use.
 */
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { SymbolicTensor } from '@tensorflow/tfjs';
import { ensureOnnx } from '../../model/onnx/cache.ts';
import { planModel } from '../../model/plan.ts';
import { randomWeights } from '../../model/random-weights.ts';
import { tf, useTfjsBackend } from '../../model/tfjs-backend.ts';
import { assignWeights, buildTfjsModel } from '../../model/tfjs-model.ts';
import { writeArtifact } from '../../model/weights.ts';

const [outDir, ...requested] = process.argv.slice(2);
if (!outDir) throw new Error('usage: prepare.ts OUT_DIR [variant…]');
const variants = requested.length ? requested : ['b0', 'v2-b0'];
await useTfjsBackend(undefined, (m) => process.stderr.write(`${m}\n`));

/** Test images: colour fields, ramps and stripes of different strength. */
function testImages(size: number, count: number): tf.Tensor4D {
  const data = new Float32Array(count * size * size * 3);
  for (let i = 0; i < count; i++) {
    for (let y = 0; y < size; y++) {
      for (let x = 0; x < size; x++) {
        for (let c = 0; c < 3; c++) {
          const v =
            40 + 50 * ((i + c) % 4) + 80 * ((i % 2 ? x : y) / size) * (c - 1) + 30 * Math.sin(((x + 2 * y) * (i + 2) * Math.PI) / size);
          data[((i * size + y) * size + x) * 3 + c] = Math.min(255, Math.max(0, v));
        }
      }
    }
  }
  return tf.tensor4d(data, [count, size, size, 3]);
}

for (const requestedVariant of variants) {
  const [variant, classes] = requestedVariant.split(':');
  const plan = planModel(variant, classes ? { classes: Number(classes) } : {});
  const weights = randomWeights(plan, 7);
  const built = buildTfjsModel(plan);
  assignWeights(built, weights);
  const images = testImages(plan.spec.resolution, 6);
  for (const node of plan.nodes.filter((n) => n.op === 'bn')) {
    const layer = built.model.getLayer(node.name);
    const probe = tf.model({ inputs: built.model.inputs, outputs: layer.input as SymbolicTensor });
    const stats = tf.tidy(() => {
      const { mean, variance } = tf.moments(probe.predict(images) as tf.Tensor, [0, 1, 2]);
      return [mean.dataSync() as Float32Array, variance.dataSync() as Float32Array];
    });
    weights.set(`${node.name}/moving_mean:0`, Float32Array.from(stats[0]));
    weights.set(`${node.name}/moving_variance:0`, Float32Array.from(stats[1]));
    const current = layer.getWeights();
    layer.setWeights([current[0], current[1], tf.tensor1d(stats[0]), tf.tensor1d(stats[1])]);
  }
  const dir = join(outDir, variant);
  await writeArtifact(dir, plan, weights, { kind: 'random', note: 'timm parity check (BatchNorm statistics calibrated)' });
  await writeFile(join(dir, 'images.bin'), images.dataSync() as Float32Array);
  images.dispose();
  const onnx = await ensureOnnx(dir, { out: join(dir, 'model.onnx') });
  process.stdout.write(`${variant}: ${weights.size} tensors → ${onnx.path}\n`);
}

/** The tfjs engine: the Keras-exact LayersModel on the resolved tfjs backend (tfjs-node-gpu on GPU images). */
import { useTfjsBackend, tf } from '../model/tfjs-backend.ts';
import { assignWeights, buildTfjsModel } from '../model/tfjs-model.ts';
import { loadArtifact, planFor } from '../model/weights.ts';
import type { Engine, LoadedModel } from './engine.ts';
import { toBatch } from './image.ts';

export function tfjsEngine(options: { backend?: string } = {}): Engine {
  return {
    name: 'tfjs',
    async load(weightsDir, { variant } = {}): Promise<LoadedModel> {
      const backend = await useTfjsBackend(options.backend);
      const artifact = await loadArtifact(weightsDir, variant);
      // Its weights.bin is the float model's: running it here would tag with the float network under the int8 name.
      if (artifact.manifest.quantization)
        throw new Error(`${weightsDir} holds an int8 model, which only the ort engine runs (set the tier's engine to ort)`);
      const built = buildTfjsModel(planFor(artifact.manifest));
      assignWeights(built, artifact.weights);
      const { resolution } = built.plan;
      const classes = built.plan.classes;
      if (!classes) throw new Error(`${weightsDir}: weights without a classifier top cannot tag images`);
      let features: tf.LayersModel | undefined;
      return {
        description: `tfjs (${backend.name})`,
        variant: artifact.manifest.variant,
        resolution,
        manifest: artifact.manifest,
        async classify(images) {
          if (images.length === 0) return [];
          const input = tf.tensor4d(toBatch(images), [images.length, resolution, resolution, 3]);
          const output = built.model.predict(input) as tf.Tensor;
          const data = (await output.data()) as Float32Array;
          tf.dispose([input, output]);
          return images.map((_, i) => data.slice(i * classes, (i + 1) * classes));
        },
        async classifyWithFeatures(images) {
          if (images.length === 0) return [];
          // One pass through a second model over the same layers: probabilities and the head's pool.
          features ??= tf.model({
            inputs: built.model.inputs,
            outputs: [built.model.outputs[0], built.model.getLayer('avg_pool').output as tf.SymbolicTensor],
          });
          const input = tf.tensor4d(toBatch(images), [images.length, resolution, resolution, 3]);
          const [probs, pooled] = features.predict(input) as tf.Tensor[];
          const [p, f] = [(await probs.data()) as Float32Array, (await pooled.data()) as Float32Array];
          tf.dispose([input, probs, pooled]);
          const width = pooled.shape[1]!;
          return images.map((_, i) => ({
            probabilities: p.slice(i * classes, (i + 1) * classes),
            features: f.slice(i * width, (i + 1) * width),
          }));
        },
        async dispose() {
          built.model.dispose();
        },
      };
    },
  };
}

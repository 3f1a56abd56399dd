/**
 * Writes weight files in the legacy Keras .h5 layout (as the official keras.applications files are),
 * filled with seeded random values of the right names and shapes. Tests use it because the real
 * files cannot be downloaded here.
 */
import { h5 } from '../../model/keras-h5.ts';
import { planWeights, type ModelPlan } from '../../model/plan.ts';
import { randomWeight, seededRandom } from '../../model/random-weights.ts';

/**
 * The ImageNet statistics the published V1 files store in their Normalization layer, written here
 * as literals (not the code's constants), so a wrong constant in model/spec.ts cannot pass by
 * agreeing with itself. The files store the std where Keras expects the variance.
 */
export const PUBLISHED_IMAGENET_MEAN = [0.485, 0.456, 0.406];
export const PUBLISHED_IMAGENET_STD = [0.229, 0.224, 0.225];

function normalizationWeight(name: string, stdAsVariance: boolean): Float32Array | undefined {
  if (name === 'normalization/mean:0') return Float32Array.from(PUBLISHED_IMAGENET_MEAN);
  if (name === 'normalization/variance:0') return Float32Array.from(PUBLISHED_IMAGENET_STD, (s) => (stdAsVariance ? s : s * s));
  return undefined;
}

export interface WriteOptions {
  seed?: number;
  /** Split `layer_names` into `layer_names0..N` chunks of this many names (Keras does so past 64 KB). */
  splitLayerNamesEvery?: number;
  /** Store the ImageNet std as the normalization variance, as the published V1 files do. Default true. */
  stdAsVariance?: boolean;
  /** Drop this weight from the file. */
  omit?: string;
  /** Write this weight with a wrong shape. */
  misshape?: string;
  /** Add a weight the model does not have. */
  extra?: string;
}

export interface WrittenFile {
  path: string;
  /** What was written, by Keras weight name. */
  values: Map<string, Float32Array>;
}

export async function writeKerasH5(path: string, plan: ModelPlan, options: WriteOptions = {}): Promise<WrittenFile> {
  const lib = await h5();
  const rand = seededRandom(options.seed ?? 1);
  const file = new lib.File(path, 'w');
  const values = new Map<string, Float32Array>();
  try {
    file.create_attribute('backend', 'tensorflow');
    file.create_attribute('keras_version', '2.3.0');
    const layerNames = plan.nodes.map((n) => n.name);
    const extraLayer = options.extra?.split('/')[0];
    if (extraLayer && !layerNames.includes(extraLayer)) layerNames.push(extraLayer);
    if (options.splitLayerNamesEvery) {
      for (let i = 0, k = 0; i < layerNames.length; i += options.splitLayerNamesEvery, k++) {
        file.create_attribute(`layer_names${k}`, layerNames.slice(i, i + options.splitLayerNamesEvery));
      }
    } else {
      file.create_attribute('layer_names', layerNames);
    }
    const byLayer = new Map<string, { name: string; shape: number[] }[]>();
    for (const w of planWeights(plan)) {
      if (w.name === options.omit) continue;
      const layer = w.name.split('/')[0];
      const shape = w.name === options.misshape ? [...w.shape.slice(0, -1), (w.shape.at(-1) ?? 1) + 1] : [...w.shape];
      byLayer.set(layer, [...(byLayer.get(layer) ?? []), { name: w.name, shape }]);
    }
    if (options.extra) {
      const layer = options.extra.split('/')[0];
      byLayer.set(layer, [...(byLayer.get(layer) ?? []), { name: options.extra, shape: [3] }]);
    }
    for (const layer of layerNames) {
      const group = file.create_group(layer);
      const weights = byLayer.get(layer) ?? [];
      // Keras writes an (empty) weight_names attribute on every layer group.
      group.create_attribute(
        'weight_names',
        weights.map((w) => w.name),
        [weights.length],
        weights.length ? undefined : 'S1',
      );
      for (const w of weights) {
        const [, leaf] = w.name.split('/');
        const sub = (group.get(layer) as typeof group | null) ?? group.create_group(layer);
        const data =
          normalizationWeight(w.name, options.stdAsVariance ?? true) ?? randomWeight(w.name, w.shape, rand, options.stdAsVariance ?? true);
        sub.create_dataset({ name: leaf, data, shape: w.shape, dtype: '<f' });
        values.set(w.name, data);
      }
    }
  } finally {
    file.close();
  }
  return { path, values };
}

/**
 * Models by variant for the worker and the router: where each variant's weights are, their marker
 * (`b0@<sha256 prefix>`), and loaded engines, loaded once and kept.
 *
 * The catalog is a directory with one artifact per variant (`DIR/b0/manifest.json`, …), or a single
 * artifact directory (then it serves that one variant).
 */
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Engine, LoadedModel } from '../inference/engine.ts';
import { labelsFor } from '../model/labels.ts';
import { decodeVariant, int8Base, isVariantName } from '../model/spec.ts';
import { loadArtifact, modelHash, type WeightsArtifact, type WeightsManifest } from '../model/weights.ts';
import { timmImportHint } from '../model/weights-timm.ts';
import { combinedMarker, modelMarker } from './marker.ts';

/**
 * What the router and backfills need of the weights: each model's current marker. Weights may be
 * published after the stack is deployed, so a model can be missing for a while: `refresh` learns
 * (or re-checks) one model, and a model found missing is "not published" — its objects wait.
 */
export interface Markers {
  /**
   * The marker objects tagged by this model's current weights carry (`model`: a variant, or a
   * custom model's name). Throws MissingWeightsError for a model not known to be published.
   */
  marker(model: string): string;
  /**
   * Learn the model's marker, or re-check a model found missing (at most once per cache period):
   * false while no weights are published for it. Absent: `marker` alone answers (a local catalog
   * reads its directory on every miss).
   */
  refresh?(model: string): Promise<boolean>;
  /** Where the weights are looked for (`s3://bucket/prefix/` or a directory), for messages. */
  readonly location?: string;
}

/**
 * A custom model's classifier (EfficientNet's top, `predictions`) as a dense layer over the pooled
 * features: what a head-only custom model adds to its base, run on the features of the base's pass.
 */
export interface DenseHead {
  /** [features, classes], row-major (the Keras kernel's layout). */
  kernel: Float32Array;
  bias: Float32Array;
  features: number;
  classes: number;
  /** The custom model's labels, by class. */
  labels: readonly string[];
}

/** The head's class probabilities: softmax(features · kernel + bias). Microseconds for B0's 1,280 × N. */
export function headProbabilities(head: DenseHead, features: Float32Array): Float32Array {
  if (features.length !== head.features) throw new Error(`the head takes ${head.features} features, the pass gave ${features.length}`);
  const logits = new Float64Array(head.classes);
  for (let j = 0; j < head.classes; j++) logits[j] = head.bias[j];
  for (let i = 0; i < head.features; i++) {
    const f = features[i];
    if (f === 0) continue;
    const row = i * head.classes;
    for (let j = 0; j < head.classes; j++) logits[j] += f * head.kernel[row + j];
  }
  let max = -Infinity;
  for (const l of logits) max = Math.max(max, l);
  let sum = 0;
  for (let j = 0; j < logits.length; j++) sum += logits[j] = Math.exp(logits[j] - max);
  return Float32Array.from(logits, (e) => e / sum);
}

const TOP_WEIGHTS = ['predictions/kernel:0', 'predictions/bias:0'];

/**
 * The custom model's head, when the model is head-only on `base`'s very weights: same variant and
 * resolution, float both, and every tensor but the top byte for byte the same (checked on the weights, not on what the
 * manifest says of its training). Undefined otherwise: then it needs a pass of its own.
 */
export function sharedHeadOf(custom: WeightsArtifact, base: WeightsArtifact): DenseHead | undefined {
  const c = custom.manifest,
    b = base.manifest;
  // The same input too: a head on features of another resolution would not be what the model predicts alone.
  if (!c.custom || c.quantization || b.quantization || c.variant !== b.variant || c.resolution !== b.resolution || !c.includeTop)
    return undefined;
  for (const [name, w] of custom.weights) {
    if (TOP_WEIGHTS.includes(name)) continue;
    const other = base.weights.get(name);
    if (!other || other.length !== w.length) return undefined;
    if (!Buffer.from(w.buffer, w.byteOffset, w.byteLength).equals(Buffer.from(other.buffer, other.byteOffset, other.byteLength)))
      return undefined;
  }
  const kernel = custom.weights.get(TOP_WEIGHTS[0]),
    bias = custom.weights.get(TOP_WEIGHTS[1]);
  if (!kernel || !bias?.length || kernel.length % bias.length !== 0) return undefined;
  // Copies: the artifact's buffer (the whole weights.bin) is then free to go.
  return {
    kernel: kernel.slice(),
    bias: bias.slice(),
    features: kernel.length / bias.length,
    classes: bias.length,
    labels: labelsFor(c),
  };
}

export interface ModelCatalog extends Markers {
  /** The models found so far (variants and custom names). */
  variants(): string[];
  load(model: string): Promise<LoadedModel>;
  /**
   * The custom `model`'s head when it is head-only on the `base` model's weights (`sharedHeadOf`):
   * a tier tagging with both then runs one pass. Absent (test doubles), or undefined: two passes.
   */
  sharedHead?(model: string, base: string): Promise<DenseHead | undefined>;
  dispose(): Promise<void>;
}

export class MissingWeightsError extends Error {
  override name = 'MissingWeightsError';
}

/** The marker an object tagged now by these models carries: one model's, or theirs joined (`combinedMarker`). */
export function currentMarker(markers: Pick<Markers, 'marker'>, models: readonly string[]): string {
  return combinedMarker(models.map((m) => markers.marker(m)));
}

/** Are weights published for the model? `refresh` where the markers learn lazily, else `marker`. */
export async function isPublished(markers: Markers, model: string): Promise<boolean> {
  if (markers.refresh) return markers.refresh(model);
  try {
    markers.marker(model);
    return true;
  } catch (err) {
    if (err instanceof MissingWeightsError) return false;
    throw err;
  }
}

/** How to provide a missing model's weights at a location: the fix a "waiting for weights" log line names. */
export function weightsFix(location: string | undefined, model: string): string {
  const publish = `npx effitag weights publish --tiers FILE --weights DIR ${location}`;
  // Lite's artifact is made by `weights import --timm` (no `weights fetch`), an int8 model's by `weights
  // quantize`, into the catalog DIR before either can be published.
  const lite = isVariantName(model) && decodeVariant(model).family === 'lite';
  if (location?.startsWith('s3://'))
    return lite || int8Base(model) !== undefined ? `${weightsFix('DIR', model)}, then ${publish}` : publish;
  const dir = join(location ?? '<weights dir>', model);
  const base = int8Base(model);
  if (base !== undefined)
    return `npx effitag weights quantize --weights ${join(location ?? '<weights dir>', base)} --calibrate IMAGES --out ${dir}`;
  if (!isVariantName(model)) return `put ${model}'s artifact (effitag train --name ${model}) in ${dir}`;
  // Lite has no Keras file for `weights fetch`: its official weights are timm's safetensors.
  return lite ? timmImportHint(model, dir) : `npx effitag weights fetch ${model} --out ${dir}`;
}

/** The catalog key of a manifest: a custom model's name, else its variant. */
/** An int8 artifact (`effitag weights quantize`) is its own model, `NAME-int8`: its folder, tiers' `model:` and its marker say so. */
export const modelId = (manifest: WeightsManifest): string =>
  `${manifest.custom?.name ?? manifest.variant}${manifest.quantization ? '-int8' : ''}`;

/**
 * Models are keyed by variant (the ImageNet classifiers) or by a custom model's name (see
 * `modelFor` in tiers/schema.ts). Without an engine the catalog answers markers only (the router,
 * backfills); `load` then throws.
 */
export function directoryCatalog(dir: string, engine?: Engine): ModelCatalog {
  const manifests = new Map<string, { dir: string; manifest: WeightsManifest }>();
  const read = (d: string) => JSON.parse(readFileSync(join(d, 'manifest.json'), 'utf8')) as WeightsManifest;
  if (existsSync(join(dir, 'manifest.json'))) {
    const m = read(dir);
    manifests.set(modelId(m), { dir, manifest: m });
  }
  const find = (model: string) => {
    const id = isVariantName(model) ? decodeVariant(model).variant : model;
    let entry = manifests.get(id);
    if (!entry && existsSync(join(dir, id, 'manifest.json'))) {
      const manifest = read(join(dir, id));
      if (modelId(manifest) !== id)
        throw new MissingWeightsError(
          `${join(dir, id)} holds ${modelId(manifest)}, not ${id}: a catalog entry's folder is named after its model`,
        );
      entry = { dir: join(dir, id), manifest };
      manifests.set(id, entry);
    }
    if (!entry) throw new MissingWeightsError(`no weights for ${id} under ${dir} (expected ${join(dir, id)}/manifest.json)`);
    return entry;
  };
  const loaded = new Map<string, Promise<LoadedModel>>();
  const heads = new Map<string, Promise<DenseHead | undefined>>();
  return {
    sharedHead(model, base) {
      const [m, b] = [find(model), find(base)];
      // Keyed by both weights: a republished model or base is checked again.
      const key = `${m.manifest.sha256}/${b.manifest.sha256}`;
      let p = heads.get(key);
      if (!p) {
        p = Promise.all([loadArtifact(m.dir), loadArtifact(b.dir)]).then(([ma, ba]) => sharedHeadOf(ma, ba));
        p.catch(() => heads.delete(key));
        heads.set(key, p);
      }
      return p;
    },
    location: dir,
    marker: (model) => {
      const { manifest } = find(model);
      return modelMarker(modelId(manifest), modelHash(manifest));
    },
    variants: () => [...manifests.keys()],
    load(model) {
      const { dir: d, manifest } = find(model);
      const id = modelId(manifest);
      let p = loaded.get(id);
      if (!p) {
        if (!engine) throw new Error(`this catalog of ${dir} has no engine: it answers markers only`);
        p = engine.load(d, { variant: manifest.variant });
        p.catch(() => loaded.delete(id));
        loaded.set(id, p);
      }
      return p;
    },
    async dispose() {
      for (const p of loaded.values()) await (await p).dispose().catch(() => {});
      loaded.clear();
    },
  };
}

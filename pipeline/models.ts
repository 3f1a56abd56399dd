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
import { decodeVariant, isVariantName } from '../model/spec.ts';
import type { WeightsManifest } from '../model/weights.ts';
import { modelMarker } from './marker.ts';

export interface ModelCatalog {
  /** The marker objects tagged by this variant's current weights carry. */
  /** `model`: a variant, or a custom model's name. */
  marker(model: string): string;
  /** The models found so far (variants and custom names). */
  variants(): string[];
  load(model: string): Promise<LoadedModel>;
  dispose(): Promise<void>;
}

export class MissingWeightsError extends Error {
  override name = 'MissingWeightsError';
}

/** The catalog key of a manifest: a custom model's name, else its variant. */
export const modelId = (manifest: WeightsManifest): string => manifest.custom?.name ?? manifest.variant;

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
  return {
    marker: (model) => {
      const { manifest } = find(model);
      return modelMarker(modelId(manifest), manifest.sha256);
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

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
import { decodeVariant, int8Base, isVariantName } from '../model/spec.ts';
import { modelHash, type WeightsManifest } from '../model/weights.ts';
import { modelMarker } from './marker.ts';

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

export interface ModelCatalog extends Markers {
  /** The models found so far (variants and custom names). */
  variants(): string[];
  load(model: string): Promise<LoadedModel>;
  dispose(): Promise<void>;
}

export class MissingWeightsError extends Error {
  override name = 'MissingWeightsError';
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
  if (location?.startsWith('s3://')) return `npx effitag weights publish --tiers FILE --weights DIR ${location}`;
  const dir = join(location ?? '<weights dir>', model);
  const base = int8Base(model);
  if (base !== undefined)
    return `npx effitag weights quantize --weights ${join(location ?? '<weights dir>', base)} --calibrate IMAGES --out ${dir}`;
  return isVariantName(model)
    ? `npx effitag weights fetch ${model} --out ${dir}`
    : `put ${model}'s artifact (effitag train --name ${model}) in ${dir}`;
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
  return {
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

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
import { decodeVariant } from '../model/spec.ts';
import type { WeightsManifest } from '../model/weights.ts';
import { modelMarker } from './marker.ts';

export interface ModelCatalog {
  /** The marker objects tagged by this variant's current weights carry. */
  marker(variant: string): string;
  variants(): string[];
  load(variant: string): Promise<LoadedModel>;
  dispose(): Promise<void>;
}

export class MissingWeightsError extends Error {
  override name = 'MissingWeightsError';
}

/** Without an engine the catalog answers markers only (the router, backfills); `load` then throws. */
export function directoryCatalog(dir: string, engine?: Engine): ModelCatalog {
  const manifests = new Map<string, { dir: string; manifest: WeightsManifest }>();
  const read = (d: string) => JSON.parse(readFileSync(join(d, 'manifest.json'), 'utf8')) as WeightsManifest;
  if (existsSync(join(dir, 'manifest.json'))) {
    const m = read(dir);
    manifests.set(m.variant, { dir, manifest: m });
  }
  const find = (variant: string) => {
    const v = decodeVariant(variant).variant;
    let entry = manifests.get(v);
    if (!entry && existsSync(join(dir, v, 'manifest.json'))) {
      entry = { dir: join(dir, v), manifest: read(join(dir, v)) };
      manifests.set(v, entry);
    }
    if (!entry) throw new MissingWeightsError(`no weights for ${v} under ${dir} (expected ${join(dir, v)}/manifest.json)`);
    return entry;
  };
  const loaded = new Map<string, Promise<LoadedModel>>();
  return {
    marker: (variant) => {
      const { manifest } = find(variant);
      return modelMarker(manifest.variant, manifest.sha256);
    },
    variants: () => [...manifests.keys()],
    load(variant) {
      const { dir: d, manifest } = find(variant);
      let p = loaded.get(manifest.variant);
      if (!p) {
        if (!engine) throw new Error(`this catalog of ${dir} has no engine: it answers markers only`);
        p = engine.load(d, { variant: manifest.variant });
        p.catch(() => loaded.delete(manifest.variant));
        loaded.set(manifest.variant, p);
      }
      return p;
    },
    async dispose() {
      for (const p of loaded.values()) await (await p).dispose().catch(() => {});
      loaded.clear();
    },
  };
}

/**
 * Current model markers from published weight manifests (what the deployed router and backfills
 * compare against), learned lazily, one model at a time: a stack is deployed before its weights are
 * published (the README's order), so a model may be missing for a while. A missing manifest is
 * remembered for `ttlMs` and then read again, so publishing takes effect without a redeploy or a
 * restart; a found marker is kept (new weights reach the router as its instances cycle, as before).
 */
import type { S3Client } from '@aws-sdk/client-s3';
import { modelMarker } from '../marker.ts';
import { MissingWeightsError, modelId, type Markers } from '../models.ts';
import { modelHash } from '../../model/weights.ts';
import { readPublishedManifest } from './s3-weights.ts';

/** How long a missing manifest is believed missing before it is read again. */
export const MARKER_MISSING_TTL_MS = 60_000;

/**
 * Markers read from `location` as models are asked for. `refresh(model)` reads a model's manifest
 * the first time, and again once `ttlMs` has passed since it was found missing; concurrent asks
 * share one read. Errors other than "not published" are thrown (the caller retries).
 */
export function s3Markers(
  s3: S3Client,
  location: string,
  options: { ttlMs?: number; now?: () => number } = {},
): Markers & { refresh(model: string): Promise<boolean> } {
  const ttlMs = options.ttlMs ?? MARKER_MISSING_TTL_MS;
  const now = options.now ?? Date.now;
  const known = new Map<string, string>();
  const missingSince = new Map<string, number>();
  const reading = new Map<string, Promise<boolean>>();
  const read = (model: string): Promise<boolean> => {
    let p = reading.get(model);
    if (!p) {
      p = readPublishedManifest(s3, location, model)
        .then((manifest) => {
          if (!manifest) {
            missingSince.set(model, now());
            return false;
          }
          known.set(model, modelMarker(modelId(manifest), modelHash(manifest)));
          missingSince.delete(model);
          return true;
        })
        .finally(() => reading.delete(model));
      reading.set(model, p);
    }
    return p;
  };
  return {
    location,
    marker(model) {
      const m = known.get(model);
      if (!m) throw new MissingWeightsError(`no published weights for ${model} under ${location}`);
      return m;
    },
    async refresh(model) {
      if (known.has(model)) return true;
      const since = missingSince.get(model);
      if (since !== undefined && now() - since < ttlMs) return false;
      return read(model);
    },
  };
}

/** Markers of the given models, read now (those not published stay missing until asked again). */
export async function markersFromS3(s3: S3Client, location: string, models: readonly string[]): Promise<Markers> {
  const markers = s3Markers(s3, location);
  for (const model of models) await markers.refresh(model);
  return markers;
}

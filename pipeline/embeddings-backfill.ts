/**
 * `effitag backfill --embeddings`: add what objects tagged before embeddings and perceptual hashes
 * existed lack — a vector in their model's space (the VectorIndex) and a perceptual hash in their
 * index record — from here, without tagging them again: each such object is downloaded and decoded
 * as the worker decodes it, and, for a vector, run through the model that tagged it (its current
 * weights: an object tagged by older weights is left for `backfill --model-older-than`).
 *
 * Reads the bucket's listing and the tag index; writes only vectors and index records, never the
 * objects. A dry run reads no image: it counts what would be done, per tier and model, for the price.
 */
import { messageOf } from '../base/errors.ts';
import { decodeImage, ImageError } from '../inference/image.ts';
import { perceptualHash } from '../inference/perceptual-hash.ts';
import { routeObject } from '../tiers/route.ts';
import type { TiersFile } from '../tiers/schema.ts';
import { listingSkip } from './backfill.ts';
import { mapLimit } from './concurrency.ts';
import { indexedObject, modelOfSpace, taggingFromMetadata, unitVector } from './index-writes.ts';
import { markerParts } from './marker.ts';
import type { ModelCatalog } from './models.ts';
import { type ObjectHead, StoreError, type ObjectStore, type VectorIndex } from './ports.ts';
import type { IndexRecord, TagIndex } from './tag-index.ts';

export interface EmbeddingsBackfillDeps {
  store: ObjectStore;
  index: TagIndex;
  /** Absent: the stack keeps no vectors; only hashes are added. */
  vectors?: VectorIndex;
  tiers: TiersFile;
  /** Markers (and, unless a dry run, the engines) of the stack's models. */
  models: ModelCatalog;
  onProgress?: (report: EmbeddingsBackfillReport) => void;
}

export interface EmbeddingsBackfillOptions {
  bucket: string;
  prefix?: string;
  dryRun?: boolean;
  /** Objects worked on at once (download, decode, infer). Default 4. */
  concurrency?: number;
  signal?: AbortSignal;
}

export interface EmbeddingsBackfillReport {
  listed: number;
  /** Vectors stored (dry run: that would be). */
  vectors: number;
  /** Hashes added to index records (dry run: that would be). */
  hashes: number;
  /** Objects that need an inference (a vector), by tier and variant: what the price is of. */
  byTierVariant: Record<string, Record<string, number>>;
  bytesByTierVariant: Record<string, Record<string, number>>;
  /** Objects that need only a decode (a hash, no vector). */
  decodeOnly: number;
  skipped: Record<string, number>;
  errors: number;
  errorSamples: string[];
  complete: boolean;
}

const inc = (m: Record<string, number>, k: string, by = 1) => {
  m[k] = (m[k] ?? 0) + by;
};

/** What one tagged object lacks: a vector (in `space`), a hash, or nothing; or why it is left alone. */
async function lacks(
  deps: EmbeddingsBackfillDeps,
  bucket: string,
  key: string,
  eTag: string,
): Promise<{ skip: string } | { record: IndexRecord; space: string; tier: string; vector: boolean; hash: boolean }> {
  const record = await deps.index.get(bucket, key);
  if (!record) return { skip: 'not-indexed' };
  if (record.failed) return { skip: 'failed' };
  // Overwritten since it was tagged: the pipeline tags (and embeds) the new version.
  if (record.eTag !== eTag) return { skip: 'changed' };
  // A two-model tagging (ImageNet and a custom model) embeds with its first model: the space is that part.
  const parts = markerParts(record.marker);
  const space = parts[0];
  let current: string[];
  try {
    current = parts.map((part) => deps.models.marker(modelOfSpace(part)));
  } catch {
    return { skip: 'no-weights' };
  }
  // Its tags are of older weights: tagging it again (backfill --model-older-than) also embeds it.
  if (current.some((c, i) => c !== parts[i])) return { skip: 'older-model' };
  const tier = routeObject(deps.tiers, { bucket, key }).tier;
  const wantVector = !!deps.vectors && deps.tiers.tiers[tier].embeddings;
  const vector = wantVector && !(await deps.vectors!.get(space, { bucket, key }));
  const hash = !record.phash;
  if (!vector && !hash) return { skip: wantVector ? 'complete' : 'complete-no-embeddings' };
  return { record, space, tier, vector, hash };
}

export async function backfillEmbeddings(
  deps: EmbeddingsBackfillDeps,
  options: EmbeddingsBackfillOptions,
): Promise<EmbeddingsBackfillReport> {
  const report: EmbeddingsBackfillReport = {
    listed: 0,
    vectors: 0,
    hashes: 0,
    byTierVariant: {},
    bytesByTierVariant: {},
    decodeOnly: 0,
    skipped: {},
    errors: 0,
    errorSamples: [],
    complete: false,
  };
  const { bucket } = options;
  const one = async (o: { key: string; eTag: string; size: number; storageClass?: string }) => {
    report.listed++;
    const listed = listingSkip(o, {});
    if (listed) return inc(report.skipped, listed);
    const need = await lacks(deps, bucket, o.key, o.eTag);
    if ('skip' in need) return inc(report.skipped, need.skip);
    const { record, space, tier, vector, hash } = need;
    if (vector) {
      inc((report.byTierVariant[tier] ??= {}), record.variant);
      inc((report.bytesByTierVariant[tier] ??= {}), record.variant, o.size);
    } else report.decodeOnly++;
    if (options.dryRun) {
      if (vector) report.vectors++;
      if (hash) report.hashes++;
      return;
    }
    const model = await deps.models.load(modelOfSpace(space));
    const limits = deps.tiers.tiers[tier].limits;
    let image: Awaited<ReturnType<typeof decodeImage>>;
    let head: ObjectHead;
    try {
      const got = await deps.store.get({ bucket, key: o.key }, { ifMatch: o.eTag, maxBytes: limits.maxBytes });
      head = got.head;
      image = await decodeImage(got.bytes, model.resolution, limits);
    } catch (err) {
      // Changed or gone since listed: nothing to add to. An image the worker could not decode was never tagged.
      if (err instanceof StoreError && (err.kind === 'precondition' || err.kind === 'not-found')) return inc(report.skipped, 'changed');
      if (err instanceof ImageError) return inc(report.skipped, `undecodable`);
      throw err;
    }
    if (vector) {
      if (!model.classifyWithFeatures) throw new Error(`the ${model.description} engine returns no pooled features`);
      const [out] = await model.classifyWithFeatures([image]);
      const unit = unitVector(out.features);
      if (!unit) inc(report.skipped, 'degenerate-features');
      else {
        await deps.vectors!.put(space, [{ bucket, key: o.key, vector: unit, eTag: o.eTag }]);
        report.vectors++;
      }
    }
    if (hash) {
      // The record is rewritten from the tags the object's metadata carries (as the worker wrote it,
      // leaf and rolled-up tags alike); a tier that writes back to the index only left none there.
      const tagging = taggingFromMetadata(head);
      if (!tagging || tagging.marker !== record.marker) inc(report.skipped, 'hash-tags-in-index-only');
      else {
        await deps.index.put(indexedObject({ bucket, key: o.key }, head, { ...tagging, phash: perceptualHash(image) }, () => new Date()));
        report.hashes++;
      }
    }
  };
  let token: string | undefined;
  do {
    if (options.signal?.aborted) return report;
    const page = await deps.store.list(bucket, { prefix: options.prefix, continuationToken: token, maxKeys: 1000 });
    await mapLimit(page.objects, options.concurrency ?? 4, async (o) => {
      if (options.signal?.aborted) return;
      try {
        await one(o);
      } catch (err) {
        report.errors++;
        if (report.errorSamples.length < 10) report.errorSamples.push(`${o.key}: ${messageOf(err)}`);
      }
      deps.onProgress?.(report);
    });
    token = page.nextContinuationToken;
  } while (token);
  report.complete = !options.signal?.aborted;
  return report;
}

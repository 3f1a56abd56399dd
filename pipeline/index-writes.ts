/**
 * What the pipeline writes to the tag index (pipeline/tag-index.ts): an object's leaf and rolled-up
 * tags, from fresh predictions (the worker) or from tags already written into its metadata (a
 * retried message, `backfill --index`), without running inference again. And to the vector index:
 * each tagged object's embedding, in its model's space.
 */
import { isPerceptualHash } from '../inference/perceptual-hash.ts';
import { isImagenetModel } from '../model/spec.ts';
import { modelFor, type TiersFile } from '../tiers/schema.ts';
import { type ScoredTag, scoreTags } from '../model/tag-hierarchy.ts';
import { decodeTags, KEYS, markerModels } from './marker.ts';
import type { Markers } from './models.ts';
import { messageOf } from '../base/errors.ts';
import type { ObjectHead, ObjectRef, VectorIndex, VectorRef } from './ports.ts';
import type { IndexedObject, PutResult, TagIndex } from './tag-index.ts';

export interface Tagging {
  marker: string;
  at: string;
  predictions: readonly { label: string; probability: number; index?: number }[];
  /** ImageNet-1k labels roll up through the WordNet hierarchy; a custom model's do not. */
  imagenet: boolean;
  /** A two-model tier's custom labels, beside ImageNet's `predictions`: leaf tags only, never rolled up. */
  labels?: readonly { label: string; probability: number; index?: number }[];
  /** The image's perceptual hash (inference/perceptual-hash.ts), when it was computed. */
  phash?: string;
}

/** The model of a marker's first part (a two-model marker's ImageNet variant). */
const variantOf = (marker: string) => markerModels(marker)[0] || marker;

/**
 * The tags of a tagging: ImageNet's rolled up through WordNet, a custom model's as they are. A label
 * both give (a user's "dog" and ImageNet's rolled-up "dog") keeps the higher probability.
 */
function taggingTags(tagging: Tagging): ScoredTag[] {
  const tags = scoreTags(tagging.predictions, { imagenet: tagging.imagenet });
  if (!tagging.labels) return tags;
  const byTag = new Map(tags.map((t) => [t.tag, t]));
  for (const own of scoreTags(tagging.labels, { imagenet: false })) {
    const held = byTag.get(own.tag);
    byTag.set(own.tag, held ? { tag: own.tag, probability: Math.max(held.probability, own.probability), leaf: true } : own);
  }
  return [...byTag.values()];
}

export function indexedObject(ref: ObjectRef, head: ObjectHead, tagging: Tagging, now: () => Date): IndexedObject {
  return {
    bucket: ref.bucket,
    key: ref.key,
    eTag: head.eTag,
    // Upload time orders results; a store that does not say (none of ours) falls back to now.
    lastModified: head.lastModified ?? now(),
    size: head.contentLength,
    variant: variantOf(tagging.marker),
    marker: tagging.marker,
    at: tagging.at,
    tags: taggingTags(tagging),
    ...(tagging.phash ? { phash: tagging.phash } : {}),
  };
}

/** A tagging that failed for good, as the index lists it (under FAILED_TAG, with the reason). */
export function failureEntry(
  ref: ObjectRef,
  head: ObjectHead,
  failure: { model: string; at: string; reason: string },
  now: () => Date,
): IndexedObject {
  return {
    ...indexedObject(ref, head, { marker: failure.model, at: failure.at, predictions: [], imagenet: false }, now),
    failure: failure.reason,
  };
}

/** The tagging an object's metadata records (`effitag-status: tagged`), or undefined. */
export function taggingFromMetadata(head: ObjectHead): Tagging | undefined {
  const m = head.metadata;
  if (m[KEYS.status] !== 'tagged' || !m[KEYS.model] || m[KEYS.etag] !== head.eTag) return undefined;
  const marker = m[KEYS.model];
  // A marker names its models: a variant's ImageNet classifier rolls up through WordNet, a custom model
  // does not; a two-model marker's custom labels are under their own key.
  const models = markerModels(marker);
  const imagenet = isImagenetModel(models[0]);
  const labels = models.length > 1 ? { labels: decodeTags(m[KEYS.labels]) } : {};
  const phash = isPerceptualHash(m[KEYS.phash]) ? m[KEYS.phash] : undefined;
  return { marker, at: m[KEYS.at] ?? '', predictions: decodeTags(m[KEYS.tags]), imagenet, ...labels, ...(phash ? { phash } : {}) };
}

/**
 * Index an object from its metadata, unless the index already holds this version by this model.
 * `missing`: the metadata holds no current tagging (untagged, failed, or tagged before an overwrite).
 */
export async function indexFromMetadata(
  index: TagIndex,
  ref: ObjectRef,
  head: ObjectHead,
  now: () => Date,
): Promise<PutResult | { status: 'missing' }> {
  const tagging = taggingFromMetadata(head);
  const held = await index.get(ref.bucket, ref.key);
  // No tags on the object: indexed anyway when its tier writes back to the index only.
  if (!tagging) return held?.eTag === head.eTag ? { status: 'unchanged' } : { status: 'missing' };
  if (held && held.eTag === head.eTag && held.marker === tagging.marker) return { status: 'unchanged' };
  return index.put(indexedObject(ref, head, tagging, now));
}

/**
 * Pooled features scaled to unit length (so a dot product is the cosine), or undefined when they
 * cannot be (all zero, or not finite): such a vector would match nothing, or everything.
 */
export function unitVector(features: Float32Array): Float32Array | undefined {
  let sum = 0;
  for (const v of features) sum += v * v;
  const norm = Math.sqrt(sum);
  if (!(norm > 0) || !Number.isFinite(norm)) return undefined;
  const out = new Float32Array(features.length);
  for (let i = 0; i < features.length; i++) out[i] = features[i] / norm;
  return out;
}

/** One tagged object version's embedding; no `space`/`vector`: its tier stores none (an old one goes). */
export interface VectorWrite {
  ref: VectorRef;
  eTag: string;
  space?: string;
  vector?: Float32Array;
}

export interface VectorWriteFailure {
  action: 'put' | 'remove';
  space: string;
  refs: VectorRef[];
  error: string;
}

/** The model a space belongs to: `b0@1a2b3c4d5e6f` → `b0`. */
export const modelOfSpace = (space: string): string => (space.lastIndexOf('@') > 0 ? space.slice(0, space.lastIndexOf('@')) : space);

/**
 * The spaces the tiers write to now: each model's current marker (models without published weights
 * are left out). What an overwrite or a removal must clear, without listing the vector index (on S3
 * Vectors, listing spaces reads every vector).
 */
export function tierSpaces(tiers: TiersFile, markers: Markers): string[] {
  const spaces = new Set<string>();
  for (const tier of Object.values(tiers.tiers))
    for (const variant of tier.variants)
      try {
        spaces.add(markers.marker(modelFor(tier, variant)));
      } catch {
        // Not published yet: nothing of it is stored.
      }
  return [...spaces].sort();
}

/**
 * Store each object's vector in its space (one call per space), after taking the object out of the
 * spaces of the tiers' other models (`spaces`): an overwrite replaces the vector, also when the new
 * version is tagged by another model or on a tier without embeddings (then it leaves every space).
 * The same model's older weights need nothing: a space is a model's index, and the object's vector
 * there is replaced. Failures are returned, never thrown: the caller decides (the worker keeps the
 * tags and logs them).
 */
export async function writeVectors(
  index: VectorIndex,
  writes: readonly VectorWrite[],
  spaces: readonly string[],
): Promise<{ stored: number; failed: VectorWriteFailure[] }> {
  const failed: VectorWriteFailure[] = [];
  let stored = 0;
  for (const space of spaces) {
    const model = modelOfSpace(space);
    const stale = writes.filter((w) => !w.space || modelOfSpace(w.space) !== model).map((w) => w.ref);
    if (!stale.length) continue;
    try {
      await index.remove(space, stale);
    } catch (err) {
      failed.push({ action: 'remove', space, refs: stale, error: messageOf(err) });
    }
  }
  const bySpace = new Map<string, VectorWrite[]>();
  for (const w of writes) if (w.space && w.vector) bySpace.set(w.space, [...(bySpace.get(w.space) ?? []), w]);
  for (const [space, ws] of bySpace) {
    try {
      await index.put(
        space,
        ws.map((w) => ({ ...w.ref, vector: w.vector!, eTag: w.eTag })),
      );
      stored += ws.length;
    } catch (err) {
      failed.push({ action: 'put', space, refs: ws.map((w) => w.ref), error: messageOf(err) });
    }
  }
  return { stored, failed };
}

/**
 * What the pipeline writes to the tag index (pipeline/tag-index.ts): an object's leaf and rolled-up
 * tags, from fresh predictions (the worker) or from tags already written into its metadata (a
 * retried message, `backfill --index`), without running inference again.
 */
import { isPerceptualHash } from '../inference/perceptual-hash.ts';
import { isVariantName } from '../model/spec.ts';
import { scoreTags } from '../model/tag-hierarchy.ts';
import { decodeTags, KEYS } from './marker.ts';
import type { ObjectHead, ObjectRef } from './ports.ts';
import type { IndexedObject, PutResult, TagIndex } from './tag-index.ts';

export interface Tagging {
  marker: string;
  at: string;
  predictions: readonly { label: string; probability: number; index?: number }[];
  /** ImageNet-1k labels roll up through the WordNet hierarchy; a custom model's do not. */
  imagenet: boolean;
  /** The image's perceptual hash (inference/perceptual-hash.ts), when it was computed. */
  phash?: string;
}

const variantOf = (marker: string) => marker.slice(0, marker.lastIndexOf('@')) || marker;

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
    tags: scoreTags(tagging.predictions, { imagenet: tagging.imagenet }),
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
  // A marker names its model: a variant's ImageNet classifier rolls up through WordNet, a custom model does not.
  const imagenet = isVariantName(marker.slice(0, marker.lastIndexOf('@')));
  const phash = isPerceptualHash(m[KEYS.phash]) ? m[KEYS.phash] : undefined;
  return { marker, at: m[KEYS.at] ?? '', predictions: decodeTags(m[KEYS.tags]), imagenet, ...(phash ? { phash } : {}) };
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

/**
 * Writing results back onto the object.
 * - `metadata`: CopyObject onto itself with REPLACE (ports: replaceMetadata), every user key kept,
 *   guarded by If-Match on the ETag that was read: a 412 means a newer upload, which has its own event.
 * - `tags`: object tags merged with the user's (S3 allows 10 per object): EffiTag's two tags
 *   (`effitag-tags`, `effitag-model`) replace earlier EffiTag tags and never push out a user's tag.
 *   PutObjectTagging rewrites no data, makes no new version and fires no ObjectCreated event.
 * - `both`: metadata, then tags.
 * - `index`: nothing on the object (no CopyObject, no new version, no event); the tag index
 *   (pipeline/tag-index.ts) holds the result, as it does in every mode where the stack has one.
 */
import type { Prediction } from '../inference/engine.ts';
import { asciiLabel, encodeFailed, encodeTagged, KEYS } from './marker.ts';
import type { ObjectHead, ObjectRef, ObjectStore } from './ports.ts';

export type WriteBackMode = 'metadata' | 'tags' | 'both' | 'index';
export const MAX_OBJECT_TAGS = 10;
const TAG_VALUE_MAX = 256;

/**
 * `written`: the object carries the result (metadata, object tags or both). Not written: no room on
 * the object (the user's metadata leaves less than a tag in the 2 KB, or 10 user tags); the worker
 * then tags through the index, or records why (never silence, never `tagged` without tags).
 */
export type WriteResult =
  | { written: true; tagsDropped: number; note?: string }
  | { written: false; reason: 'metadata-budget' | 'tag-limit' };

/** Tag values allow letters, digits, spaces and + - = . _ : / @ only. */
const tagSafe = (s: string) =>
  s
    .replace(/[^\p{L}\p{N} +\-=._:/@]/gu, ' ')
    .replace(/\s+/g, ' ')
    .trim();

export function mergeTags(
  existing: Record<string, string>,
  predictions: readonly Prediction[],
  model: string,
  labels?: readonly Prediction[],
): { tags: Record<string, string>; added: number } | undefined {
  const user = Object.fromEntries(Object.entries(existing).filter(([k]) => !k.startsWith('effitag-')));
  const room = MAX_OBJECT_TAGS - Object.keys(user).length;
  if (room <= 0) return undefined;
  const value = (list: readonly Prediction[]) => {
    let v = '';
    for (const p of list) {
      const part = `${tagSafe(asciiLabel(p.label).replace(/_/g, ' '))}:${p.probability.toFixed(2)}`;
      const next = v ? `${v} / ${part}` : part;
      if (next.length > TAG_VALUE_MAX) break;
      v = next;
    }
    return v;
  };
  // As many of EffiTag's tags as there is room for, in this order: the tags, a two-model tier's
  // custom labels, the marker.
  const candidates: [string, string][] = [
    [KEYS.tags, value(predictions)],
    ...(labels ? ([[KEYS.labels, value(labels)]] as [string, string][]) : []),
    [KEYS.model, tagSafe(model)],
  ];
  const ours = Object.fromEntries(candidates.slice(0, room));
  return { tags: { ...user, ...ours }, added: Object.keys(ours).length };
}

export async function writeTagged(
  store: ObjectStore,
  ref: ObjectRef,
  head: ObjectHead,
  mode: WriteBackMode,
  predictions: readonly Prediction[],
  fixed: { model: string; at: string; etag: string; phash?: string },
  /** A two-model tier's custom labels (beside ImageNet's `predictions`): `effitag-labels`. */
  labels?: readonly Prediction[],
): Promise<WriteResult> {
  let tagsDropped = 0;
  let metadataFull = false;
  if (mode === 'metadata' || mode === 'both') {
    const encoded = encodeTagged(head.metadata, predictions, fixed, labels);
    if (!encoded && mode === 'metadata') return { written: false, reason: 'metadata-budget' };
    if (encoded) {
      await store.replaceMetadata(ref, head, encoded.metadata, fixed.etag);
      tagsDropped = encoded.tagsDropped;
    } else metadataFull = true; // `both`: the object tags still carry the result
  }
  if (mode === 'tags' || mode === 'both') {
    const merged = mergeTags(await store.getTags(ref), predictions, fixed.model, labels);
    if (!merged) {
      if (mode === 'tags' || metadataFull) return { written: false, reason: metadataFull ? 'metadata-budget' : 'tag-limit' };
      return { written: true, tagsDropped, note: 'no room for object tags (10 user tags)' };
    }
    await store.putTags(ref, merged.tags);
    if (metadataFull) return { written: true, tagsDropped: 0, note: 'no room in the metadata (2 KB): object tags only' };
  }
  return { written: true, tagsDropped };
}

export async function writeFailure(
  store: ObjectStore,
  ref: ObjectRef,
  head: ObjectHead,
  mode: WriteBackMode,
  fixed: { model: string; at: string; etag: string; reason: string },
): Promise<boolean> {
  if (mode === 'index') return false; // the object is never rewritten: the failure is logged and counted
  if (mode === 'tags') {
    const user = Object.fromEntries(Object.entries(await store.getTags(ref)).filter(([k]) => !k.startsWith('effitag-')));
    if (Object.keys(user).length >= MAX_OBJECT_TAGS) return false;
    await store.putTags(ref, { ...user, [KEYS.status]: tagSafe(`failed: ${fixed.reason}`).slice(0, TAG_VALUE_MAX) });
    return true;
  }
  const metadata = encodeFailed(head.metadata, fixed);
  if (!metadata) return false;
  await store.replaceMetadata(ref, head, metadata, fixed.etag);
  return true;
}

/**
 * EffiTag's user-metadata keys and their encoding. S3 allows 2 KB of user metadata per object (the
 * UTF-8 bytes of all keys and values) and only US-ASCII values, so: labels are reduced to their first
 * synonym and percent-encoded outside printable ASCII; the tag list is truncated to fit the budget
 * left by the user's own keys, which are never touched.
 */
import type { Prediction } from '../inference/engine.ts';

export const KEYS = {
  tags: 'effitag-tags',
  /**
   * A tier that tags with ImageNet and a custom model at once: the custom model's tags (the user's own
   * labels, never rolled up), while `effitag-tags` holds ImageNet's. A custom-only tier writes its tags
   * in `effitag-tags`, as before.
   */
  labels: 'effitag-labels',
  model: 'effitag-model',
  at: 'effitag-at',
  status: 'effitag-status',
  reason: 'effitag-reason',
  /** ETag of the bytes that were classified (a later upload has another). */
  etag: 'effitag-etag',
  /** The image's 64-bit perceptual hash, 16 hex digits (29 bytes with its key): `effitag dupes`. */
  phash: 'effitag-phash',
} as const;

export const METADATA_BUDGET = 2048;

export type Status = 'tagged' | 'failed';

/** `b0@1a2b3c4d5e6f`: the variant and the first 12 hex digits of its weights' SHA-256. */
export function modelMarker(variant: string, weightsSha256: string): string {
  return `${variant}@${weightsSha256.slice(0, 12)}`;
}

/**
 * The marker of a tagging by several models (ImageNet and a custom model): their markers joined by
 * `+`, in the tier's order (`b0@1a2b3c4d5e6f+shapes@0f1e2d3c4b5a`). It changes when any model's weights
 * do, or when a tier adds or drops a model: a backfill then finds the object stale.
 */
export function combinedMarker(markers: readonly string[]): string {
  return markers.join('+');
}

/** The single-model markers a marker is made of (one for most). */
export const markerParts = (marker: string): string[] => marker.split('+');

/** The model each part of a marker names: `b0@1a2b…+shapes@0f1e…` → [`b0`, `shapes`]. */
export const markerModels = (marker: string): string[] =>
  markerParts(marker).map((m) => (m.lastIndexOf('@') > 0 ? m.slice(0, m.lastIndexOf('@')) : m));

export const metadataBytes = (m: Record<string, string>) =>
  Object.entries(m).reduce((s, [k, v]) => s + Buffer.byteLength(k, 'utf8') + Buffer.byteLength(v, 'utf8'), 0);

/** First synonym of a label, printable ASCII (others percent-encoded), no separators. */
export function asciiLabel(label: string): string {
  const first = label.split(',')[0].trim();
  return first.replace(/[^\x20-\x7e]|[%=;]/g, (c) => encodeURIComponent(c)).replace(/ /g, '_');
}

export function userMetadata(metadata: Record<string, string>): Record<string, string> {
  return Object.fromEntries(Object.entries(metadata).filter(([k]) => !k.startsWith('effitag-')));
}

export interface Encoded {
  metadata: Record<string, string>;
  tagsWritten: number;
  tagsDropped: number;
}

/**
 * The metadata to write: the user's keys unchanged, previous EffiTag keys replaced, and as many
 * `label=probability` pairs (most probable first) as fit the 2 KB budget. Returns undefined when not
 * even the fixed EffiTag keys and one tag fit beside the user's.
 */
export function encodeTagged(
  existing: Record<string, string>,
  predictions: readonly Prediction[],
  fixed: { model: string; at: string; etag: string; phash?: string },
  labels?: readonly Prediction[],
): Encoded | undefined {
  // The perceptual hash rides along only where it costs no tag: the tags are what the object is
  // read for, and the index record keeps the hash too (where the stack has an index).
  const { phash, ...plain } = fixed;
  const without = encodeWith(existing, predictions, plain, labels);
  if (!phash) return without;
  const withHash = encodeWith(existing, predictions, fixed, labels);
  return withHash && (!without || withHash.tagsWritten >= without.tagsWritten) ? withHash : without;
}

const tagPart = (p: Prediction) => `${asciiLabel(p.label)}=${p.probability.toFixed(3)}`;

/** As many `label=probability` parts, most probable first, as fit in `room` bytes (`;` between them). */
function fitParts(predictions: readonly Prediction[], room: number): { parts: string[]; used: number } {
  const parts: string[] = [];
  let used = 0;
  for (const p of predictions) {
    const part = tagPart(p);
    const cost = part.length + (parts.length ? 1 : 0);
    if (used + cost > room) break;
    parts.push(part);
    used += cost;
  }
  return { parts, used };
}

function encodeWith(
  existing: Record<string, string>,
  predictions: readonly Prediction[],
  fixed: { model: string; at: string; etag: string; phash?: string },
  labels?: readonly Prediction[],
): Encoded | undefined {
  const base = taggedBase(existing, fixed);
  // A two-model tagging: the custom model's labels under their own key, fitted first (the user's own
  // words), with room kept for ImageNet's first tag; ImageNet's tags take what is left.
  const withLabels = labels !== undefined;
  const room = tagRoom(existing, fixed) - (withLabels ? Buffer.byteLength(KEYS.labels) : 0);
  if (room < 0) return undefined;
  const firstTag = predictions.length ? tagPart(predictions[0]).length : 0;
  const own = fitParts(labels ?? [], room - firstTag);
  const tags = fitParts(predictions, room - own.used);
  // Room for the fixed keys but not one tag (of each model): writing `tagged` so would hide a result.
  if ((!tags.parts.length && predictions.length) || (!own.parts.length && labels?.length)) return undefined;
  return {
    metadata: { ...base, [KEYS.tags]: tags.parts.join(';'), ...(withLabels ? { [KEYS.labels]: own.parts.join(';') } : {}) },
    tagsWritten: tags.parts.length + own.parts.length,
    tagsDropped: predictions.length - tags.parts.length + (labels?.length ?? 0) - own.parts.length,
  };
}

/**
 * Bytes left for `effitag-tags` beside the user's keys and EffiTag's fixed keys (negative: not even
 * those fit). The backfill uses it to tell an object the worker could only tag in the index.
 */
export function tagRoom(existing: Record<string, string>, fixed: { model: string; at: string; etag: string; phash?: string }): number {
  return METADATA_BUDGET - metadataBytes(taggedBase(existing, fixed)) - Buffer.byteLength(KEYS.tags);
}

/** The user's metadata and EffiTag's fixed keys of a tagged object, before its tags. */
function taggedBase(
  existing: Record<string, string>,
  fixed: { model: string; at: string; etag: string; phash?: string },
): Record<string, string> {
  return {
    ...userMetadata(existing),
    [KEYS.status]: 'tagged',
    [KEYS.model]: fixed.model,
    [KEYS.at]: fixed.at,
    [KEYS.etag]: fixed.etag,
    ...(fixed.phash ? { [KEYS.phash]: fixed.phash } : {}),
  };
}

export function encodeFailed(
  existing: Record<string, string>,
  fixed: { model: string; at: string; etag: string; reason: string },
): Record<string, string> | undefined {
  const metadata = {
    ...userMetadata(existing),
    [KEYS.status]: 'failed',
    [KEYS.reason]: fixed.reason.replace(/[^\x20-\x7e]/g, '?').slice(0, 200),
    [KEYS.model]: fixed.model,
    [KEYS.at]: fixed.at,
    [KEYS.etag]: fixed.etag,
  };
  return metadataBytes(metadata) <= METADATA_BUDGET ? metadata : undefined;
}

/** Parse `effitag-tags` back into labels and probabilities. */
export function decodeTags(value: string | undefined): { label: string; probability: number }[] {
  if (!value) return [];
  return value
    .split(';')
    .filter(Boolean)
    .map((part) => {
      const i = part.lastIndexOf('=');
      return { label: decodeURIComponent(part.slice(0, i).replace(/_/g, ' ')), probability: Number(part.slice(i + 1)) };
    });
}

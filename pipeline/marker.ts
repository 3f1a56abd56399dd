/**
 * EffiTag's user-metadata keys and their encoding. S3 allows 2 KB of user metadata per object (the
 * UTF-8 bytes of all keys and values) and only US-ASCII values, so: labels are reduced to their first
 * synonym and percent-encoded outside printable ASCII; the tag list is truncated to fit the budget
 * left by the user's own keys, which are never touched.
 */
import type { Prediction } from '../inference/engine.ts';

export const KEYS = {
  tags: 'effitag-tags',
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
): Encoded | undefined {
  // The perceptual hash rides along only where it costs no tag: the tags are what the object is
  // read for, and the index record keeps the hash too (where the stack has an index).
  const { phash, ...plain } = fixed;
  const without = encodeWith(existing, predictions, plain);
  if (!phash) return without;
  const withHash = encodeWith(existing, predictions, fixed);
  return withHash && (!without || withHash.tagsWritten >= without.tagsWritten) ? withHash : without;
}

function encodeWith(
  existing: Record<string, string>,
  predictions: readonly Prediction[],
  fixed: { model: string; at: string; etag: string; phash?: string },
): Encoded | undefined {
  const base = taggedBase(existing, fixed);
  const room = tagRoom(existing, fixed);
  if (room < 0) return undefined;
  const parts: string[] = [];
  let used = 0;
  for (const p of predictions) {
    const part = `${asciiLabel(p.label)}=${p.probability.toFixed(3)}`;
    const cost = part.length + (parts.length ? 1 : 0);
    if (used + cost > room) break;
    parts.push(part);
    used += cost;
  }
  // Room for the fixed keys but not one tag: writing `tagged` with no tags would hide the result.
  if (!parts.length && predictions.length) return undefined;
  return { metadata: { ...base, [KEYS.tags]: parts.join(';') }, tagsWritten: parts.length, tagsDropped: predictions.length - parts.length };
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

/**
 * The tag index: tag → objects, so "every photo of a dog" is a query, not a HEAD of every object.
 * This module holds the key design and the port; pipeline/aws/dynamo-index.ts implements it on
 * DynamoDB (AWS, or dynalite in the embedded stack).
 *
 * One table, string keys `pk` / `sk`:
 * - an **entry** per (object, tag): pk `T#<bucket>#<tag>#<shard>`, sk `<inverted upload time>#<key>`.
 *   The shard (a hash of the key, SHARDS of them) spreads a tag held by millions of objects over
 *   SHARDS partitions, so no partition is hot; the inverted time sorts each partition newest first.
 *   Every tagged object also has an entry under ALL_TAG (browse everything, newest first); an
 *   object whose tagging failed for good has one entry, under FAILED_TAG, with the reason.
 *   The entry carries all the object's tags and probabilities (`tags`), so several tags (AND) and a
 *   minimum probability are answered from the entries of one tag;
 * - a **record** per object: pk `O#<bucket>#<key>`, sk `O`: its tags, upload time, ETag and marker.
 *   It says which entries to delete when the object is overwritten or removed, and lets the worker
 *   skip an object already indexed by the current model (index-only write-back has no marker on
 *   the object).
 *
 * A search queries every shard of its most specific tag from the cursor on and merges them in sk
 * order; the cursor is the last sk returned, so pages are exact however the shards interleave.
 */
import { type ScoredTag, tagBreadth } from '../model/tag-hierarchy.ts';

export const SHARDS = 16;
/** The pseudo-tag every tagged object has: browsing without a tag. */
export const ALL_TAG = '*';
/** The pseudo-tag of objects whose tagging failed for good (with the reason): the gallery's status view. */
export const FAILED_TAG = '!failed';
const TIME_DIGITS = 13;
const MAX_TIME = 10 ** TIME_DIGITS - 1;

export interface IndexedObject {
  bucket: string;
  key: string;
  eTag: string;
  /** Upload time of the object version: orders results and settles overwrite races. */
  lastModified: Date;
  size: number;
  variant: string;
  /** The model marker (`b0@…`) that produced the tags. */
  marker: string;
  /** When it was tagged. */
  at: string;
  tags: readonly ScoredTag[];
  /** Tagging failed for good (not an image, too large …): indexed under FAILED_TAG only, with this reason. */
  failure?: string;
  /** The image's 64-bit perceptual hash, 16 hex digits (inference/perceptual-hash.ts): `effitag dupes`. */
  phash?: string;
}

export interface IndexRecord {
  eTag: string;
  /** The tagging failed for good (listed under FAILED_TAG). */
  failed: boolean;
  lastModified: Date;
  marker: string;
  at: string;
  variant: string;
  size: number;
  tags: Record<string, number>;
  /** The perceptual hash (absent for objects tagged before hashing, and failures). */
  phash?: string;
}

export interface SearchQuery {
  bucket: string;
  /** Every tag must be present (AND). None: every indexed object. Normalised with normalizeTag. */
  tags: readonly string[];
  prefix?: string;
  /** Minimum probability, for every requested tag. */
  minProbability?: number;
  limit: number;
  /** From a previous page's `cursor`. */
  cursor?: string;
  /**
   * Entries to read at most (beyond one read per shard): a filter that matches little then returns a
   * short (even empty) page with a cursor instead of reading the whole tag. Unset: read until `limit`.
   */
  maxScanned?: number;
}

export interface SearchHit {
  bucket: string;
  key: string;
  eTag: string;
  lastModified: string;
  size: number;
  variant: string;
  at: string;
  /** All the object's tags with their probabilities. */
  tags: Record<string, number>;
  /** Why tagging failed (FAILED_TAG entries only). */
  failure?: string;
}

export interface SearchPage {
  hits: SearchHit[];
  /** Present when there may be more. */
  cursor?: string;
  /** Items the store read to produce this page (what a search costs). */
  scanned: number;
}

export type PutResult = { status: 'indexed'; written: number; deleted: number } | { status: 'stale' } | { status: 'unchanged' };

export interface TagIndex {
  /** Replace the object's entries with these tags; a version older than the one indexed is ignored (`stale`). */
  put(object: IndexedObject): Promise<PutResult>;
  /** Remove the object's entries, unless a version uploaded after `removedAt` is indexed. Returns entries deleted. */
  remove(bucket: string, key: string, removedAt: Date): Promise<number>;
  get(bucket: string, key: string): Promise<IndexRecord | undefined>;
  search(query: SearchQuery): Promise<SearchPage>;
  /** The keys the index holds for a bucket (under a prefix), a page at a time: for pruning what was deleted unseen. */
  keys(bucket: string, options: { prefix?: string; cursor?: string }): Promise<{ keys: string[]; cursor?: string }>;
}

/** FNV-1a of the key, mod SHARDS: stable across runtimes and releases. */
export function shardOf(key: string): number {
  let h = 0x811c9dc5;
  for (const byte of Buffer.from(key, 'utf8')) {
    h ^= byte;
    h = Math.imul(h, 0x01000193) >>> 0;
  }
  return h % SHARDS;
}

export const entryPk = (bucket: string, tag: string, shard: number) => `T#${bucket}#${tag}#${shard}`;
export const recordPk = (bucket: string, key: string) => `O#${bucket}#${key}`;
export const RECORD_SK = 'O';

/** Newest first in ascending order: MAX_TIME − ms, zero-padded, then the key. */
export function entrySk(lastModified: Date, key: string): string {
  return `${String(MAX_TIME - lastModified.getTime()).padStart(TIME_DIGITS, '0')}#${key}`;
}

/** The (pk, sk) of every entry an object version has. */
export function entryKeys(bucket: string, key: string, lastModified: Date, tags: Iterable<string>): { pk: string; sk: string }[] {
  const shard = shardOf(key);
  const sk = entrySk(lastModified, key);
  return [...new Set([ALL_TAG, ...tags])].map((tag) => ({ pk: entryPk(bucket, tag, shard), sk }));
}

/** The tag whose entries a search reads: the most specific one (fewest classes under it). */
export function drivingTag(tags: readonly string[]): string {
  if (!tags.length) return ALL_TAG;
  return [...tags].sort((a, b) => tagBreadth(a) - tagBreadth(b) || a.localeCompare(b))[0];
}

export function encodeCursor(sk: string): string {
  return Buffer.from(JSON.stringify({ sk }), 'utf8').toString('base64url');
}

export function decodeCursor(cursor: string): string {
  try {
    const { sk } = JSON.parse(Buffer.from(cursor, 'base64url').toString('utf8'));
    if (typeof sk !== 'string' || !/^\d{13}#/.test(sk)) throw new Error();
    return sk;
  } catch {
    throw new Error('invalid cursor: pass the cursor a previous page returned');
  }
}

/** The tags a result is shown with: those asked for, then the object's own classes, most probable first (three at most). */
export function headlineTags(tags: Readonly<Record<string, number>>, asked: readonly string[]): { tag: string; p: number }[] {
  const leaves = Object.entries(tags)
    .filter(([t]) => tagBreadth(t) === 1 && !asked.includes(t))
    .sort((a, b) => b[1] - a[1])
    .slice(0, 3);
  return [...asked.filter((t) => tags[t] !== undefined).map((t) => [t, tags[t]] as const), ...leaves].map(([tag, p]) => ({ tag, p }));
}

/** Does an entry's object satisfy the query (the driving tag aside, which the read already chose)? */
export function matches(hit: Pick<SearchHit, 'key' | 'tags'>, query: SearchQuery): boolean {
  if (query.prefix && !hit.key.startsWith(query.prefix)) return false;
  for (const tag of query.tags) {
    const p = hit.tags[tag];
    if (p === undefined || p < (query.minProbability ?? 0)) return false;
  }
  return true;
}

/** A shard stream that may read no further (the search's read budget is spent): `sk` is the last entry it read. */
export interface Stalled {
  stalled: true;
  sk: string;
}
const isStalled = (h: object): h is Stalled => 'stalled' in h;

/**
 * Merge per-shard streams (each ascending by sk) into one page of `limit` hits in sk order.
 * `next(shard)` returns the shard's next matching item, undefined when it is exhausted, or Stalled
 * when the read budget is spent. A stalled shard may still hold matches after its last read entry,
 * so the page ends there: `resumeAfter` is the smallest such sk, everything up to it having been read
 * in every shard (the next page starts after it; it is never before an item returned).
 */
export async function mergeShards<T extends { sk: string }>(
  shards: number,
  next: (shard: number) => Promise<T | Stalled | undefined>,
  limit: number,
): Promise<{ items: T[]; more: boolean; resumeAfter?: string }> {
  const heads: (T | Stalled | undefined)[] = await Promise.all(Array.from({ length: shards }, (_, s) => next(s)));
  const items: T[] = [];
  while (items.length < limit) {
    let best = -1;
    let bound: string | undefined;
    heads.forEach((h, s) => {
      if (!h) return;
      if (isStalled(h)) {
        if (bound === undefined || h.sk < bound) bound = h.sk;
      } else if (best < 0 || h.sk < heads[best]!.sk) best = s;
    });
    if (bound !== undefined && (best < 0 || heads[best]!.sk > bound)) return { items, more: true, resumeAfter: bound };
    if (best < 0) return { items, more: false };
    items.push(heads[best] as T);
    heads[best] = await next(best);
  }
  return { items, more: heads.some(Boolean) };
}

/**
 * Which already-stored objects a backfill wants, and the rule that applies it to an object's marker.
 * Shared by `effitag backfill`, the Step Functions backfill Lambda and the embedded stack's catch-up.
 */
import { KEYS, tagRoom } from './marker.ts';
import type { ObjectHead } from './ports.ts';
import type { IndexRecord } from './tag-index.ts';

/**
 * - 'stale' (default): no marker, or a marker from another model/weights;
 * - 'missing': no marker at all;
 * - 'older': a marker from another model/weights only.
 * Objects whose last attempt failed with the current model are left alone unless `retryFailed`.
 */
export interface BackfillFilter {
  mode: 'stale' | 'missing' | 'older';
  retryFailed?: boolean;
  /** Only objects that route to this tier. */
  onlyTier?: string;
}

export type BackfillDrop = 'current' | 'failed-before' | 'has-marker' | 'no-marker';

/** The filter applied to an object's metadata, given the current marker; undefined = wanted. */
export function backfillDrop(metadata: Record<string, string>, current: string, filter: BackfillFilter): BackfillDrop | undefined {
  const marker = metadata[KEYS.model];
  const failed = metadata[KEYS.status] === 'failed';
  if (marker === current) return failed && filter.retryFailed ? undefined : failed ? 'failed-before' : 'current';
  if (filter.mode === 'missing' && marker) return 'has-marker';
  if (filter.mode === 'older' && !marker) return 'no-marker';
  return undefined;
}

/**
 * Below this many bytes of room for tags beside the user's metadata, the worker may have found no
 * room for one tag (it then tags through the index only): the backfill asks the index. Above it,
 * the metadata alone decides (no index read per untagged object).
 */
export const NEAR_FULL_TAG_ROOM = 256;

/**
 * Does a backfill read this object's tagging from the index? Always for a tier that writes to the
 * index only, or to object tags only (no marker in the metadata; the index records every tagging,
 * and an object with 10 user tags is tagged in the index alone); for a metadata tier, when the
 * object carries no marker and its user metadata leaves (almost) no room: the worker tagged it in
 * the index, and re-running inference on every backfill could never change that.
 */
export function taggingInIndex(writeBack: string, head: Pick<ObjectHead, 'metadata' | 'eTag'>, current: string): boolean {
  if (writeBack === 'index' || writeBack === 'tags') return true;
  if (head.metadata[KEYS.model] || (writeBack !== 'metadata' && writeBack !== 'both')) return false;
  return tagRoom(head.metadata, { model: current, at: new Date(0).toISOString(), etag: head.eTag }) < NEAR_FULL_TAG_ROOM;
}

/**
 * The index's record as the metadata keys the filter reads. An index-only tier: any record of
 * these bytes. Beside the metadata: only a record of this very upload (a re-upload of the same bytes
 * is a new upload, and the index is not wiped by it).
 */
export function indexedState(
  held: IndexRecord | undefined,
  head: Pick<ObjectHead, 'metadata' | 'eTag' | 'lastModified'>,
  writeBack: string,
): Record<string, string> {
  if (!held || held.eTag !== head.eTag) return writeBack === 'index' ? {} : head.metadata;
  if (writeBack !== 'index' && head.lastModified && held.lastModified.getTime() < head.lastModified.getTime()) return head.metadata;
  return { [KEYS.model]: held.marker, [KEYS.status]: held.failed ? 'failed' : 'tagged', [KEYS.etag]: held.eTag };
}

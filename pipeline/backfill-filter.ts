/**
 * Which already-stored objects a backfill wants, and the rule that applies it to an object's marker.
 * Shared by `effitag backfill`, the Step Functions backfill Lambda and the embedded stack's catch-up.
 */
import { KEYS } from './marker.ts';

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

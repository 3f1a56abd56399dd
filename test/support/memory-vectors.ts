/**
 * VectorIndex in memory for the core tests: exact cosine search, one map per space, the same rules
 * as S3 Vectors behind pipeline/aws/s3-vectors.ts (one dimension per space, topK 1-100, put replaces,
 * removing an absent vector is no error).
 */
import { type ImageVector, StoreError, type VectorHit, type VectorIndex, type VectorRef } from '../../pipeline/ports.ts';

const refKey = (r: VectorRef) => `${r.bucket}/${r.key}`;

export class MemoryVectorIndex implements VectorIndex {
  readonly stored = new Map<string, Map<string, ImageVector>>();
  /** Every call, in order (`put b0@… 2`), for tests that check what was written. */
  readonly calls: string[] = [];

  async put(space: string, vectors: readonly ImageVector[]): Promise<void> {
    this.calls.push(`put ${space} ${vectors.length}`);
    if (vectors.length === 0) return;
    const map = this.stored.get(space) ?? new Map<string, ImageVector>();
    const dimension = map.values().next().value?.vector.length ?? vectors[0].vector.length;
    for (const v of vectors) {
      if (v.vector.length !== dimension)
        throw new StoreError(
          'invalid',
          `space ${space} holds ${dimension}-dimension vectors; s3://${v.bucket}/${v.key} has ${v.vector.length}`,
        );
      if (!v.vector.every(Number.isFinite)) throw new StoreError('invalid', `the vector of s3://${v.bucket}/${v.key} is not finite`);
    }
    for (const v of vectors) map.set(refKey(v), { ...v, vector: Float32Array.from(v.vector) });
    this.stored.set(space, map);
  }

  async remove(space: string, refs: readonly VectorRef[]): Promise<void> {
    this.calls.push(`remove ${space} ${refs.length}`);
    const map = this.stored.get(space);
    for (const r of refs) map?.delete(refKey(r));
  }

  async get(space: string, ref: VectorRef): Promise<Float32Array | undefined> {
    const v = this.stored.get(space)?.get(refKey(ref));
    return v ? Float32Array.from(v.vector) : undefined;
  }

  async query(
    space: string,
    vector: Float32Array,
    options: { limit: number; bucket: string; prefix?: string; minScore?: number },
  ): Promise<VectorHit[]> {
    if (!Number.isInteger(options.limit) || options.limit < 1 || options.limit > 100)
      throw new StoreError('invalid', `a similarity query returns 1 to 100 hits; asked for ${options.limit}`);
    const norm = Math.hypot(...vector);
    const hits: VectorHit[] = [];
    for (const v of this.stored.get(space)?.values() ?? []) {
      if (v.bucket !== options.bucket || !v.key.startsWith(options.prefix ?? '')) continue;
      let dot = 0;
      for (let i = 0; i < vector.length; i++) dot += vector[i] * v.vector[i];
      const score = dot / (norm * Math.hypot(...v.vector));
      if (options.minScore !== undefined && score < options.minScore) continue;
      hits.push({ bucket: v.bucket, key: v.key, score });
    }
    return hits.sort((a, b) => b.score - a.score || a.key.localeCompare(b.key)).slice(0, options.limit);
  }

  async spaces(): Promise<string[]> {
    return [...this.stored]
      .filter(([, m]) => m.size > 0)
      .map(([s]) => s)
      .sort();
  }
}

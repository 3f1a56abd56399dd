/**
 * VectorIndex on Amazon S3 Vectors (@aws-sdk/client-s3vectors): deployed, the stack's vector bucket;
 * embedded, the stand-in on loopback (local/s3vectors-server.ts), which speaks the same API, so this
 * is the only client code either way.
 *
 * Layout, within S3 Vectors' limits (checked 2026-12-07 in the S3 User Guide, "Limitations and
 * restrictions", "Vector indexes", "Metadata filtering"):
 * - One index per model (`vectorIndexName`), since an index's dimension and metric cannot change.
 *   Index names are 3-63 characters of a-z 0-9 - . (so `b0` alone is too short): `model-<name>`,
 *   with a hash when the name needs changing to fit. The deploy creates one per model the tiers use.
 *   A space's weights (`b0@1a2b3c4d5e6f`) are a filterable `space` field of each vector, and every
 *   read filters on it, so vectors of other weights of the same model never mix; a vector written
 *   with new weights replaces the object's old one (same vector key).
 * - Vector key: SHA-256 of `bucket/key` in hex (an S3 key alone may be 1,024 bytes, the whole limit
 *   of a vector key, and the bucket must be part of it). Bucket and key are kept in metadata.
 * - Filterable metadata (2 KB per vector): `bucket`, `space`, and `dirs`, the key's folders (`a/`,
 *   `a/b/`, …; the first DIR_LEVELS levels, each at most DIR_BYTES): S3 Vectors has no prefix
 *   operator, but `$eq` on a list matches any element, so a folder prefix is an exact filter.
 *   Any other prefix filters on its deepest such folder, over-fetches (topK 100) and keeps the keys
 *   that start with it: then fewer than `limit` hits may come back although more exist.
 * - Non-filterable metadata (declared at index creation): `key` (up to 1,024 bytes), `etag`.
 * - topK is at most 100 per query; put/delete at most 500 vectors per call, get at most 100.
 */
import { createHash } from 'node:crypto';
import {
  CreateIndexCommand,
  DeleteVectorsCommand,
  GetVectorsCommand,
  type GetVectorsCommandOutput,
  ListIndexesCommand,
  type ListIndexesCommandOutput,
  ListVectorsCommand,
  type ListVectorsCommandOutput,
  PutVectorsCommand,
  QueryVectorsCommand,
  type QueryVectorsCommandOutput,
  S3VectorsClient,
  type S3VectorsServiceException,
} from '@aws-sdk/client-s3vectors';
import { auditCalls } from './audit.ts';
import { regionOf } from './clients.ts';
import { type ImageVector, StoreError, type VectorHit, type VectorIndex, type VectorRef } from '../ports.ts';

export const MAX_TOP_K = 100;
export const MAX_PUT = 500;
export const MAX_DELETE = 500;
export const MAX_GET = 100;
export const MAX_DIMENSION = 4096;
/** Folder levels of a key kept as filterable metadata, and the longest folder kept (bytes). */
export const DIR_LEVELS = 6;
export const DIR_BYTES = 200;
/** Metadata that is stored, not filtered on (declared when an index is created; the deploy declares the same). */
export const NON_FILTERABLE_KEYS = ['key', 'etag'] as const;

const INDEX_NAME = /^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$/;

/** The model of a space: `b0@1a2b3c4d5e6f` → `b0` (a space without weights is its own model). */
export function modelOfSpace(space: string): string {
  const at = space.lastIndexOf('@');
  return at > 0 ? space.slice(0, at) : space;
}

/** The S3 Vectors index of a model: `model-b0`; names that do not fit as they are get a hash of the original. */
export function vectorIndexName(model: string): string {
  if (!model) throw new StoreError('invalid', 'a vector space needs a model name');
  const plain = `model-${model}`;
  if (INDEX_NAME.test(plain) && !plain.includes('..')) return plain;
  const slug = model
    .toLowerCase()
    .replace(/[^a-z0-9.-]+/g, '-')
    .replace(/\.{2,}/g, '.')
    .slice(0, 40);
  return `model-${slug}-${createHash('sha256').update(model).digest('hex').slice(0, 10)}`.replace(/-{2,}/g, '-');
}

/** The vector key of an object: SHA-256 of `bucket/key` (bucket names have no `/`, so it is unambiguous). */
export function vectorKey(ref: VectorRef): string {
  return createHash('sha256').update(`${ref.bucket}/${ref.key}`).digest('hex');
}

/** The folders of a key that are kept as filterable metadata (`a/b/c.jpg` → `a/`, `a/b/`). */
export function keyDirs(key: string): string[] {
  const dirs: string[] = [];
  for (let i = key.indexOf('/'); i >= 0 && dirs.length < DIR_LEVELS; i = key.indexOf('/', i + 1)) {
    const dir = key.slice(0, i + 1);
    if (Buffer.byteLength(dir) > DIR_BYTES) break;
    dirs.push(dir);
  }
  return dirs;
}

/** How a prefix is filtered: on its deepest kept folder, and whether the keys must then be checked (`exact` false). */
export function prefixFilter(prefix: string): { dir?: string; exact: boolean } {
  if (!prefix) return { exact: true };
  const dirs = keyDirs(prefix);
  const dir = dirs.at(-1);
  return { dir, exact: dir === prefix };
}

export interface S3VectorIndexOptions {
  client: S3VectorsClient;
  vectorBucket: string;
  /**
   * Create a space's index on its first put when it is missing (default true). Deployed, the indexes
   * come with the stack and the worker may not create one: a put for a model no tier had at deploy
   * time then fails with a clear error instead.
   */
  createIndexes?: boolean;
}

export interface S3VectorsEndpoints {
  region?: string;
  /** AWS CLI profile (credentials, region), as the S3, SQS and DynamoDB clients take it; absent: the SDK's default chain. */
  profile?: string;
  /** The embedded stand-in; absent for AWS. */
  endpoint?: string;
  credentials?: { accessKeyId: string; secretAccessKey: string };
}

/**
 * An S3 Vectors client for AWS (the profile, else the default credential chain) or the embedded
 * stand-in; its region and profile resolved as the other clients' (clients.ts), audited like them.
 */
export function s3VectorsClient(e: S3VectorsEndpoints = {}): S3VectorsClient {
  return auditCalls(
    new S3VectorsClient({
      region: regionOf(e),
      ...(e.profile ? { profile: e.profile } : {}),
      maxAttempts: 4,
      requestHandler: { connectionTimeout: 5_000, socketTimeout: 30_000 },
      ...(e.endpoint ? { endpoint: e.endpoint, credentials: e.credentials } : {}),
    }),
    's3vectors',
  );
}

type Metadata = { bucket: string; space: string; dirs: string[]; key: string; etag?: string };

const isNotFound = (err: unknown) => (err as { name?: string }).name === 'NotFoundException';

function chunks<T>(items: readonly T[], size: number): T[][] {
  const out: T[][] = [];
  for (let i = 0; i < items.length; i += size) out.push(items.slice(i, i + size));
  return out;
}

export class S3VectorIndex implements VectorIndex {
  private readonly client: S3VectorsClient;
  readonly vectorBucket: string;
  private readonly createIndexes: boolean;

  constructor(options: S3VectorIndexOptions) {
    this.client = options.client;
    this.vectorBucket = options.vectorBucket;
    this.createIndexes = options.createIndexes ?? true;
  }

  private where(space: string) {
    return { vectorBucketName: this.vectorBucket, indexName: vectorIndexName(modelOfSpace(space)) };
  }

  /** An S3 Vectors failure in the store's terms, naming the operation, the index and what to do. */
  private fail(op: string, space: string, err: unknown): StoreError {
    const e = err as S3VectorsServiceException;
    const status = e.$metadata?.httpStatusCode;
    const at = `${this.vectorBucket}/${this.where(space).indexName}`;
    const message = `S3 Vectors ${op} on ${at} (space ${space}): ${e.name}: ${e.message}`;
    if (e.name === 'AccessDeniedException' || status === 403)
      return new StoreError('denied', `${message} (this role may not call s3vectors:${op} on that index)`, err);
    if (e.name === 'NotFoundException') return new StoreError('not-found', message, err);
    if (e.name === 'ValidationException' || e.name === 'ConflictException' || status === 400 || status === 409)
      return new StoreError('invalid', message, err);
    return new StoreError('transient', message, err);
  }

  async put(space: string, vectors: readonly ImageVector[]): Promise<void> {
    if (vectors.length === 0) return;
    const dimension = vectors[0].vector.length;
    for (const v of vectors) {
      const ref = `s3://${v.bucket}/${v.key}`;
      if (v.vector.length !== dimension)
        throw new StoreError('invalid', `vectors of one space have one dimension: ${ref} has ${v.vector.length}, the first ${dimension}`);
      if (dimension < 1 || dimension > MAX_DIMENSION)
        throw new StoreError('invalid', `S3 Vectors takes 1 to ${MAX_DIMENSION} dimensions; ${ref} has ${dimension}`);
      if (!v.vector.every(Number.isFinite)) throw new StoreError('invalid', `the vector of ${ref} has a value that is not a finite number`);
      if (Buffer.byteLength(v.key) > 1024) throw new StoreError('invalid', `the key of ${ref} is longer than S3's 1,024 bytes`);
    }
    const where = this.where(space);
    for (const batch of chunks(vectors, MAX_PUT)) {
      const input = {
        ...where,
        vectors: batch.map((v) => ({
          key: vectorKey(v),
          data: { float32: Array.from(v.vector) },
          metadata: {
            bucket: v.bucket,
            space,
            dirs: keyDirs(v.key),
            key: v.key,
            ...(v.eTag ? { etag: v.eTag } : {}),
          } satisfies Metadata,
        })),
      };
      try {
        await this.client.send(new PutVectorsCommand(input));
      } catch (err) {
        if (!isNotFound(err) || !/index/i.test((err as Error).message)) throw this.fail('PutVectors', space, err);
        await this.createIndex(space, dimension);
        try {
          await this.client.send(new PutVectorsCommand(input));
        } catch (again) {
          throw this.fail('PutVectors', space, again);
        }
      }
    }
  }

  private async createIndex(space: string, dimension: number): Promise<void> {
    const where = this.where(space);
    if (!this.createIndexes)
      throw new StoreError(
        'not-found',
        `S3 Vectors index ${this.vectorBucket}/${where.indexName} does not exist: the deploy creates one per model the tiers use ` +
          `(model ${modelOfSpace(space)}); deploy again with that model in a tier`,
      );
    try {
      await this.client.send(
        new CreateIndexCommand({
          ...where,
          dataType: 'float32',
          dimension,
          distanceMetric: 'cosine',
          metadataConfiguration: { nonFilterableMetadataKeys: [...NON_FILTERABLE_KEYS] },
        }),
      );
    } catch (err) {
      // Another writer made it first: fine, it is the same model's index.
      if ((err as { name?: string }).name === 'ConflictException') return;
      throw this.fail('CreateIndex', space, err);
    }
  }

  async remove(space: string, refs: readonly VectorRef[]): Promise<void> {
    for (const batch of chunks(refs, MAX_DELETE)) {
      try {
        await this.client.send(new DeleteVectorsCommand({ ...this.where(space), keys: batch.map(vectorKey) }));
      } catch (err) {
        if (isNotFound(err)) return; // no index: no vectors of that model, nothing to remove
        throw this.fail('DeleteVectors', space, err);
      }
    }
  }

  async get(space: string, ref: VectorRef): Promise<Float32Array | undefined> {
    let out: GetVectorsCommandOutput;
    try {
      out = await this.client.send(
        new GetVectorsCommand({ ...this.where(space), keys: [vectorKey(ref)], returnData: true, returnMetadata: true }),
      );
    } catch (err) {
      if (isNotFound(err)) return undefined; // no index: no vectors of that model
      throw this.fail('GetVectors', space, err);
    }
    const found = out.vectors?.[0];
    const meta = found?.metadata as Partial<Metadata> | undefined;
    // Same vector key, other weights (or, astronomically unlikely, another object): not this space's.
    if (!found?.data?.float32 || meta?.space !== space || meta.bucket !== ref.bucket || meta.key !== ref.key) return undefined;
    return Float32Array.from(found.data.float32);
  }

  async query(
    space: string,
    vector: Float32Array,
    options: { limit: number; bucket: string; prefix?: string; minScore?: number },
  ): Promise<VectorHit[]> {
    if (!Number.isInteger(options.limit) || options.limit < 1 || options.limit > MAX_TOP_K)
      throw new StoreError(
        'invalid',
        `a similarity query returns 1 to ${MAX_TOP_K} hits (S3 Vectors' topK limit); asked for ${options.limit}`,
      );
    const prefix = options.prefix ?? '';
    const { dir, exact } = prefixFilter(prefix);
    const filter: Record<string, { $eq: string }> = { bucket: { $eq: options.bucket }, space: { $eq: space } };
    if (dir) filter.dirs = { $eq: dir };
    let out: QueryVectorsCommandOutput;
    try {
      out = await this.client.send(
        new QueryVectorsCommand({
          ...this.where(space),
          queryVector: { float32: Array.from(vector) },
          topK: exact ? options.limit : MAX_TOP_K,
          filter,
          returnMetadata: true,
          returnDistance: true,
        }),
      );
    } catch (err) {
      if (isNotFound(err)) return []; // no index: no vectors of that model
      throw this.fail('QueryVectors', space, err);
    }
    const hits: VectorHit[] = [];
    for (const v of out.vectors ?? []) {
      const meta = v.metadata as Partial<Metadata> | undefined;
      if (typeof meta?.key !== 'string' || meta.bucket !== options.bucket || !meta.key.startsWith(prefix)) continue;
      // S3 Vectors' cosine distance is 1 - cosine similarity.
      const score = 1 - (v.distance ?? 1);
      if (options.minScore !== undefined && score < options.minScore) continue;
      hits.push({ bucket: meta.bucket, key: meta.key, score });
    }
    return hits.sort((a, b) => b.score - a.score).slice(0, options.limit);
  }

  /**
   * The spaces that hold vectors: every index's vectors are listed (1,000 a call) for their `space`
   * field, since an index is a model and its vectors may be of several weights. That is one call per
   * 1,000 vectors: meant for an operator's command, not a request path.
   */
  async spaces(): Promise<string[]> {
    const found = new Set<string>();
    let nextToken: string | undefined;
    const indexes: string[] = [];
    do {
      let page: ListIndexesCommandOutput;
      try {
        page = await this.client.send(new ListIndexesCommand({ vectorBucketName: this.vectorBucket, prefix: 'model-', nextToken }));
      } catch (err) {
        throw this.fail('ListIndexes', '*', err);
      }
      indexes.push(...(page.indexes ?? []).flatMap((i) => (i.indexName ? [i.indexName] : [])));
      nextToken = page.nextToken;
    } while (nextToken);
    for (const indexName of indexes) {
      let token: string | undefined;
      do {
        let page: ListVectorsCommandOutput;
        try {
          page = await this.client.send(
            new ListVectorsCommand({
              vectorBucketName: this.vectorBucket,
              indexName,
              returnMetadata: true,
              maxResults: 1000,
              nextToken: token,
            }),
          );
        } catch (err) {
          if (isNotFound(err)) break;
          throw this.fail('ListVectors', indexName, err);
        }
        for (const v of page.vectors ?? []) {
          const space = (v.metadata as Partial<Metadata> | undefined)?.space;
          if (typeof space === 'string') found.add(space);
        }
        token = page.nextToken;
      } while (token);
    }
    return [...found].sort();
  }
}

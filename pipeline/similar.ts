/**
 * `effitag similar`: the objects most like one, from the embeddings the worker stored when it tagged
 * them (one vector per object, in the space of the model that tagged it: pipeline/index-writes.ts).
 *
 * - like an object (`s3://bucket/key`): its own vector, queried in its own model's space, itself
 *   left out. The tag index says which model tagged it (its record's marker).
 * - like a local photo (`--image`): the photo decoded as the pipeline decodes it and run through the
 *   model an object uploaded there would get (its tier, the variant its size chooses), queried in
 *   that model's space under the bucket (and prefix).
 *
 * Reads only. Bad input (a key not indexed, an object without a vector in its model's space, a prefix
 * with nothing indexed, or only objects of another model) is a SimilarError: one line saying why and
 * what to do, nothing changed.
 */
import sharp from 'sharp';
import { decodeImage, type DecodeLimits, ImageError } from '../inference/image.ts';
import type { LoadedModel } from '../inference/engine.ts';
import { chooseVariant } from '../tiers/choose.ts';
import { routeObject } from '../tiers/route.ts';
import { modelFor, type TiersFile } from '../tiers/schema.ts';
import { unitVector } from './index-writes.ts';
import type { VectorHit, VectorIndex } from './ports.ts';
import type { TagIndex } from './tag-index.ts';

/** Bad input for `similar`: one line, nothing changed. */
export class SimilarError extends Error {
  override name = 'SimilarError';
}

export interface SimilarDeps {
  index: Pick<TagIndex, 'get' | 'keys'>;
  vectors: VectorIndex;
}

export interface SimilarOptions {
  /** Hits at most (1-99: the query asks for one more, for the object itself, and S3 Vectors answers at most 100). */
  limit: number;
  /** Lowest cosine kept (-1..1). */
  minScore?: number;
}

export interface SimilarReport {
  /** The vector space queried: the model marker (`b0@1a2b3c4d5e6f`). */
  space: string;
  hits: { key: string; score: number }[];
}

export const DEFAULT_LIMIT = 10;
export const MAX_LIMIT = 99;

const url = (bucket: string, key = '') => `s3://${bucket}/${key}`;

function checkOptions(options: SimilarOptions): void {
  if (!Number.isInteger(options.limit) || options.limit < 1 || options.limit > MAX_LIMIT)
    throw new SimilarError(`--limit must be an integer from 1 to ${MAX_LIMIT}, got ${options.limit}`);
  if (options.minScore !== undefined && !(options.minScore >= -1 && options.minScore <= 1))
    throw new SimilarError(`--min-score must be a cosine from -1 to 1, got ${options.minScore}`);
}

const asHits = (found: readonly VectorHit[], skip: string | undefined, options: SimilarOptions) =>
  found
    .filter((h) => h.key !== skip && (options.minScore === undefined || h.score >= options.minScore))
    .sort((a, b) => b.score - a.score || a.key.localeCompare(b.key))
    .slice(0, options.limit)
    .map((h) => ({ key: h.key, score: h.score }));

/** The objects most like `s3://bucket/key`, in the space of the model that tagged it; itself left out. */
export async function similarToObject(
  deps: SimilarDeps,
  ref: { bucket: string; key: string },
  options: SimilarOptions,
): Promise<SimilarReport> {
  checkOptions(options);
  const record = await deps.index.get(ref.bucket, ref.key);
  if (!record)
    throw new SimilarError(
      `${url(ref.bucket, ref.key)} is not indexed (not tagged yet, not under a tier of this stack, or deleted): nothing to compare it with`,
    );
  if (record.failed) throw new SimilarError(`${url(ref.bucket, ref.key)} has no embedding: its tagging failed for good`);
  const space = record.marker;
  const vector = await deps.vectors.get(space, ref);
  if (!vector)
    throw new SimilarError(
      `${url(ref.bucket, ref.key)} has no embedding under the model that tagged it (${space}): tagged before embeddings were kept, on a tier with embeddings: false, or its vector write failed; add it with effitag backfill --embeddings ${url(ref.bucket)}`,
    );
  const found = await deps.vectors.query(space, vector, { limit: options.limit + 1, bucket: ref.bucket, minScore: options.minScore });
  return { space, hits: asHits(found, ref.key, options) };
}

/**
 * The model an image uploaded under `s3://bucket/prefix` would be tagged by: its tier by the routing
 * rules (a key under the prefix), the variant by its size, as the router chooses them.
 */
export function modelForUpload(
  tiers: TiersFile,
  bucket: string,
  prefix: string,
  width: number,
  height: number,
): { tier: string; model: string } {
  // The routing rules match key prefixes: the target prefix itself stands for a key under it.
  const route = routeObject(tiers, { bucket, key: prefix });
  const tier = tiers.tiers[route.tier];
  const { variant } = chooseVariant(tier, width, height, tiers.resolutionTolerance);
  return { tier: route.tier, model: modelFor(tier, variant) };
}

/** Source dimensions after EXIF orientation (as the router's choice sees them), or a SimilarError naming the file. */
export async function imageDimensions(bytes: Uint8Array, name: string): Promise<{ width: number; height: number }> {
  try {
    const m = await sharp(bytes).metadata();
    if (!m.width || !m.height) throw new Error('no dimensions');
    return (m.orientation ?? 1) >= 5 ? { width: m.height, height: m.width } : { width: m.width, height: m.height };
  } catch (err) {
    throw new SimilarError(`cannot read ${name} as an image: ${err instanceof Error ? err.message : String(err)}`);
  }
}

/** A photo's embedding: decoded exactly as the worker decodes (size, limits), the pooled features, unit length. */
export async function embedImage(model: LoadedModel, bytes: Uint8Array, name: string, limits: DecodeLimits = {}): Promise<Float32Array> {
  if (!model.classifyWithFeatures)
    throw new SimilarError(`the ${model.description} engine returns no pooled features: it cannot embed ${name}`);
  let image: Awaited<ReturnType<typeof decodeImage>>;
  try {
    image = await decodeImage(bytes, model.resolution, limits);
  } catch (err) {
    if (err instanceof ImageError) throw new SimilarError(`cannot read ${name} as an image (${err.reason}): ${err.message}`);
    throw err;
  }
  const [out] = await model.classifyWithFeatures([image]);
  const vector = unitVector(out.features);
  if (!vector) throw new SimilarError(`${name}: the model's features for it are all zero; there is no direction to compare`);
  return vector;
}

/** Indexed keys under a prefix looked at to tell "nothing indexed" from "indexed by another model". */
const SAMPLE = 20;

/**
 * The objects under `s3://bucket/prefix` most like a vector of `space` (a local photo's). Before the
 * query, the prefix is checked to hold indexed objects, and, when the query finds none, whether
 * they were tagged by another model (whose space this vector cannot be compared with).
 */
export async function similarToVector(
  deps: SimilarDeps,
  query: { space: string; vector: Float32Array },
  target: { bucket: string; prefix?: string },
  options: SimilarOptions,
): Promise<SimilarReport> {
  checkOptions(options);
  const prefix = target.prefix ?? '';
  const sample: string[] = [];
  let cursor: string | undefined;
  do {
    const page = await deps.index.keys(target.bucket, { prefix, cursor });
    sample.push(...page.keys);
    cursor = page.cursor;
  } while (cursor && sample.length < SAMPLE);
  if (!sample.length)
    throw new SimilarError(`nothing under ${url(target.bucket, prefix)} is indexed (no tagged objects there): nothing to compare with`);
  const found = await deps.vectors.query(query.space, query.vector, {
    limit: options.limit,
    bucket: target.bucket,
    prefix: prefix || undefined,
    minScore: options.minScore,
  });
  const hits = asHits(found, undefined, options);
  if (!hits.length && options.minScore === undefined) {
    // Indexed objects, no vector of this model among them: say which models did tag them.
    const markers = new Set<string>();
    for (const key of sample.slice(0, SAMPLE)) {
      const r = await deps.index.get(target.bucket, key);
      if (r && !r.failed) markers.add(r.marker);
    }
    markers.delete(query.space);
    throw new SimilarError(
      markers.size
        ? `the objects under ${url(target.bucket, prefix)} were tagged by ${[...markers].sort().join(', ')}, not by ${query.space} (the model this image was run through): embeddings of different models cannot be compared`
        : `no object under ${url(target.bucket, prefix)} has an embedding under ${query.space}: add them with effitag backfill --embeddings ${url(target.bucket, prefix)}`,
    );
  }
  return { space: query.space, hits };
}

/**
 * `effitag similar`: the images most like one object of the stack, or like a local photo
 * (`--image`), from the embeddings the worker stored when it tagged them (pipeline/similar.ts).
 * It reads only.
 */
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { Command } from 'commander';
import { messageOf } from '../../base/errors.ts';
import { parseS3Url } from '../../base/s3-url.ts';
import { createEngine } from '../../inference/engines.ts';
import { cacheDir } from '../../model/cache-dir.ts';
import { syncModel } from '../../pipeline/aws/s3-weights.ts';
import { type OpenStack, requireStackBucket, stackTiers } from '../../pipeline/aws/stack-handle.ts';
import { directoryCatalog, type ModelCatalog } from '../../pipeline/models.ts';
import { modelFor, type TiersFile } from '../../tiers/schema.ts';
import type { VectorIndex } from '../../pipeline/ports.ts';
import {
  DEFAULT_LIMIT,
  embedImage,
  imageDimensions,
  MAX_LIMIT,
  modelForUpload,
  SimilarError,
  type SimilarReport,
  similarToObject,
  similarToVector,
} from '../../pipeline/similar.ts';
import { parseNumber, printable, table } from '../format.ts';
import { fileProblem } from '../local-files.ts';
import { openCommandStack, stackVectors } from '../stack.ts';

interface SimilarCli {
  image?: string;
  limit: number;
  minScore?: number;
  json?: boolean;
}

function readVectors(conn: OpenStack): VectorIndex {
  const vectors = stackVectors(conn);
  if (!vectors)
    throw new SimilarError(
      `stack ${conn.handle.name} keeps no image embeddings (no vector bucket in its outputs): similar is not available`,
    );
  return vectors;
}

/**
 * The stack's models, loadable here: its current markers, and the weights it tags with (its catalog
 * directory, or its published artifacts, downloaded into the cache on first use), each model on its
 * tier's engine.
 */
export async function stackCatalog(conn: OpenStack, tiers: TiersFile): Promise<ModelCatalog> {
  const markers = await conn.markers(tiers);
  const location = conn.handle.weightsLocation;
  const remote = location.startsWith('s3://');
  const dir = remote ? join(cacheDir(), 'stack-weights', conn.handle.name) : location;
  const engineOf = new Map<string, string>();
  for (const t of Object.values(tiers.tiers)) for (const v of t.variants) engineOf.set(modelFor(t, v), t.engine);
  const catalogs = new Map<string, ModelCatalog>();
  const catalogFor = (engine: string) => {
    let c = catalogs.get(engine);
    if (!c) catalogs.set(engine, (c = directoryCatalog(dir, createEngine(engine, { ort: { log: () => {} } }))));
    return c;
  };
  return {
    location,
    marker: (model) => markers.marker(model),
    variants: () => [...engineOf.keys()],
    async load(model) {
      if (remote && !(await syncModel(conn.s3, location, model, dir)))
        throw new Error(`no published weights for ${model} under ${location}`);
      const catalog = catalogFor(engineOf.get(model) ?? 'ort');
      if (catalog.marker(model) !== markers.marker(model))
        throw new Error(`the weights of ${model} in ${dir} (${catalog.marker(model)}) are not the stack's (${markers.marker(model)})`);
      return catalog.load(model);
    },
    async dispose() {
      for (const c of catalogs.values()) await c.dispose();
    },
  };
}

/** The local photo's embedding under the model an upload to the target would get, on that tier's engine. */
async function embedLocal(conn: OpenStack, path: string, bucket: string, prefix: string): Promise<{ space: string; vector: Float32Array }> {
  let bytes: Uint8Array;
  try {
    bytes = await readFile(path);
  } catch (err) {
    throw new SimilarError(`cannot read --image ${path}: ${fileProblem(err)}`);
  }
  const { config: tiers } = stackTiers(conn.handle);
  const { width, height } = await imageDimensions(bytes, path);
  const { tier, model } = modelForUpload(tiers, bucket, prefix, width, height);
  const catalog = await stackCatalog(conn, tiers);
  try {
    let space: string;
    try {
      space = catalog.marker(model);
    } catch (err) {
      throw new SimilarError(`tier ${tier}'s model ${model} has no published weights: ${messageOf(err)}`);
    }
    return { space, vector: await embedImage(await catalog.load(model), bytes, path, tiers.tiers[tier].limits) };
  } finally {
    await catalog.dispose();
  }
}

export function registerSimilarCommand(program: Command): void {
  program
    .command('similar')
    .description('the images most like one (its embedding’s nearest, same model), best first; reads only')
    .argument('<target>', 's3://bucket/key (like that object), or with --image, s3://bucket[/prefix] (where to look)')
    .option('--image <file>', 'a local photo to find look-alikes of (decoded and embedded as the pipeline would)')
    .option('--limit <n>', `hits at most (1-${MAX_LIMIT})`, parseNumber('--limit', 1, MAX_LIMIT, true), DEFAULT_LIMIT)
    .option('--min-score <cosine>', 'leave out hits less similar than this (cosine, -1 to 1)', parseNumber('--min-score', -1, 1))
    .option('--json', 'print {"hits":[{"key","score"}…]} as JSON')
    .action(async (target: string, opts: SimilarCli, command: Command) => {
      const { bucket, prefix } = parseS3Url(target);
      if (!opts.image && !prefix) throw new SimilarError(`name an object (s3://${bucket}/KEY), or a photo with --image`);
      const conn = await openCommandStack(command);
      let report: SimilarReport;
      try {
        requireStackBucket(conn.handle, bucket);
        const deps = { index: conn.requireIndex(), vectors: readVectors(conn) };
        const options = { limit: opts.limit, minScore: opts.minScore };
        report = opts.image
          ? await similarToVector(deps, await embedLocal(conn, opts.image, bucket, prefix), { bucket, prefix }, options)
          : await similarToObject(deps, { bucket, key: prefix }, options);
      } finally {
        conn.close();
      }
      if (opts.json) {
        process.stdout.write(`${JSON.stringify({ hits: report.hits })}\n`);
        return;
      }
      const like = opts.image ? `${opts.image} under s3://${bucket}/${prefix}` : `s3://${bucket}/${prefix}`;
      if (!report.hits.length) {
        process.stdout.write(`nothing like ${printable(like)}${opts.minScore !== undefined ? ` at --min-score ${opts.minScore}` : ''}\n`);
        return;
      }
      process.stdout.write(
        table(
          report.hits.map((h) => [h.score.toFixed(3), printable(`s3://${bucket}/${h.key}`)]),
          ['score', 'object'],
        ),
      );
      process.stdout.write(`${report.hits.length} most like ${printable(like)} (model ${report.space})\n`);
    });
}

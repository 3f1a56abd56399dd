/**
 * Weights on S3 for deployed workers: `s3://bucket/prefix/<variant>/{manifest.json,weights.bin}`
 * (what `effitag weights publish` uploads). At start a worker downloads the variants its tiers use
 * into a local catalog directory; `loadArtifact` then checks every file against its content hash.
 */
import { parseS3Folder } from '../../base/s3-url.ts';
import { GetObjectCommand, PutObjectCommand, type S3Client } from '@aws-sdk/client-s3';
import { createWriteStream } from 'node:fs';
import { mkdir, readFile, rename, stat } from 'node:fs/promises';
import { join } from 'node:path';
import type { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { int8Base } from '../../model/spec.ts';
import { loadArtifact, readManifest, type WeightsManifest } from '../../model/weights.ts';
import { timmImportHint } from '../../model/weights-timm.ts';
import { modelId } from '../models.ts';

async function download(s3: S3Client, bucket: string, key: string, dest: string): Promise<void> {
  const out = await s3.send(new GetObjectCommand({ Bucket: bucket, Key: key }));
  const tmp = `${dest}.${process.pid}.part`;
  await pipeline(out.Body as Readable, createWriteStream(tmp));
  await rename(tmp, dest);
}

/** Is this S3 error "no such object"? (A 403 instead: the role lacks s3:ListBucket on the bucket, or access.) */
export function isMissingObject(err: unknown): boolean {
  const e = err as { name?: string; Code?: string; $metadata?: { httpStatusCode?: number } };
  return e?.name === 'NoSuchKey' || e?.name === 'NotFound' || e?.Code === 'NoSuchKey' || e?.$metadata?.httpStatusCode === 404;
}

/** One model's published manifest: undefined while none is published. */
export async function readPublishedManifest(s3: S3Client, location: string, model: string): Promise<WeightsManifest | undefined> {
  const { bucket, prefix } = parseS3Folder(location);
  const key = `${prefix}${model}/manifest.json`;
  try {
    const out = await s3.send(new GetObjectCommand({ Bucket: bucket, Key: key }));
    return JSON.parse(await out.Body!.transformToString()) as WeightsManifest;
  } catch (err) {
    if (isMissingObject(err)) return undefined;
    if ((err as { $metadata?: { httpStatusCode?: number } }).$metadata?.httpStatusCode === 403)
      throw new Error(
        `access denied reading s3://${bucket}/${key}: the role needs s3:GetObject on the weights and s3:ListBucket on their bucket (without it a missing file reads as 403, not 404)`,
        { cause: err },
      );
    throw err;
  }
}

/**
 * Bring one model's published artifact into `localDir/<model>/` (skipped when the same hash is
 * there) and verify it: its manifest, or undefined while none is published.
 */
export async function syncModel(s3: S3Client, location: string, model: string, localDir: string): Promise<WeightsManifest | undefined> {
  const remote = await readPublishedManifest(s3, location, model);
  if (!remote) return undefined;
  const { bucket, prefix } = parseS3Folder(location);
  const dir = join(localDir, model);
  await mkdir(dir, { recursive: true });
  const local = await readManifest(dir).catch(() => undefined);
  const binOk = await stat(join(dir, 'weights.bin')).then(
    (s) => s.size === remote.bytes,
    () => false,
  );
  // An int8 model shares its float weights.bin hash: re-quantized ranges change only its manifest.
  const sameRanges = JSON.stringify(local?.quantization) === JSON.stringify(remote.quantization);
  if (!local || local.sha256 !== remote.sha256 || !binOk || !sameRanges) {
    // weights.bin first: the local catalog finds a model by its manifest, which lands last.
    await download(s3, bucket, `${prefix}${model}/weights.bin`, join(dir, 'weights.bin'));
    await download(s3, bucket, `${prefix}${model}/manifest.json`, join(dir, 'manifest.json'));
  }
  return (await loadArtifact(dir, model)).manifest; // verifies the content hash
}

/** Download the models' artifacts (skipping ones already present with the same hash); every one must be published. */
export async function syncWeights(
  s3: S3Client,
  location: string,
  /** Variants, or custom models' names: each is a folder under `location`. */
  models: readonly string[],
  localDir: string,
): Promise<WeightsManifest[]> {
  const manifests: WeightsManifest[] = [];
  for (const model of models) {
    const manifest = await syncModel(s3, location, model, localDir);
    if (!manifest) throw new Error(`no published weights for ${model} under ${location}`);
    manifests.push(manifest);
  }
  return manifests;
}

/** Upload an artifact (`effitag weights publish`). */
export async function publishWeights(s3: S3Client, dir: string, location: string): Promise<{ manifest: WeightsManifest; keys: string[] }> {
  const artifact = await loadArtifact(dir); // refuse to publish a corrupt artifact
  const { bucket, prefix } = parseS3Folder(location);
  const base = `${prefix}${modelId(artifact.manifest)}/`;
  const keys = [`${base}weights.bin`, `${base}manifest.json`];
  // weights.bin first: a reader that sees the new manifest finds the matching bytes.
  const files = [
    { file: 'weights.bin', type: 'application/octet-stream', metadata: { sha256: artifact.manifest.sha256 } },
    { file: 'manifest.json', type: 'application/json', metadata: undefined },
  ];
  for (const [i, f] of files.entries()) {
    const body = await readFile(join(dir, f.file));
    await s3.send(new PutObjectCommand({ Bucket: bucket, Key: keys[i], Body: body, ContentType: f.type, Metadata: f.metadata }));
  }
  return { manifest: artifact.manifest, keys };
}

export interface TiersPublishReport {
  /** Uploaded now: model → sha256. */
  published: { model: string; sha256: string; keys: string[] }[];
  /** Already published with the same content hash: not uploaded again. */
  unchanged: string[];
  /** Needed by the tiers and not in the local catalog: not published. */
  lacking: string[];
}

/** The official variants `weights fetch` downloads (its argument's values). */
const FETCHABLE = /^(b[0-7]|v2-(b[0-3]|s|m|l))$/;
/** EfficientNet-Lite: weights from timm's port, `weights import --timm` (model/weights-timm.ts). */
const LITE = /^lite[0-4]$/;

/**
 * How to fill a catalog: each official variant fetched into it (`--out`: `weights fetch` writes to
 * the cache by default, which is this catalog only when --weights is left out), each custom model
 * trained into it.
 */
function fetchHint(lacking: readonly string[], catalog: string): string {
  const fetch = lacking.filter((m) => FETCHABLE.test(m));
  // EfficientNet-Lite: no Keras file; timm's safetensors, imported. An int8 model: its float model quantized.
  const lite = lacking.filter((m) => LITE.test(m));
  const int8 = lacking.filter((m) => int8Base(m) !== undefined);
  const train = lacking.filter((m) => !FETCHABLE.test(m) && !LITE.test(m) && int8Base(m) === undefined);
  return [
    ...(fetch.length
      ? [
          `Fetch ${fetch.length > 1 ? 'them' : 'it'}: ${fetch.map((m) => `npx effitag weights fetch ${m} --out ${join(catalog, m)}`).join('; ')}`,
        ]
      : []),
    ...lite.map((m) => timmImportHint(m, join(catalog, m))),
    ...int8.map(
      (m) =>
        `quantize ${m}: npx effitag weights quantize --weights ${join(catalog, int8Base(m)!)} --calibrate IMAGES --out ${join(catalog, m)}`,
    ),
    ...(train.length
      ? [`train ${train.join(', ')} into that catalog (npx effitag train --name ${train[0]} … --out ${join(catalog, train[0])})`]
      : []),
  ].join('; ');
}

/**
 * Publish every model a tiers file needs from a local catalog (`DIR/<model>/`, where `weights fetch`
 * and `train` put them). Models the catalog lacks are an error naming them, before anything is
 * uploaded, unless `allowMissing` (then they are listed, and their objects keep waiting).
 */
export async function publishTiersWeights(
  s3: S3Client,
  options: { models: readonly string[]; catalog: string; location: string; allowMissing?: boolean; tiersPath?: string },
): Promise<TiersPublishReport> {
  const report: TiersPublishReport = { published: [], unchanged: [], lacking: [] };
  const present: { model: string; dir: string; manifest: WeightsManifest }[] = [];
  for (const model of options.models) {
    const dir = join(options.catalog, model);
    const manifest = await readManifest(dir).catch(() => undefined);
    if (!manifest) {
      report.lacking.push(model);
      continue;
    }
    if (modelId(manifest) !== model)
      throw new Error(`${dir} holds ${modelId(manifest)}, not ${model}: a catalog entry's folder is named after its model`);
    present.push({ model, dir, manifest });
  }
  if (report.lacking.length && !options.allowMissing)
    throw new Error(
      `${options.tiersPath ?? 'the tiers'} need${options.tiersPath ? 's' : ''} weights that ${options.catalog} lacks: ${report.lacking.join(', ')}. ` +
        `${fetchHint(report.lacking, options.catalog)}, or pass --allow-missing to publish the others (objects of the missing models wait). Nothing was uploaded.`,
    );
  for (const { model, dir, manifest } of present) {
    const remote = await readPublishedManifest(s3, options.location, model).catch(() => undefined);
    if (remote?.sha256 === manifest.sha256) {
      report.unchanged.push(model);
      continue;
    }
    const r = await publishWeights(s3, dir, options.location);
    report.published.push({ model, sha256: r.manifest.sha256, keys: r.keys });
  }
  return report;
}

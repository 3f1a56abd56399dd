/**
 * Weights on S3 for deployed workers: `s3://bucket/prefix/<variant>/{manifest.json,weights.bin}`
 * (what `effitag weights publish` uploads). At start a worker downloads the variants its tiers use
 * into a local catalog directory; `loadArtifact` then checks every file against its content hash.
 */
import { GetObjectCommand, PutObjectCommand, type S3Client } from '@aws-sdk/client-s3';
import { createWriteStream } from 'node:fs';
import { mkdir, readFile, rename, stat } from 'node:fs/promises';
import { join } from 'node:path';
import type { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { loadArtifact, readManifest, type WeightsManifest } from '../../model/weights.ts';
import { modelId } from '../models.ts';

export function parseS3Url(url: string): { bucket: string; prefix: string } {
  const m = /^s3:\/\/([^/]+)\/?(.*)$/.exec(url);
  if (!m) throw new Error(`expected s3://bucket/prefix, got ${url}`);
  return { bucket: m[1], prefix: m[2] && !m[2].endsWith('/') ? `${m[2]}/` : m[2] };
}

async function download(s3: S3Client, bucket: string, key: string, dest: string): Promise<void> {
  const out = await s3.send(new GetObjectCommand({ Bucket: bucket, Key: key }));
  const tmp = `${dest}.${process.pid}.part`;
  await pipeline(out.Body as Readable, createWriteStream(tmp));
  await rename(tmp, dest);
}

/** Download the variants' artifacts (skipping ones already present with the same hash). */
export async function syncWeights(
  s3: S3Client,
  location: string,
  /** Variants, or custom models' names: each is a folder under `location`. */
  models: readonly string[],
  localDir: string,
): Promise<WeightsManifest[]> {
  const { bucket, prefix } = parseS3Url(location);
  const manifests: WeightsManifest[] = [];
  for (const variant of models) {
    const dir = join(localDir, variant);
    await mkdir(dir, { recursive: true });
    const remote = JSON.parse(
      await (await s3.send(new GetObjectCommand({ Bucket: bucket, Key: `${prefix}${variant}/manifest.json` }))).Body!.transformToString(),
    ) as WeightsManifest;
    const local = await readManifest(dir).catch(() => undefined);
    const binOk = await stat(join(dir, 'weights.bin')).then(
      (s) => s.size === remote.bytes,
      () => false,
    );
    if (!local || local.sha256 !== remote.sha256 || !binOk) {
      await download(s3, bucket, `${prefix}${variant}/weights.bin`, join(dir, 'weights.bin'));
      await download(s3, bucket, `${prefix}${variant}/manifest.json`, join(dir, 'manifest.json'));
    }
    const artifact = await loadArtifact(dir, variant); // verifies the content hash
    manifests.push(artifact.manifest);
  }
  return manifests;
}

/** Upload an artifact (`effitag weights publish`). */
export async function publishWeights(s3: S3Client, dir: string, location: string): Promise<{ manifest: WeightsManifest; keys: string[] }> {
  const artifact = await loadArtifact(dir); // refuse to publish a corrupt artifact
  const { bucket, prefix } = parseS3Url(location);
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

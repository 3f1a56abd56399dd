/** Current model markers from published weight manifests (what the deployed router and backfills compare against). */
import { GetObjectCommand, type S3Client } from '@aws-sdk/client-s3';
import type { WeightsManifest } from '../../model/weights.ts';
import { modelMarker } from '../marker.ts';
import { modelId } from '../models.ts';
import { parseS3Url } from './s3-weights.ts';

export async function markersFromS3(s3: S3Client, location: string, models: readonly string[]): Promise<{ marker(model: string): string }> {
  const { bucket, prefix } = parseS3Url(location);
  const markers = new Map<string, string>();
  for (const model of models) {
    const out = await s3.send(new GetObjectCommand({ Bucket: bucket, Key: `${prefix}${model}/manifest.json` }));
    const manifest = JSON.parse(await out.Body!.transformToString()) as WeightsManifest;
    markers.set(model, modelMarker(modelId(manifest), manifest.sha256));
  }
  return {
    marker(model) {
      const m = markers.get(model);
      if (!m) throw new Error(`no published weights for ${model} under ${location}`);
      return m;
    },
  };
}

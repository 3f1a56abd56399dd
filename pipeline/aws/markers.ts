/** Current model markers from published weight manifests (what the deployed router and backfills compare against). */
import { GetObjectCommand, type S3Client } from '@aws-sdk/client-s3';
import type { WeightsManifest } from '../../model/weights.ts';
import { modelMarker } from '../marker.ts';
import { parseS3Url } from './s3-weights.ts';

export async function markersFromS3(
  s3: S3Client,
  location: string,
  variants: readonly string[],
): Promise<{ marker(variant: string): string }> {
  const { bucket, prefix } = parseS3Url(location);
  const markers = new Map<string, string>();
  for (const variant of variants) {
    const out = await s3.send(new GetObjectCommand({ Bucket: bucket, Key: `${prefix}${variant}/manifest.json` }));
    const manifest = JSON.parse(await out.Body!.transformToString()) as WeightsManifest;
    markers.set(variant, modelMarker(manifest.variant, manifest.sha256));
  }
  return {
    marker(variant) {
      const m = markers.get(variant);
      if (!m) throw new Error(`no published weights for ${variant} under ${location}`);
      return m;
    },
  };
}

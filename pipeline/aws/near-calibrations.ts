/**
 * Near-duplicate calibration records (pipeline/near-calibration.ts) beside published weights:
 * `s3://bucket/prefix/<model>/near-calibration-<weights hash>.json`, next to the `manifest.json` and
 * `weights.bin` that `effitag weights publish` put there. `effitag dupes calibrate` on a deployed
 * stack writes one; `effitag dupes` (and whoever reads the weights) finds it.
 */
import { GetObjectCommand, PutObjectCommand, type S3Client } from '@aws-sdk/client-s3';
import { parseS3Folder } from '../../base/s3-url.ts';
import { CalibrationError, type CalibrationStore, calibrationKey, formatCalibration, parseCalibration } from '../near-calibration.ts';
import { isMissingObject } from './s3-weights.ts';

export function s3Calibrations(s3: S3Client, location: string): CalibrationStore {
  const { bucket, prefix } = parseS3Folder(location);
  const url = (space: string) => `s3://${bucket}/${prefix}${calibrationKey(space)}`;
  return {
    location,
    async read(space) {
      try {
        const out = await s3.send(new GetObjectCommand({ Bucket: bucket, Key: `${prefix}${calibrationKey(space)}` }));
        return parseCalibration(await out.Body!.transformToString(), url(space), space);
      } catch (err) {
        if (isMissingObject(err)) return undefined;
        if ((err as { $metadata?: { httpStatusCode?: number } }).$metadata?.httpStatusCode === 403)
          throw new CalibrationError(
            `access denied reading ${url(space)}: the near-duplicate threshold of ${space} is kept beside its weights (s3:GetObject there), or pass --min-score`,
          );
        throw err;
      }
    },
    async write(record) {
      await s3.send(
        new PutObjectCommand({
          Bucket: bucket,
          Key: `${prefix}${calibrationKey(record.space)}`,
          Body: formatCalibration(record),
          ContentType: 'application/json',
        }),
      );
      return url(record.space);
    },
  };
}

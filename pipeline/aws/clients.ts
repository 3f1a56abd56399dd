/** AWS SDK clients for real AWS or an S3/SQS-compatible endpoint (the embedded stack). */
import { S3Client } from '@aws-sdk/client-s3';
import { SQSClient } from '@aws-sdk/client-sqs';

export interface Endpoints {
  region?: string;
  /** S3-compatible endpoint (path-style); absent for AWS. */
  s3Endpoint?: string;
  sqsEndpoint?: string;
  credentials?: { accessKeyId: string; secretAccessKey: string };
  /** Milliseconds of silence after which a request is abandoned and retried (default 30 s). */
  socketTimeoutMs?: number;
}

/**
 * A connection that goes quiet is given up and retried (S3's client waits forever by default, so
 * one dead socket could hold a worker's batch or a backfill's checkpoint). 30 s of silence: longer
 * than SQS's longest long poll (20 s); large downloads keep sending, so they are not cut off.
 */
const requestHandler = (e: Endpoints) => ({ connectionTimeout: 5_000, socketTimeout: e.socketTimeoutMs ?? 30_000 });

export function s3Client(e: Endpoints = {}): S3Client {
  return new S3Client({
    region: e.region ?? process.env.AWS_REGION ?? 'us-east-1',
    maxAttempts: 4, // the SDK's own backoff for throttling and 5xx
    requestHandler: requestHandler(e),
    ...(e.s3Endpoint ? {
      endpoint: e.s3Endpoint, forcePathStyle: true, credentials: e.credentials,
      // Streamed uploads with the SDK's default checksums are stored corrupted by s3rver.
      requestChecksumCalculation: 'WHEN_REQUIRED' as const, responseChecksumValidation: 'WHEN_REQUIRED' as const,
    } : {}),
  });
}

export function sqsClient(e: Endpoints = {}): SQSClient {
  return new SQSClient({
    region: e.region ?? process.env.AWS_REGION ?? 'us-east-1', maxAttempts: 4, requestHandler: requestHandler(e),
    ...(e.sqsEndpoint ? { endpoint: e.sqsEndpoint, credentials: e.credentials } : {}),
  });
}

/** AWS SDK clients for real AWS or an S3/SQS-compatible endpoint (the embedded stack). */
import { S3Client } from '@aws-sdk/client-s3';
import { SQSClient } from '@aws-sdk/client-sqs';

export interface Endpoints {
  region?: string;
  /** S3-compatible endpoint (path-style); absent for AWS. */
  s3Endpoint?: string;
  sqsEndpoint?: string;
  credentials?: { accessKeyId: string; secretAccessKey: string };
}

export function s3Client(e: Endpoints = {}): S3Client {
  return new S3Client({
    region: e.region ?? process.env.AWS_REGION ?? 'us-east-1',
    maxAttempts: 4, // the SDK's own backoff for throttling and 5xx
    ...(e.s3Endpoint ? {
      endpoint: e.s3Endpoint, forcePathStyle: true, credentials: e.credentials,
      // Streamed uploads with the SDK's default checksums are stored corrupted by s3rver.
      requestChecksumCalculation: 'WHEN_REQUIRED' as const, responseChecksumValidation: 'WHEN_REQUIRED' as const,
    } : {}),
  });
}

export function sqsClient(e: Endpoints = {}): SQSClient {
  return new SQSClient({
    region: e.region ?? process.env.AWS_REGION ?? 'us-east-1', maxAttempts: 4,
    ...(e.sqsEndpoint ? { endpoint: e.sqsEndpoint, credentials: e.credentials } : {}),
  });
}

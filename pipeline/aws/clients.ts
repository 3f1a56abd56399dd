/** AWS SDK clients for real AWS or S3/SQS/DynamoDB-compatible endpoints (the embedded stack). */
import { DynamoDBClient } from '@aws-sdk/client-dynamodb';
import { S3Client } from '@aws-sdk/client-s3';
import { SQSClient } from '@aws-sdk/client-sqs';
import { auditCalls } from './audit.ts';

export interface Endpoints {
  region?: string;
  /** AWS CLI profile (credentials, region); absent: the SDK's default chain (AWS_PROFILE included). */
  profile?: string;
  /** S3-compatible endpoint (path-style); absent for AWS. */
  s3Endpoint?: string;
  sqsEndpoint?: string;
  /** DynamoDB-compatible endpoint (the tag index); absent for AWS. */
  dynamoEndpoint?: string;
  credentials?: { accessKeyId: string; secretAccessKey: string };
  /** Milliseconds of silence after which a request is abandoned and retried (default: S3 120 s, SQS 30 s). */
  socketTimeoutMs?: number;
}

/**
 * A request whose connection goes quiet is abandoned and retried: the SDK's S3 client waits forever
 * by default, so one dead socket could hold a worker's batch or a backfill's checkpoint. Silence
 * allowed: SQS 30 s (its longest long poll is 20 s); S3 120 s, since a CopyObject of a large object
 * (up to 5 GiB, e.g. recording a failure on it) works for a while before it answers. Downloads keep
 * sending, so they are not cut off.
 */
const requestHandler = (silenceMs: number) => ({ connectionTimeout: 5_000, socketTimeout: silenceMs });

/**
 * The region: the given one, else AWS_REGION; with a profile (given, or AWS_PROFILE) left to the SDK,
 * which reads the profile's, as the AWS CLI does; else us-east-1 (the embedded stack's).
 */
const regionOf = (e: Endpoints): string | undefined =>
  e.region ?? process.env.AWS_REGION ?? (e.profile || process.env.AWS_PROFILE ? undefined : 'us-east-1');

export function s3Client(e: Endpoints = {}): S3Client {
  return auditCalls(
    new S3Client({
      region: regionOf(e),
      ...(e.profile ? { profile: e.profile } : {}),
      maxAttempts: 4, // the SDK's own backoff for throttling and 5xx
      requestHandler: requestHandler(e.socketTimeoutMs ?? 120_000),
      ...(e.s3Endpoint
        ? {
            endpoint: e.s3Endpoint,
            forcePathStyle: true,
            credentials: e.credentials,
            // Streamed uploads with the SDK's default checksums are stored corrupted by s3rver.
            requestChecksumCalculation: 'WHEN_REQUIRED' as const,
            responseChecksumValidation: 'WHEN_REQUIRED' as const,
          }
        : {}),
    }),
    's3',
  );
}

export function sqsClient(e: Endpoints = {}): SQSClient {
  return auditCalls(
    new SQSClient({
      region: regionOf(e),
      ...(e.profile ? { profile: e.profile } : {}),
      maxAttempts: 4,
      requestHandler: requestHandler(e.socketTimeoutMs ?? 30_000),
      ...(e.sqsEndpoint ? { endpoint: e.sqsEndpoint, credentials: e.credentials } : {}),
    }),
    'sqs',
  );
}

export function dynamoClient(e: Endpoints = {}): DynamoDBClient {
  return auditCalls(
    new DynamoDBClient({
      region: regionOf(e),
      ...(e.profile ? { profile: e.profile } : {}),
      maxAttempts: 6, // on-demand tables throttle briefly when a new tag's partitions warm up
      requestHandler: requestHandler(e.socketTimeoutMs ?? 30_000),
      ...(e.dynamoEndpoint ? { endpoint: e.dynamoEndpoint, credentials: e.credentials } : {}),
    }),
    'dynamodb',
  );
}

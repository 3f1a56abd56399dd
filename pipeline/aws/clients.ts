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
  /**
   * The embedded stack, as a command reaches it: it answers on loopback in milliseconds, so silence
   * means it is frozen (Ctrl-Z, kill -STOP) or wedged. The kernel still accepts its connections, so
   * the connection timeout never fires and AWS's timeouts (S3 120 s x 4 tries) left a command hanging
   * for minutes. Set: S3 and DynamoDB give up after this much silence, SQS after its long poll's
   * 20 s plus this, each in 2 tries, and the error is one line naming the endpoint.
   */
  embeddedSilenceMs?: number;
}

/**
 * A request whose connection goes quiet is abandoned and retried: the SDK's S3 client waits forever
 * by default, so one dead socket could hold a worker's batch or a backfill's checkpoint. Silence
 * allowed: SQS 30 s (its longest long poll is 20 s); S3 120 s, since a CopyObject of a large object
 * (up to 5 GiB, e.g. recording a failure on it) works for a while before it answers. Downloads keep
 * sending, so they are not cut off.
 */
const requestHandler = (silenceMs: number) => ({ connectionTimeout: 5_000, socketTimeout: silenceMs });

/** Timeouts and tries of a client: AWS's (the given silence, `attempts` tries), or the embedded stack's. */
function patience(e: Endpoints, silenceMs: number, attempts: number, longPoll = 0) {
  const silence = e.embeddedSilenceMs === undefined ? (e.socketTimeoutMs ?? silenceMs) : longPoll + e.embeddedSilenceMs;
  return { maxAttempts: e.embeddedSilenceMs === undefined ? attempts : 2, requestHandler: requestHandler(silence) };
}

/** On the embedded stack: a request that timed out, in all its tries, is one line naming the endpoint. */
function namedSilence<C extends { middlewareStack: { add(mw: unknown, options: object): void } }>(
  client: C,
  e: Endpoints,
  endpoint: string | undefined,
): C {
  if (e.embeddedSilenceMs === undefined || !endpoint) return client;
  client.middlewareStack.add(
    (next: (args: unknown) => Promise<unknown>) => async (args: unknown) => {
      try {
        return await next(args);
      } catch (err) {
        if ((err as Error)?.name !== 'TimeoutError') throw err;
        throw new Error(
          `the embedded stack at ${endpoint} does not answer (silent for ${Math.round(e.embeddedSilenceMs! / 1000)} s, twice): is it stopped (Ctrl-Z, kill -STOP)? resume it (fg, kill -CONT) or restart it (npm start)`,
          { cause: err },
        );
      }
    },
    { step: 'initialize', name: 'effitagEmbeddedSilence' },
  );
  return client;
}

/**
 * The region: the given one, else AWS_REGION; with a profile (given, or AWS_PROFILE) left to the SDK,
 * which reads the profile's, as the AWS CLI does; else us-east-1 (the embedded stack's).
 */
export const regionOf = (e: Pick<Endpoints, 'region' | 'profile'>): string | undefined =>
  e.region ?? process.env.AWS_REGION ?? (e.profile || process.env.AWS_PROFILE ? undefined : 'us-east-1');

export function s3Client(e: Endpoints = {}): S3Client {
  const client = auditCalls(
    new S3Client({
      region: regionOf(e),
      ...(e.profile ? { profile: e.profile } : {}),
      ...patience(e, 120_000, 4), // 4 tries: the SDK's own backoff for throttling and 5xx
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
  return namedSilence(client, e, e.s3Endpoint);
}

export function sqsClient(e: Endpoints = {}): SQSClient {
  const client = auditCalls(
    new SQSClient({
      region: regionOf(e),
      ...(e.profile ? { profile: e.profile } : {}),
      ...patience(e, 30_000, 4, 20_000),
      ...(e.sqsEndpoint ? { endpoint: e.sqsEndpoint, credentials: e.credentials } : {}),
    }),
    'sqs',
  );
  return namedSilence(client, e, e.sqsEndpoint);
}

export function dynamoClient(e: Endpoints = {}): DynamoDBClient {
  const client = auditCalls(
    new DynamoDBClient({
      region: regionOf(e),
      ...(e.profile ? { profile: e.profile } : {}),
      ...patience(e, 30_000, 6), // 6 tries: on-demand tables throttle briefly when a new tag's partitions warm up
      ...(e.dynamoEndpoint ? { endpoint: e.dynamoEndpoint, credentials: e.credentials } : {}),
    }),
    'dynamodb',
  );
  return namedSilence(client, e, e.dynamoEndpoint);
}

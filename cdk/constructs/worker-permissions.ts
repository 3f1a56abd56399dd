/**
 * What each role that touches objects needs, and nothing more: the workers read and rewrite watched
 * objects and read weights; the routers (live and backfill) read headers and weight manifests.
 */
import * as iam from 'aws-cdk-lib/aws-iam';
import type * as sqs from 'aws-cdk-lib/aws-sqs';
import { notFoundVisible, objectArns, type BucketAccess } from './access.ts';
import type { TagIndexTable } from './tag-index.ts';

/**
 * s3:ListBucket on the weights prefix: weights are published after the stack is deployed, and a
 * model not published yet must read as 404 ("waiting for weights"), not 403 (a permission error).
 */
function weightsNotFoundVisible(weights: BucketAccess): iam.PolicyStatement {
  return new iam.PolicyStatement({
    sid: 'SeeMissingWeights',
    actions: ['s3:ListBucket'],
    resources: [weights.bucket.bucketArn],
    ...(weights.prefix ? { conditions: { StringLike: { 's3:prefix': [`${weights.prefix}*`] } } } : {}),
  });
}

/** What a tier's worker reads and writes, whatever it runs on (the CPU and GPU tiers' props extend it). */
export interface WorkerResources {
  /** The tier's task queue. */
  readonly queue: sqs.IQueue;
  /** The queue's dead-letter queue: the worker moves a message there, with its reason, on its last receive. */
  readonly dlq: sqs.IQueue;
  /** The tagged bucket: the worker reads and rewrites objects under the watched prefixes. */
  readonly bucket: BucketAccess;
  /** The watched prefixes ('' = the whole bucket). */
  readonly prefixes: string[];
  /** Where the weights are published: the worker reads them. */
  readonly weights: BucketAccess;
  /**
   * The tag index the worker writes with each result.
   * @default - no index: results are written onto the objects only
   */
  readonly index?: TagIndexTable;
}

export function grantWorker(grantee: iam.IGrantable, opts: WorkerResources): void {
  const add = (s: iam.PolicyStatement) => grantee.grantPrincipal.addToPrincipalPolicy(s);
  add(
    new iam.PolicyStatement({
      sid: 'RewriteWatchedObjects',
      // GetObject/PutObject: download and the self-copy; *Tagging: CopyObject keeps tags, and the tags write-back mode.
      actions: [
        's3:GetObject',
        's3:GetObjectVersion',
        's3:PutObject',
        's3:GetObjectTagging',
        's3:GetObjectVersionTagging',
        's3:PutObjectTagging',
      ],
      resources: objectArns(opts.bucket, opts.prefixes),
    }),
  );
  add(notFoundVisible(opts.bucket, opts.prefixes));
  add(
    new iam.PolicyStatement({
      sid: 'ReadWeights',
      actions: ['s3:GetObject'],
      resources: [opts.weights.bucket.arnForObjects(`${opts.weights.prefix}*`)],
    }),
  );
  add(weightsNotFoundVisible(opts.weights));
  add(
    new iam.PolicyStatement({
      sid: 'ConsumeTierQueue',
      actions: ['sqs:ReceiveMessage', 'sqs:DeleteMessage', 'sqs:ChangeMessageVisibility', 'sqs:GetQueueAttributes', 'sqs:GetQueueUrl'],
      resources: [opts.queue.queueArn],
    }),
  );
  // A message failing on its last receive is moved to the DLQ by the worker, with its reason.
  add(
    new iam.PolicyStatement({
      sid: 'DeadLetterWithReason',
      actions: ['sqs:GetQueueUrl', 'sqs:SendMessage'],
      resources: [opts.dlq.queueArn],
    }),
  );
  opts.bucket.grantKms?.(grantee, ['kms:Decrypt', 'kms:GenerateDataKey']);
  opts.index?.grant(grantee, 'worker');
}

/** The live router and the backfill batches decide the same way: ranged reads of watched objects, the published manifests. */
export function grantRouting(grantee: iam.IGrantable, opts: { bucket: BucketAccess; prefixes: string[]; weights: BucketAccess }): void {
  const add = (s: iam.PolicyStatement) => grantee.grantPrincipal.addToPrincipalPolicy(s);
  add(
    new iam.PolicyStatement({
      sid: 'ReadWatchedObjects',
      actions: ['s3:GetObject', 's3:GetObjectVersion'],
      resources: objectArns(opts.bucket, opts.prefixes),
    }),
  );
  add(notFoundVisible(opts.bucket, opts.prefixes));
  add(
    new iam.PolicyStatement({
      sid: 'ReadWeightManifests',
      actions: ['s3:GetObject'],
      resources: [opts.weights.bucket.arnForObjects(`${opts.weights.prefix}*/manifest.json`)],
    }),
  );
  add(weightsNotFoundVisible(opts.weights));
  opts.bucket.grantKms?.(grantee, ['kms:Decrypt']);
}

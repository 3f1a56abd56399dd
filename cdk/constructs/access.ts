/** The tagged bucket (or the weights bucket) with the prefixes and key a role may touch. */
import * as iam from 'aws-cdk-lib/aws-iam';
import type * as kms from 'aws-cdk-lib/aws-kms';
import type * as s3 from 'aws-cdk-lib/aws-s3';

/** A bucket (or a prefix of one) that roles are granted on, with its SSE-KMS key's grant. */
export interface BucketAccess {
  /** The bucket. */
  readonly bucket: s3.IBucket;
  /** The key prefix the grants are scoped to ('' = the whole bucket). */
  readonly prefix: string;
  /**
   * Grants on the bucket's SSE-KMS key, only when the bucket uses one.
   * @default - no KMS grant (the bucket is encrypted with S3-managed keys)
   */
  readonly grantKms?: (grantee: iam.IGrantable, actions: string[]) => void;
}

/** Object ARNs scoped to the watched prefixes ('' = every object). */
export function objectArns(access: BucketAccess, prefixes: readonly string[]): string[] {
  return prefixes.map((p) => access.bucket.arnForObjects(`${p}*`));
}

export function kmsGrant(key: kms.IKey | undefined): BucketAccess['grantKms'] {
  if (!key) return undefined;
  return (grantee, actions) => {
    grantee.grantPrincipal.addToPrincipalPolicy(new iam.PolicyStatement({ sid: 'BucketKmsKey', actions, resources: [key.keyArn] }));
  };
}

/**
 * s3:ListBucket on the watched prefixes. Code never lists with it; S3 needs it to answer 404 for a
 * missing object instead of 403. Without it an object deleted before it was processed looks like a
 * permission error: retried five times, then parked in a DLQ.
 */
export function notFoundVisible(access: BucketAccess, prefixes: readonly string[]): iam.PolicyStatement {
  const everything = prefixes.some((p) => p === '');
  return new iam.PolicyStatement({
    sid: 'SeeMissingObjects',
    actions: ['s3:ListBucket'],
    resources: [access.bucket.bucketArn],
    ...(everything ? {} : { conditions: { StringLike: { 's3:prefix': prefixes.map((p) => `${p}*`) } } }),
  });
}

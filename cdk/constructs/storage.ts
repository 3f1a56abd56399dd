/**
 * The stack's buckets: the bucket to tag (imported, or created with safe defaults), the weights
 * bucket, and the access-log bucket either needs. Created in the stack's own scope, not in a child
 * construct, on purpose: a child would change the buckets' logical IDs, and CloudFormation would
 * replace a deployed stack's buckets (orphaning the retained ones with the user's images).
 */
import { Duration, RemovalPolicy, type Stack } from 'aws-cdk-lib';
import * as kms from 'aws-cdk-lib/aws-kms';
import * as s3 from 'aws-cdk-lib/aws-s3';
import { kmsGrant, type BucketAccess } from './access.ts';

/** Properties of the stack's buckets ({@link createStorage}). */
export interface StorageProps {
  /**
   * Tag this existing bucket.
   * @default - a created bucket (retained on `cdk destroy`)
   */
  readonly bucketName?: string;
  /**
   * The bucket's SSE-KMS key; grants kms:Decrypt/GenerateDataKey only when given.
   * @default - no KMS grants (S3-managed encryption)
   */
  readonly bucketKmsKeyArn?: string;
  /**
   * Where `effitag weights publish` puts the weights.
   * @default - a created, versioned bucket
   */
  readonly weightsBucket?: string;
  /** The key prefix of the weights in the weights bucket (the context's default is `weights/`). */
  readonly weightsPrefix: string;
}

/** The stack's buckets, as the constructs are granted on them. */
export interface Storage {
  /** The tagged bucket. */
  readonly images: BucketAccess;
  /** The weights bucket and prefix. */
  readonly weights: BucketAccess;
  /** `s3://bucket/prefix` of the published weights (EFFITAG_WEIGHTS). */
  readonly weightsLocation: string;
  /**
   * The access-log bucket, when the stack creates a bucket that logs to it.
   * @default - none: both buckets were given, and the stack creates no access-log bucket
   */
  readonly accessLogs?: s3.Bucket;
}

const SAFE = {
  blockPublicAccess: s3.BlockPublicAccess.BLOCK_ALL,
  enforceSSL: true,
  encryption: s3.BucketEncryption.S3_MANAGED,
  removalPolicy: RemovalPolicy.RETAIN,
} as const;

export function createStorage(stack: Stack, props: StorageProps): Storage {
  const accessLogs =
    !props.bucketName || !props.weightsBucket
      ? new s3.Bucket(stack, 'AccessLogs', {
          ...SAFE,
          objectOwnership: s3.ObjectOwnership.BUCKET_OWNER_PREFERRED,
          lifecycleRules: [{ expiration: Duration.days(90) }],
        })
      : undefined;
  const bucket = props.bucketName
    ? s3.Bucket.fromBucketName(stack, 'Bucket', props.bucketName)
    : new s3.Bucket(stack, 'Bucket', {
        ...SAFE,
        serverAccessLogsBucket: accessLogs,
        serverAccessLogsPrefix: 'images/',
        // Not versioned on purpose: every metadata write-back is a copy, which would store each image twice.
        versioned: false,
      });
  const bucketKey = props.bucketKmsKeyArn ? kms.Key.fromKeyArn(stack, 'BucketKey', props.bucketKmsKeyArn) : undefined;
  const weightsBucket = props.weightsBucket
    ? s3.Bucket.fromBucketName(stack, 'WeightsBucket', props.weightsBucket)
    : new s3.Bucket(stack, 'Weights', { ...SAFE, versioned: true, serverAccessLogsBucket: accessLogs, serverAccessLogsPrefix: 'weights/' });
  return {
    images: { bucket, prefix: '', grantKms: kmsGrant(bucketKey) },
    weights: { bucket: weightsBucket, prefix: props.weightsPrefix },
    weightsLocation: `s3://${weightsBucket.bucketName}/${props.weightsPrefix}`,
    accessLogs,
  };
}

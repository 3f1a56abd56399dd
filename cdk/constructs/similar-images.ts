/**
 * Where image embeddings live on AWS (issue 23): an Amazon S3 Vectors bucket and one index per model
 * the tiers tag with (an index's dimension and metric cannot change, so models never share one).
 * The names are the adapter's (pipeline/aws/s3-vectors.ts: `vectorIndexName`), and so is the
 * non-filterable metadata; the dimension is the model's pooled-feature width (1,280 for B0).
 * CDK has only L1 constructs for S3 Vectors (aws-cdk-lib/aws-s3vectors): grants are written here.
 *
 * Each role gets its actions on the index ARNs only; ListIndexes (the only bucket-level call the
 * code makes) goes to the reader alone. The worker may not create indexes: a model no tier had
 * at deploy time has none, and its puts fail with a clear error until the next deploy.
 */
import { Fn, RemovalPolicy } from 'aws-cdk-lib';
import * as iam from 'aws-cdk-lib/aws-iam';
import * as s3vectors from 'aws-cdk-lib/aws-s3vectors';
import { Construct } from 'constructs';
import { decodeVariant, roundFilters } from '../../model/spec.ts';
import { NON_FILTERABLE_KEYS, vectorIndexName } from '../../pipeline/aws/s3-vectors.ts';
import { modelFor, type TiersFile } from '../../tiers/schema.ts';

/** What each role does with the vectors, and nothing more (actions on the index ARNs). */
export const VECTOR_ACTIONS = {
  /** Workers: store an image's vector, replace or drop it on overwrite, read one back, query (dupes on write). */
  worker: ['s3vectors:PutVectors', 's3vectors:DeleteVectors', 's3vectors:GetVectors', 's3vectors:QueryVectors'],
  /** The router: an object removed → its vector deleted (the same events that keep the tag index). */
  router: ['s3vectors:DeleteVectors'],
  /**
   * `effitag similar` / `dupes` and the gallery, run with a user's credentials (a managed policy to
   * attach): a vector read, queries (with a filter and metadata, which S3 Vectors also authorizes
   * as GetVectors), and listing vectors for the spaces held.
   */
  reader: ['s3vectors:GetVectors', 's3vectors:QueryVectors', 's3vectors:ListVectors'],
} as const;

/** The width of a variant's pooled features: its head conv's filters (1,280 scaled by width, rounded as Keras does). */
export function featureDimension(variant: string): number {
  const spec = decodeVariant(variant);
  return roundFilters(1280, spec.width, spec.roundFiltersBump);
}

/** Every model the tiers tag with, and its feature width (a custom model's is its base variant's). */
export function embeddingModels(tiers: TiersFile): { model: string; dimension: number }[] {
  const models = new Map<string, number>();
  for (const tier of Object.values(tiers.tiers))
    for (const variant of tier.variants) {
      const model = modelFor(tier, variant);
      const dimension = featureDimension(variant);
      const seen = models.get(model);
      if (seen !== undefined && seen !== dimension)
        throw new Error(
          `model ${model} has two feature widths (${seen} and ${dimension}) across tiers: one S3 Vectors index cannot hold both`,
        );
      models.set(model, dimension);
    }
  return [...models].map(([model, dimension]) => ({ model, dimension }));
}

export class SimilarImages extends Construct {
  readonly bucket: s3vectors.CfnVectorBucket;
  /** Its name (CloudFormation's, from its ARN `…:bucket/NAME`): a retained bucket must not block a later deploy's. */
  readonly bucketName: string;
  readonly bucketArn: string;
  /** The index of each model, by model name. */
  readonly indexes = new Map<string, s3vectors.CfnIndex>();
  /** Attach to the users or roles that run `effitag similar`, `dupes` and the gallery on AWS. */
  readonly readerPolicy: iam.ManagedPolicy;

  constructor(scope: Construct, id: string, props: { tiers: TiersFile }) {
    super(scope, id);
    this.bucket = new s3vectors.CfnVectorBucket(this, 'Bucket', { encryptionConfiguration: { sseType: 'AES256' } });
    // Embeddings can be computed again (backfill --embeddings), but only by running every model again.
    this.bucket.applyRemovalPolicy(RemovalPolicy.RETAIN);
    this.bucketArn = this.bucket.attrVectorBucketArn;
    this.bucketName = Fn.select(1, Fn.split('/', this.bucketArn));
    for (const { model, dimension } of embeddingModels(props.tiers)) {
      const index = new s3vectors.CfnIndex(this, `Index-${model}`, {
        vectorBucketArn: this.bucketArn,
        indexName: vectorIndexName(model),
        dataType: 'float32',
        dimension,
        distanceMetric: 'cosine',
        metadataConfiguration: { nonFilterableMetadataKeys: [...NON_FILTERABLE_KEYS] },
      });
      index.addResourceDependency(this.bucket);
      index.applyRemovalPolicy(RemovalPolicy.RETAIN);
      this.indexes.set(model, index);
    }
    this.readerPolicy = new iam.ManagedPolicy(this, 'ReaderPolicy', {
      description: 'effitag similar, dupes and the gallery on AWS: read and query the image embeddings',
      statements: [
        new iam.PolicyStatement({ sid: 'QueryEmbeddings', actions: [...VECTOR_ACTIONS.reader], resources: this.indexArns() }),
        new iam.PolicyStatement({ sid: 'ListEmbeddingIndexes', actions: ['s3vectors:ListIndexes'], resources: [this.bucketArn] }),
      ],
    });
  }

  /** The ARNs of the indexes (one per model), as the grants name them. */
  indexArns(): string[] {
    return [...this.indexes.values()].map((i) => i.attrIndexArn);
  }

  grant(grantee: iam.IGrantable, role: Exclude<keyof typeof VECTOR_ACTIONS, 'reader'>): void {
    if (this.indexes.size === 0) return;
    grantee.grantPrincipal.addToPrincipalPolicy(
      new iam.PolicyStatement({
        sid: role === 'worker' ? 'WriteEmbeddings' : 'DropEmbeddingsOfRemovedObjects',
        actions: [...VECTOR_ACTIONS[role]],
        resources: this.indexArns(),
      }),
    );
  }
}

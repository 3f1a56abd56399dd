/**
 * AWS-scale backfill: a Step Functions Distributed Map lists the bucket (ItemReader over
 * ListObjectsV2, in parallel, with no process holding the listing), batches 500 keys per child, and
 * runs the backfill Lambda on at most `maxConcurrency` batches at once. The Lambda is the router core
 * in backfill mode, so tier rules and dimension checks are those of live uploads. Chosen over S3
 * Batch Operations + Inventory: no day-long wait for an inventory, per-run filters (prefix, dates,
 * marker modes), and the same code as `effitag backfill`. Started by `effitag backfill --remote` or
 * from the console with input { bucket, prefix, filter: { mode, retryFailed?, onlyTier? }, since?, until? }.
 */
import type { TagIndexTable } from './tag-index.ts';
import { Duration, RemovalPolicy } from 'aws-cdk-lib';
import * as iam from 'aws-cdk-lib/aws-iam';
import * as lambda from 'aws-cdk-lib/aws-lambda';
import type { NodejsFunction } from 'aws-cdk-lib/aws-lambda-nodejs';
import * as logs from 'aws-cdk-lib/aws-logs';
import * as s3 from 'aws-cdk-lib/aws-s3';
import * as sfn from 'aws-cdk-lib/aws-stepfunctions';
import * as tasks from 'aws-cdk-lib/aws-stepfunctions-tasks';
import type * as sqs from 'aws-cdk-lib/aws-sqs';
import { Construct } from 'constructs';
import type { BucketAccess } from './access.ts';
import { grantRouting } from './worker-permissions.ts';
import { effitagFunction } from './bundling.ts';

/** Defaults merged under the execution input (the bucket defaults to the stack's tagged bucket). */
export const BACKFILL_DEFAULTS = { prefix: '', filter: { mode: 'stale' }, since: null, until: null };

/** Properties of a {@link Backfill}. */
export interface BackfillProps {
  /** The tagged bucket: the batches read object headers under the watched prefixes. */
  readonly bucket: BucketAccess;
  /** The watched prefixes ('' = the whole bucket). */
  readonly prefixes: string[];
  /** Where the weights are published: the router reads model manifests there. */
  readonly weights: BucketAccess;
  /** Each tier's task queue, by tier name: the batches enqueue into them. */
  readonly tierQueues: Record<string, sqs.IQueue>;
  /** The runtime contract's environment (pipeline/runtime-config.ts `encodeStackEnv`). */
  readonly environment: Record<string, string>;
  /**
   * Batches processed at once.
   * @default 10
   */
  readonly maxConcurrency?: number;
  /**
   * Keys per child batch.
   * @default 500
   */
  readonly batchSize?: number;
  /**
   * Where the results bucket logs its access.
   * @default - no access logging for the results bucket
   */
  readonly accessLogs?: s3.IBucket;
  /**
   * The tag index: what an index-only tier has tagged is read from it.
   * @default - no index: every object's marker is read from its metadata
   */
  readonly index?: TagIndexTable;
}

export class Backfill extends Construct {
  readonly fn: NodejsFunction;
  readonly stateMachine: sfn.StateMachine;
  readonly map: sfn.DistributedMap;

  constructor(scope: Construct, id: string, props: BackfillProps) {
    super(scope, id);
    this.fn = effitagFunction(this, 'Batch', {
      handlerFile: 'backfill-batch.ts',
      architecture: lambda.Architecture.ARM_64,
      memorySize: 1024,
      timeout: Duration.minutes(5),
      environment: props.environment,
      description: 'EffiTag backfill: one batch of listed keys → router (backfill mode) → tier queues',
    });
    grantRouting(this.fn, props);
    props.index?.grant(this.fn, 'backfill');
    this.fn.addToRolePolicy(
      new iam.PolicyStatement({
        sid: 'EnqueueTasks',
        actions: ['sqs:SendMessage'],
        resources: Object.values(props.tierQueues).map((q) => q.queueArn),
      }),
    );

    const results = new s3.Bucket(this, 'Results', {
      blockPublicAccess: s3.BlockPublicAccess.BLOCK_ALL,
      enforceSSL: true,
      encryption: s3.BucketEncryption.S3_MANAGED,
      lifecycleRules: [{ expiration: Duration.days(30) }],
      // Run results are disposable (they expire in 30 days anyway): emptied and deleted with the
      // stack, else `cdk destroy` fails on a non-empty bucket.
      removalPolicy: RemovalPolicy.DESTROY,
      autoDeleteObjects: true,
      serverAccessLogsBucket: props.accessLogs,
      serverAccessLogsPrefix: props.accessLogs ? 'backfill-results/' : undefined,
    });

    const route = new tasks.LambdaInvoke(this, 'RouteBatch', {
      lambdaFunction: this.fn,
      payloadResponseOnly: true,
      retryOnServiceExceptions: false,
    });
    route.addRetry({
      errors: ['States.ALL'],
      interval: Duration.seconds(5),
      backoffRate: 2,
      maxAttempts: 4,
      jitterStrategy: sfn.JitterType.FULL,
    });
    this.map = new sfn.DistributedMap(this, 'ListAndEnqueue', {
      itemReader: new sfn.S3ObjectsItemReader({ bucket: props.bucket.bucket, prefix: sfn.JsonPath.stringAt('$.prefix') }),
      itemBatcher: new sfn.ItemBatcher({
        maxItemsPerBatch: props.batchSize ?? 500,
        batchInput: { 'bucket.$': '$.bucket', 'filter.$': '$.filter', 'since.$': '$.since', 'until.$': '$.until' },
      }),
      maxConcurrency: props.maxConcurrency ?? 10,
      toleratedFailurePercentage: 1,
      resultWriterV2: new sfn.ResultWriterV2({ bucket: results, prefix: 'runs' }),
      mapExecutionType: sfn.StateMachineType.STANDARD,
    });
    this.map.itemProcessor(route);
    // Optional input fields get their defaults, so a console start with just { "bucket": … } works.
    const defaults = new sfn.Pass(this, 'Defaults', {
      // The bucket name is a token: S3 names hold no quote or backslash, so it is safe inside the JSON.
      parameters: {
        'input.$': `States.JsonMerge(States.StringToJson('${JSON.stringify({ bucket: props.bucket.bucket.bucketName, ...BACKFILL_DEFAULTS })}'), $, false)`,
      },
      outputPath: '$.input',
    });
    const logGroup = new logs.LogGroup(this, 'Logs', { retention: logs.RetentionDays.ONE_MONTH });
    this.stateMachine = new sfn.StateMachine(this, 'StateMachine', {
      definitionBody: sfn.DefinitionBody.fromChainable(defaults.next(this.map)),
      tracingEnabled: true,
      logs: { destination: logGroup, level: sfn.LogLevel.ERROR, includeExecutionData: false },
      comment: 'EffiTag backfill: list, filter, enqueue',
    });
  }
}

/**
 * Triggers: the bucket's object-created (and, with a tag index, object-removed) events go to an intake
 * queue, and the router Lambda consumes it. Two deliveries (context `effitag:events`, see config.ts):
 * - `s3`: S3 notification rules on the bucket, one per watched prefix. No per-event charge; the
 *   default for a bucket the stack creates, whose notification document it owns.
 * - `eventbridge`: the bucket's EventBridge switch, and a rule here (source aws.s3, this bucket, the
 *   watched prefixes) whose target is the intake queue. It never overlaps the bucket's existing
 *   notification rules, so it is the default for an existing bucket (`effitag:bucketName`).
 * The router parses both shapes (pipeline/events.ts). The intake is a standard queue (S3 cannot notify
 * FIFO queues); deduplication happens on the tier queues.
 */
import { Duration } from 'aws-cdk-lib';
import * as events from 'aws-cdk-lib/aws-events';
import * as targets from 'aws-cdk-lib/aws-events-targets';
import * as iam from 'aws-cdk-lib/aws-iam';
import * as lambda from 'aws-cdk-lib/aws-lambda';
import { SqsEventSource } from 'aws-cdk-lib/aws-lambda-event-sources';
import type { NodejsFunction } from 'aws-cdk-lib/aws-lambda-nodejs';
import * as s3 from 'aws-cdk-lib/aws-s3';
import * as s3n from 'aws-cdk-lib/aws-s3-notifications';
import * as sqs from 'aws-cdk-lib/aws-sqs';
import { Construct } from 'constructs';
import { effitagFunction } from './bundling.ts';
import { encodeS3Key } from '../../pipeline/events.ts';
import type { EventsMode } from '../config.ts';
import type { BucketAccess } from './access.ts';
import type { TagIndexTable } from './tag-index.ts';
import { grantRouting } from './worker-permissions.ts';

/** Properties of an {@link Ingest}. */
export interface IngestProps {
  /** The tagged bucket whose uploads are routed. */
  readonly bucket: BucketAccess;
  /** The watched prefixes ('' = the whole bucket). */
  readonly prefixes: string[];
  /**
   * How the bucket's events reach the intake queue.
   * @default 's3' (S3 notification rules)
   */
  readonly events?: EventsMode;
  /** Each tier's task queue, by tier name: the router sends into them. */
  readonly tierQueues: Record<string, sqs.IQueue>;
  /** The runtime contract's environment (pipeline/runtime-config.ts `encodeStackEnv`). */
  readonly runtimeEnvironment: Record<string, string>;
  /** Where the weights are published: the router reads model manifests there. */
  readonly weights: BucketAccess;
  /**
   * The tag index: ObjectRemoved notifications reach the router, which deletes the entries.
   * @default - no index: only object-created events are subscribed
   */
  readonly index?: TagIndexTable;
}

export class Ingest extends Construct {
  readonly intake: sqs.Queue;
  readonly intakeDlq: sqs.Queue;
  readonly router: NodejsFunction;
  /** The EventBridge rule feeding the intake queue (`eventbridge` mode only). */
  readonly rule?: events.Rule;

  constructor(scope: Construct, id: string, props: IngestProps) {
    super(scope, id);
    const common = { encryption: sqs.QueueEncryption.SQS_MANAGED, enforceSSL: true };
    this.intakeDlq = new sqs.Queue(this, 'IntakeDlq', { ...common, retentionPeriod: Duration.days(14) });
    const routerTimeout = Duration.seconds(60);
    this.intake = new sqs.Queue(this, 'Intake', {
      ...common,
      visibilityTimeout: Duration.seconds(routerTimeout.toSeconds() * 6),
      retentionPeriod: Duration.days(4),
      deadLetterQueue: { queue: this.intakeDlq, maxReceiveCount: 5 },
    });
    if (props.events === 'eventbridge') this.rule = this.eventBridgeRule(props);
    else {
      const types = [s3.EventType.OBJECT_CREATED, ...(props.index ? [s3.EventType.OBJECT_REMOVED] : [])];
      // S3 matches a notification filter against the key as its notifications encode it ('+' for a space, the rest percent-encoded).
      for (const event of types)
        for (const prefix of props.prefixes)
          props.bucket.bucket.addEventNotification(
            event,
            new s3n.SqsDestination(this.intake),
            ...(prefix ? [{ prefix: encodeS3Key(prefix) }] : []),
          );
    }

    this.router = effitagFunction(this, 'Router', {
      handlerFile: 'router.ts',
      architecture: lambda.Architecture.ARM_64,
      memorySize: 512,
      timeout: routerTimeout,
      environment: props.runtimeEnvironment,
      description: 'EffiTag router: S3 events → tier task queues',
    });
    this.router.addEventSource(
      new SqsEventSource(this.intake, { batchSize: 10, maxBatchingWindow: Duration.seconds(1), reportBatchItemFailures: true }),
    );
    // Reads headers (ranged GET) and metadata of watched objects only.
    grantRouting(this.router, props);
    props.index?.grant(this.router, 'router');
    for (const [tier, queue] of Object.entries(props.tierQueues)) {
      this.router.addToRolePolicy(
        new iam.PolicyStatement({
          sid: `Enqueue${tier.replace(/[^A-Za-z0-9]/g, '')}`,
          actions: ['sqs:SendMessage'],
          resources: [queue.queueArn],
        }),
      );
    }
  }

  /**
   * The bucket sends every event to EventBridge (for an imported bucket, aws-cdk-lib's handler adds
   * only the EventBridgeConfiguration and keeps the bucket's existing rules); this rule forwards the
   * watched ones. The queue policy aws-cdk-lib adds lets events.amazonaws.com send from this rule only
   * (aws:SourceArn). Events EventBridge cannot deliver (after its retries) land in the intake DLQ, where
   * `effitag dlq redrive` finds them like any other intake message.
   */
  private eventBridgeRule(props: IngestProps): events.Rule {
    props.bucket.bucket.enableEventBridgeNotification();
    const watchesAll = props.prefixes.some((p) => p === '');
    const rule = new events.Rule(this, 'ObjectEvents', {
      description: 'EffiTag: S3 object events of the watched prefixes → intake queue',
      eventPattern: {
        source: ['aws.s3'],
        detailType: ['Object Created', ...(props.index ? ['Object Deleted'] : [])],
        detail: {
          bucket: { name: [props.bucket.bucket.bucketName] },
          ...(watchesAll ? {} : { object: { key: props.prefixes.map((prefix) => ({ prefix })) } }),
        },
      },
    });
    rule.addTarget(
      new targets.SqsQueue(this.intake, { deadLetterQueue: this.intakeDlq, retryAttempts: 185, maxEventAge: Duration.hours(24) }),
    );
    return rule;
  }
}

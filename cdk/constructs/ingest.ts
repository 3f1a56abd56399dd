/**
 * Triggers: the bucket's ObjectCreated (and, with a tag index, ObjectRemoved) notifications go to an intake queue (one rule per watched
 * prefix), and the router Lambda consumes it. S3 → SQS was chosen over EventBridge: no per-event
 * charge, native prefix filters, and batching into the router; the router also accepts EventBridge
 * events, so switching is a wiring change. The intake is a standard queue (S3 cannot notify FIFO
 * queues); deduplication happens on the tier queues.
 */
import { Duration } from 'aws-cdk-lib';
import * as iam from 'aws-cdk-lib/aws-iam';
import * as lambda from 'aws-cdk-lib/aws-lambda';
import { SqsEventSource } from 'aws-cdk-lib/aws-lambda-event-sources';
import type { NodejsFunction } from 'aws-cdk-lib/aws-lambda-nodejs';
import * as s3 from 'aws-cdk-lib/aws-s3';
import * as s3n from 'aws-cdk-lib/aws-s3-notifications';
import * as sqs from 'aws-cdk-lib/aws-sqs';
import { Construct } from 'constructs';
import { effitagFunction } from './bundling.ts';
import type { BucketAccess } from './access.ts';
import type { TagIndexTable } from './tag-index.ts';
import { grantRouting } from './worker-permissions.ts';

export interface IngestProps {
  bucket: BucketAccess;
  prefixes: string[];
  tierQueues: Record<string, sqs.IQueue>;
  runtimeEnvironment: Record<string, string>;
  weights: BucketAccess;
  /** The tag index: ObjectRemoved notifications reach the router, which deletes the entries. */
  index?: TagIndexTable;
}

export class Ingest extends Construct {
  readonly intake: sqs.Queue;
  readonly intakeDlq: sqs.Queue;
  readonly router: NodejsFunction;

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
    const events = [s3.EventType.OBJECT_CREATED, ...(props.index ? [s3.EventType.OBJECT_REMOVED] : [])];
    for (const event of events)
      for (const prefix of props.prefixes)
        props.bucket.bucket.addEventNotification(event, new s3n.SqsDestination(this.intake), ...(prefix ? [{ prefix }] : []));

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
}

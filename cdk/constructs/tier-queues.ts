/**
 * One FIFO task queue per tier, with its FIFO dead-letter queue. FIFO because the router gives every
 * upload one deduplication id (bucket, key, ETag, version and the event's sequencer: pipeline/task.ts):
 * duplicate deliveries of an S3 event within SQS's 5-minute window never reach a worker twice (after
 * that, the object's marker stops them), while a new upload of the same bytes is not a duplicate. One message group per
 * object keeps per-key order; high-throughput mode spreads groups across partitions.
 */
import { Duration } from 'aws-cdk-lib';
import * as sqs from 'aws-cdk-lib/aws-sqs';
import { Construct } from 'constructs';
import type { Tier } from '../../tiers/schema.ts';

/** Properties of a {@link TierQueue}. */
export interface TierQueueProps {
  /** The tier's name in the tiers file. */
  readonly tierName: string;
  /** The tier, as `parseTiers` resolved it. */
  readonly tier: Tier;
  /** How long one batch may take on this tier's compute; the visibility timeout is derived from it. */
  readonly batchTimeout: Duration;
  /**
   * Receives before a task goes to the DLQ.
   * @default 5
   */
  readonly maxReceiveCount?: number;
}

export class TierQueue extends Construct {
  readonly queue: sqs.Queue;
  readonly dlq: sqs.Queue;

  constructor(scope: Construct, id: string, props: TierQueueProps) {
    super(scope, id);
    const common = { fifo: true, encryption: sqs.QueueEncryption.SQS_MANAGED, enforceSSL: true };
    this.dlq = new sqs.Queue(this, 'Dlq', { ...common, retentionPeriod: Duration.days(14) });
    this.queue = new sqs.Queue(this, 'Queue', {
      ...common,
      deduplicationScope: sqs.DeduplicationScope.MESSAGE_GROUP,
      fifoThroughputLimit: sqs.FifoThroughputLimit.PER_MESSAGE_GROUP_ID,
      retentionPeriod: Duration.days(4),
      // Lambda's guidance for SQS sources: at least 6× the function timeout; ECS workers use the same margin.
      visibilityTimeout: Duration.seconds(Math.min(43_200, props.batchTimeout.toSeconds() * 6)),
      deadLetterQueue: { queue: this.dlq, maxReceiveCount: props.maxReceiveCount ?? 5 },
    });
  }
}

/**
 * A CloudWatch dashboard and alarms. The workers log their counters in Embedded Metric Format
 * (namespace EffiTag, dimension Tier), so tagged/failed/skipped counts cost no API calls.
 * Alarms: any message in a DLQ, and a tier queue whose oldest message is older than 30 minutes (an
 * hour on GPU tiers: see GPU_COLD_START).
 */
import { Duration, RemovalPolicy, Stack } from 'aws-cdk-lib';
import * as iam from 'aws-cdk-lib/aws-iam';
import * as cw from 'aws-cdk-lib/aws-cloudwatch';
import * as cwActions from 'aws-cdk-lib/aws-cloudwatch-actions';
import type * as ecs from 'aws-cdk-lib/aws-ecs';
import * as kms from 'aws-cdk-lib/aws-kms';
import type * as lambda from 'aws-cdk-lib/aws-lambda';
import * as sns from 'aws-cdk-lib/aws-sns';
import * as subs from 'aws-cdk-lib/aws-sns-subscriptions';
import type * as sqs from 'aws-cdk-lib/aws-sqs';
import type * as sfn from 'aws-cdk-lib/aws-stepfunctions';
import { Construct } from 'constructs';

/**
 * What a GPU tier's scale-from-zero may take before its first message is done, added to its
 * queue-age threshold: SQS metrics of a queue idle for 6 hours lag up to 15 minutes when it wakes,
 * then the instance boots and registers, pulls a multi-GB image, loads the weights and, on A10G/L4,
 * JIT-compiles PTX (minutes; unmeasured here). With 30 minutes of age allowed on top, an alarm means
 * the tier is stuck (no capacity, quota 0, a crash loop), not that it started cold. Not "age only
 * while tasks run": a tier that never gets an instance is the failure this alarm must catch.
 */
export const GPU_COLD_START = Duration.minutes(30);

/** Properties of an {@link Observability}. */
export interface ObservabilityProps {
  /** Each tier's queue, DLQ and compute (a GPU tier's service, a CPU tier's function), by tier name. */
  readonly tiers: Record<
    string,
    { readonly queue: sqs.IQueue; readonly dlq: sqs.IQueue; readonly service?: ecs.Ec2Service; readonly fn?: lambda.IFunction }
  >;
  /** The intake queue. */
  readonly intake: sqs.IQueue;
  /** The intake queue's DLQ: any message in it raises an alarm. */
  readonly intakeDlq: sqs.IQueue;
  /** The router function. */
  readonly router: lambda.IFunction;
  /**
   * The GPU tiers' ECS cluster, for the running-tasks widget.
   * @default - no running-tasks widget
   */
  readonly clusterName?: string;
  /**
   * An address the alarm topic e-mails.
   * @default - no subscription: the alarms publish to the topic only
   */
  readonly alarmEmail?: string;
  /**
   * How long the oldest task may wait on a CPU tier before its alarm; GPU tiers get 30 minutes more
   * for a scale-from-zero.
   * @default Duration.minutes(30)
   */
  readonly maxQueueAge?: Duration;
  /**
   * The backfill state machine, for its progress widget.
   * @default - no backfill widget
   */
  readonly backfill?: sfn.StateMachine;
}

export class Observability extends Construct {
  readonly dashboard: cw.Dashboard;
  readonly topic: sns.Topic;
  readonly alarms: cw.Alarm[] = [];

  constructor(scope: Construct, id: string, props: ObservabilityProps) {
    super(scope, id);
    const period = Duration.minutes(5);
    // Deleted with the stack (after KMS's shortest waiting period): it encrypts only alarm
    // notifications in flight, and a retained key would cost $1 a month after `cdk destroy`.
    const key = new kms.Key(this, 'AlarmsKey', {
      enableKeyRotation: true,
      description: 'EffiTag alarm topic',
      removalPolicy: RemovalPolicy.DESTROY,
      pendingWindow: Duration.days(7),
    });
    // CloudWatch publishes alarms to the encrypted topic only if the key lets it: without this
    // statement every alarm notification is dropped, silently.
    key.addToResourcePolicy(
      new iam.PolicyStatement({
        sid: 'CloudWatchAlarmsPublish',
        principals: [new iam.ServicePrincipal('cloudwatch.amazonaws.com')],
        actions: ['kms:Decrypt', 'kms:GenerateDataKey*'],
        resources: ['*'],
        conditions: { StringEquals: { 'aws:SourceAccount': Stack.of(this).account } },
      }),
    );
    this.topic = new sns.Topic(this, 'Alarms', { displayName: 'EffiTag alarms', masterKey: key, enforceSSL: true });
    if (props.alarmEmail) this.topic.addSubscription(new subs.EmailSubscription(props.alarmEmail));
    const alarm = (name: string, metric: cw.IMetric, threshold: number, description: string) => {
      const a = new cw.Alarm(this, name, {
        metric,
        threshold,
        evaluationPeriods: 1,
        comparisonOperator: cw.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
        treatMissingData: cw.TreatMissingData.NOT_BREACHING,
        alarmDescription: description,
      });
      a.addAlarmAction(new cwActions.SnsAction(this.topic));
      this.alarms.push(a);
    };
    const maxAge = props.maxQueueAge ?? Duration.minutes(30);
    alarm(
      'IntakeDlqDepth',
      props.intakeDlq.metricApproximateNumberOfMessagesVisible({ period: Duration.minutes(1), statistic: 'Maximum' }),
      1,
      'S3 events the router could not handle are in the intake DLQ',
    );

    const tagged: cw.IMetric[] = [];
    const age: cw.IMetric[] = [];
    const dlqDepth: cw.IMetric[] = [
      props.intakeDlq.metricApproximateNumberOfMessagesVisible({ period, statistic: 'Maximum', label: 'intake DLQ' }),
    ];
    const tasks: cw.IMetric[] = [];
    for (const [tier, t] of Object.entries(props.tiers)) {
      const id = tier.replace(/[^A-Za-z0-9]/g, '');
      tagged.push(
        new cw.Metric({ namespace: 'EffiTag', metricName: 'tagged', dimensionsMap: { Tier: tier }, statistic: 'Sum', period, label: tier }),
      );
      const oldest = t.queue.metricApproximateAgeOfOldestMessage({ period: Duration.minutes(1), statistic: 'Maximum', label: tier });
      age.push(oldest);
      const depth = t.dlq.metricApproximateNumberOfMessagesVisible({
        period: Duration.minutes(1),
        statistic: 'Maximum',
        label: `${tier} DLQ`,
      });
      dlqDepth.push(depth);
      alarm(`${id}DlqDepth`, depth, 1, `Tasks of tier ${tier} failed ${'repeatedly'} and are in its DLQ`);
      const ageLimit = t.service ? maxAge.plus(GPU_COLD_START) : maxAge;
      alarm(
        `${id}QueueAge`,
        oldest,
        ageLimit.toSeconds(),
        `Tier ${tier}: the oldest task waits over ${ageLimit.toMinutes()} minutes${t.service ? ` (${maxAge.toMinutes()} + ${GPU_COLD_START.toMinutes()} for a GPU scale-from-zero)` : ''}`,
      );
      if (t.service && props.clusterName) {
        tasks.push(
          new cw.Metric({
            namespace: 'ECS/ContainerInsights',
            metricName: 'RunningTaskCount',
            dimensionsMap: { ClusterName: props.clusterName, ServiceName: t.service.serviceName },
            statistic: 'Maximum',
            period: Duration.minutes(1),
            label: tier,
          }),
        );
      }
    }
    const search = (what: string, label: string) =>
      new cw.MathExpression({ expression: `SEARCH('{EffiTag,Tier} ${what}', 'Sum', 300)`, label, period });

    this.dashboard = new cw.Dashboard(this, 'Dashboard', { defaultInterval: Duration.hours(6) });
    this.dashboard.addWidgets(
      new cw.GraphWidget({ title: 'Images tagged per tier', left: tagged, width: 12 }),
      new cw.GraphWidget({ title: 'Failures recorded, by reason', left: [search('recorded-failure', 'failed')], width: 12 }),
    );
    this.dashboard.addWidgets(
      new cw.GraphWidget({ title: 'Latency: oldest task waiting (s)', left: age, width: 8 }),
      new cw.GraphWidget({ title: 'Dead-letter queues', left: dlqDepth, width: 8 }),
      new cw.GraphWidget({
        title: 'GPU tasks running',
        left: tasks.length ? tasks : [new cw.Metric({ namespace: 'ECS/ContainerInsights', metricName: 'RunningTaskCount', period })],
        width: 8,
      }),
    );
    this.dashboard.addWidgets(
      new cw.GraphWidget({ title: 'Skipped, by reason', left: [search('skipped', 'skipped')], width: 8 }),
      new cw.GraphWidget({ title: 'Retries, by reason', left: [search('retry', 'retries')], width: 8 }),
      new cw.GraphWidget({
        title: 'Router',
        left: [props.router.metricInvocations({ period }), props.router.metricErrors({ period })],
        right: [props.intake.metricApproximateAgeOfOldestMessage({ period })],
        width: 8,
      }),
    );
    if (props.backfill) {
      const backfillMetric = (name: string) =>
        new cw.Metric({
          namespace: 'EffiTag',
          metricName: name,
          dimensionsMap: { Function: 'backfill' },
          statistic: 'Sum',
          period,
          label: name.replace('backfill.', ''),
        });
      this.dashboard.addWidgets(
        new cw.GraphWidget({
          title: 'Backfill: keys listed and enqueued',
          left: [backfillMetric('backfill.listed'), backfillMetric('backfill.enqueued')],
          width: 12,
        }),
        new cw.GraphWidget({
          title: 'Backfill runs',
          left: [
            props.backfill.metricStarted({ period }),
            props.backfill.metricSucceeded({ period }),
            props.backfill.metricFailed({ period }),
          ],
          width: 12,
        }),
      );
    }
  }
}

/**
 * GPU scaling you can trust: every GPU tier of the shipped tiers files, synthesized, its alarms and
 * step policies evaluated as Application Auto Scaling applies them (cdk/scaling-model.ts).
 */
import assert from 'node:assert/strict';
import { readdirSync } from 'node:fs';
import { describe, it } from 'node:test';
import { App, Duration, Stack } from 'aws-cdk-lib';
import * as appscaling from 'aws-cdk-lib/aws-applicationautoscaling';
import * as cw from 'aws-cdk-lib/aws-cloudwatch';
import * as ec2 from 'aws-cdk-lib/aws-ec2';
import * as ecs from 'aws-cdk-lib/aws-ecs';
import * as sqs from 'aws-cdk-lib/aws-sqs';
import { Template } from 'aws-cdk-lib/assertions';
import { synthStack } from './support/synth.ts';
import { type CfnTemplate, formatScalingTable, probeBacklogs, scalingTable, tasksForBacklog } from '../cdk/scaling-model.ts';

const SHIPPED = [
  'tiers/defaults.json',
  ...readdirSync('examples/tiers')
    .filter((f) => f.endsWith('.json'))
    .map((f) => `examples/tiers/${f}`),
];

function synth(tiersFile: string) {
  const { config, template } = synthStack({ 'effitag:tiersFile': tiersFile });
  return { config, template: template.toJSON() as CfnTemplate };
}

for (const file of SHIPPED) {
  describe(`GPU scaling of ${file}, evaluated on the synthesized template`, () => {
    const { config, template } = synth(file);
    const gpuTiers = Object.entries(config.tiers.tiers).flatMap(([name, t]) => (t.compute.target === 'ecs-gpu' ? [{ name, t }] : []));
    const tables = scalingTable(template);

    it('every GPU tier has one scaled service with MaxCapacity = the tier’s maxTasks', () => {
      assert.ok(gpuTiers.length > 0, `${file} has GPU tiers`);
      assert.deepEqual(tables.map((t) => t.tier).sort(), gpuTiers.map((g) => g.name).sort());
      for (const { name, t } of gpuTiers) {
        const table = tables.find((x) => x.tier === name)!;
        assert.equal(table.maxCapacity, t.compute.target === 'ecs-gpu' ? t.compute.maxTasks : -1);
        assert.equal(table.minCapacity, 0);
        assert.match(table.queue ?? '', new RegExp(`^Tier${name}Queue`), 'the alarms watch the tier’s own queue');
      }
    });

    for (const { name, t } of gpuTiers) {
      it(`${name}: 0 tasks at 0, ≥ 1 from a backlog of 1, no two alarms disagree at any step boundary ± 1, MaxCapacity on a large backlog`, () => {
        const table = tables.find((x) => x.tier === name)!;
        const maxTasks = t.compute.target === 'ecs-gpu' ? t.compute.maxTasks : 0;
        // The probed backlogs include every boundary of every step and its neighbours.
        const probed = table.rows.map((r) => r.backlog);
        assert.deepEqual(probed, probeBacklogs(table));
        for (const rule of table.rules)
          for (const s of rule.steps)
            for (const b of [s.lower, s.upper])
              if (b !== undefined && rule.threshold + b >= 1)
                for (const n of [-1, 0, 1])
                  assert.ok(
                    probed.includes(rule.threshold + b + n),
                    `boundary ${rule.threshold + b}${n ? ` ${n > 0 ? '+' : ''}${n}` : ''} probed`,
                  );
        assert.deepEqual(table.problems, [], formatScalingTable([table]));
        assert.equal(tasksForBacklog(template, name, 0).tasks, 0);
        assert.equal(tasksForBacklog(template, name, 1).tasks, 1);
        assert.equal(tasksForBacklog(template, name, 1_000_000).tasks, maxTasks);
        for (const r of table.rows) {
          assert.equal(r.conflict, false, `backlog ${r.backlog}`);
          assert.equal(r.alarms.length, 1, `backlog ${r.backlog}: exactly one alarm acts (${r.alarms.map((a) => a.alarm)})`);
          if (r.backlog >= 1) assert.ok((r.tasks ?? 0) >= 1, `backlog ${r.backlog}: ${r.tasks} tasks`);
        }
        // Every backlog up to the last boundary, not only the probed ones.
        let previous = 0;
        for (let b = 0; b <= probed.at(-2)!; b++) {
          const d = tasksForBacklog(template, name, b);
          assert.ok(
            !d.conflict && d.tasks !== null && d.tasks >= previous && (b === 0 ? d.tasks === 0 : d.tasks >= 1),
            `backlog ${b}: ${JSON.stringify(d)}`,
          );
          previous = d.tasks!;
        }
      });
    }
  });
}

describe('the scaling model itself', () => {
  /** The design shipped before: aws-cdk-lib's scaleOnMetric over exact-capacity steps (a lower and an upper alarm). */
  function oldDesign(maxTasks: number): CfnTemplate {
    const stack = new Stack(new App(), 'Old', { env: { account: '111111111111', region: 'us-east-1' } });
    const cluster = new ecs.Cluster(stack, 'Cluster');
    cluster.addCapacity('Capacity', { instanceType: new ec2.InstanceType('g4dn.xlarge') });
    const task = new ecs.Ec2TaskDefinition(stack, 'Task');
    task.addContainer('worker', { image: ecs.ContainerImage.fromRegistry('worker'), memoryReservationMiB: 512 });
    const service = new ecs.Ec2Service(stack, 'Service', { cluster, taskDefinition: task });
    const queue = new sqs.Queue(stack, 'Queue');
    const backlog = new cw.MathExpression({
      expression: 'visible + inflight',
      usingMetrics: {
        visible: queue.metricApproximateNumberOfMessagesVisible(),
        inflight: queue.metricApproximateNumberOfMessagesNotVisible(),
      },
      period: Duration.minutes(1),
    });
    const steps: appscaling.ScalingInterval[] = [
      { upper: 1, change: 0 },
      { lower: 1, upper: maxTasks > 1 ? 200 : undefined, change: 1 },
    ];
    for (let n = 2; n <= maxTasks; n++) steps.push({ lower: 200 * (n - 1), upper: n < maxTasks ? 200 * n : undefined, change: n });
    service.autoScaleTaskCount({ minCapacity: 0, maxCapacity: maxTasks }).scaleOnMetric('Backlog', {
      metric: backlog,
      scalingSteps: steps,
      adjustmentType: appscaling.AdjustmentType.EXACT_CAPACITY,
    });
    return Template.fromStack(stack).toJSON() as CfnTemplate;
  }

  it('finds the defects of the old two-alarm design: 0 tasks at a backlog of 1 (4 tasks), conflicts at 200 (4 tasks) and at 1 (2 tasks)', () => {
    const four = oldDesign(4);
    const service = (t: CfnTemplate) => scalingTable(t)[0].service;
    assert.equal(tasksForBacklog(four, service(four), 1).tasks, 0);
    const at200 = tasksForBacklog(four, service(four), 200);
    assert.equal(at200.conflict, true);
    assert.deepEqual(at200.alarms.map((a) => a.tasks).sort(), [1, 2]);
    const [table] = scalingTable(four);
    assert.ok(
      table.problems.some((p) => p.startsWith('backlog 1: 0 tasks')),
      table.problems.join('\n'),
    );
    const two = oldDesign(2);
    const at1 = tasksForBacklog(two, service(two), 1);
    assert.equal(at1.conflict, true);
    assert.deepEqual(at1.alarms.map((a) => a.tasks).sort(), [0, 1]);
    assert.match(formatScalingTable(scalingTable(two)), /CONFLICT/);
  });

  it('reads interval bounds as Application Auto Scaling does: above the threshold [lower, upper), below it (lower, upper]', () => {
    const policy = (steps: object[]) => ({
      Type: 'AWS::ApplicationAutoScaling::ScalingPolicy',
      Properties: {
        PolicyType: 'StepScaling',
        ScalingTargetId: { Ref: 'T' },
        StepScalingPolicyConfiguration: { AdjustmentType: 'ExactCapacity', StepAdjustments: steps },
      },
    });
    const metrics = [
      { Id: 'e', Expression: 'a + b', ReturnData: true },
      {
        Id: 'a',
        MetricStat: {
          Metric: {
            Namespace: 'AWS/SQS',
            MetricName: 'ApproximateNumberOfMessagesVisible',
            Dimensions: [{ Name: 'QueueName', Value: { 'Fn::GetAtt': ['Q', 'QueueName'] } }],
          },
        },
        ReturnData: false,
      },
      {
        Id: 'b',
        MetricStat: {
          Metric: {
            Namespace: 'AWS/SQS',
            MetricName: 'ApproximateNumberOfMessagesNotVisible',
            Dimensions: [{ Name: 'QueueName', Value: { 'Fn::GetAtt': ['Q', 'QueueName'] } }],
          },
        },
        ReturnData: false,
      },
    ];
    const alarm = (op: string, threshold: number, p: string) => ({
      Type: 'AWS::CloudWatch::Alarm',
      Properties: { ComparisonOperator: op, Threshold: threshold, AlarmActions: [{ Ref: p }], Metrics: metrics },
    });
    const template: CfnTemplate = {
      Resources: {
        T: {
          Type: 'AWS::ApplicationAutoScaling::ScalableTarget',
          Properties: {
            ScalableDimension: 'ecs:service:DesiredCount',
            MinCapacity: 0,
            MaxCapacity: 5,
            ResourceId: { 'Fn::Join': ['', ['service/', { Ref: 'C' }, '/', { 'Fn::GetAtt': ['S', 'Name'] }]] },
          },
        },
        Up: policy([
          { MetricIntervalLowerBound: 0, MetricIntervalUpperBound: 10, ScalingAdjustment: 2 },
          { MetricIntervalLowerBound: 10, ScalingAdjustment: 9 },
        ]),
        UpAlarm: alarm('GreaterThanOrEqualToThreshold', 10, 'Up'),
        Down: policy([
          { MetricIntervalLowerBound: -5, MetricIntervalUpperBound: 0, ScalingAdjustment: 1 },
          { MetricIntervalUpperBound: -5, ScalingAdjustment: 0 },
        ]),
        DownAlarm: alarm('LessThanThreshold', 10, 'Down'),
      },
    };
    const at = (b: number) => tasksForBacklog(template, 'S', b).tasks;
    assert.equal(at(20), 5, '[10, ∞) → 9, clamped to MaxCapacity 5');
    assert.equal(at(19), 2);
    assert.equal(at(10), 2, 'lower bound inclusive above the threshold');
    assert.equal(at(9), 1);
    assert.equal(at(5), 0, 'upper bound −5 inclusive below the threshold: 5 − 10 = −5 → 0');
    assert.equal(at(6), 1, '(−5, 0]');
    const gap = structuredClone(template);
    gap.Resources.Up.Properties!.StepScalingPolicyConfiguration.StepAdjustments.pop();
    assert.equal(tasksForBacklog(gap, 'S', 25).conflict, true, 'no step for the backlog: reported, not guessed');
  });

  it('refuses what it cannot evaluate: relative adjustments, an alarm not on the backlog', () => {
    const { template } = synth('tiers/defaults.json');
    const relative = structuredClone(template);
    for (const r of Object.values(relative.Resources))
      if (r.Type === 'AWS::ApplicationAutoScaling::ScalingPolicy')
        r.Properties!.StepScalingPolicyConfiguration.AdjustmentType = 'ChangeInCapacity';
    assert.throws(() => scalingTable(relative), /ChangeInCapacity depends on the current count/);
    const visibleOnly = structuredClone(template);
    for (const r of Object.values(visibleOnly.Resources))
      if (r.Type === 'AWS::CloudWatch::Alarm' && r.Properties!.Metrics?.[0]?.Expression) r.Properties!.Metrics[0].Expression = 'visible';
    assert.throws(() => scalingTable(visibleOnly), /not one queue's visible \+ in-flight backlog/);
  });
});

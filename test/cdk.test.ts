import assert from 'node:assert/strict';
import { join } from 'node:path';
import { readFileSync, writeFileSync } from 'node:fs';
import { describe, it, before } from 'node:test';
import type { App } from 'aws-cdk-lib';
import { Match, type Template } from 'aws-cdk-lib/assertions';
import { AwsSolutionsChecks } from 'cdk-nag';
import { backlogSteps } from '../cdk/constructs/gpu-tier.ts';
import { tempDir } from './support/fixtures.ts';
import { synthStack } from './support/synth.ts';

const synth = synthStack;

type Statement = { Action: string | string[]; Resource: unknown; Effect: string; Sid?: string };
const statements = (template: Template): { policy: string; s: Statement }[] =>
  Object.entries(template.findResources('AWS::IAM::Policy')).flatMap(([policy, r]) =>
    (r.Properties.PolicyDocument.Statement as Statement[]).map((s) => ({ policy, s })),
  );

describe('CDK stack (default tiers: economy on Lambda, standard and premium on GPU)', () => {
  let template: Template;
  let app: App;
  before(() => {
    ({ template, app } = synth());
  });

  it('S3 ObjectCreated notifications feed an encrypted, SSL-only intake queue with a DLQ; the router consumes it', () => {
    template.hasResourceProperties('Custom::S3BucketNotifications', {
      NotificationConfiguration: { QueueConfigurations: Match.arrayWith([Match.objectLike({ Events: ['s3:ObjectCreated:*'] })]) },
    });
    template.hasResourceProperties('AWS::Lambda::EventSourceMapping', {
      BatchSize: 10,
      FunctionResponseTypes: ['ReportBatchItemFailures'],
      EventSourceArn: { 'Fn::GetAtt': [Match.stringLikeRegexp('^IngestIntake'), 'Arn'] },
    });
    template.hasResourceProperties('AWS::SQS::Queue', {
      SqsManagedSseEnabled: true,
      RedrivePolicy: { deadLetterTargetArn: Match.anyValue(), maxReceiveCount: 5 },
      VisibilityTimeout: 360,
    });
  });

  it('one FIFO task queue and FIFO DLQ per tier, SSE, SSL-only, visibility derived from batch time', () => {
    const fifo = template.findResources('AWS::SQS::Queue', { Properties: { FifoQueue: true } });
    assert.equal(Object.keys(fifo).length, 6, '3 tiers × (queue + DLQ)');
    for (const q of Object.values(fifo)) assert.equal(q.Properties.SqsManagedSseEnabled, true);
    // Lambda tier: 6 × (45 + 2·8) s; GPU tiers: 6 × max(120, 60 + 2·batch).
    template.hasResourceProperties('AWS::SQS::Queue', {
      FifoQueue: true,
      VisibilityTimeout: 6 * 61,
      DeduplicationScope: 'messageGroup',
      FifoThroughputLimit: 'perMessageGroupId',
    });
    template.hasResourceProperties('AWS::SQS::Queue', { FifoQueue: true, VisibilityTimeout: 6 * 124 });
    const policies = template.findResources('AWS::SQS::QueuePolicy');
    assert.ok(Object.keys(policies).length >= 8);
    for (const p of Object.values(policies)) {
      assert.ok(
        (p.Properties.PolicyDocument.Statement as Statement[]).some(
          (s) => s.Effect === 'Deny' && JSON.stringify(s).includes('aws:SecureTransport'),
        ),
      );
    }
  });

  it('GPU capacity: ASG with minimum 0 and no desiredCapacity, capacity provider with managed scaling, GPU AMI', () => {
    const groups = template.findResources('AWS::AutoScaling::AutoScalingGroup');
    assert.equal(Object.keys(groups).length, 2);
    for (const g of Object.values(groups)) {
      assert.equal(g.Properties.MinSize, '0');
      assert.equal(g.Properties.DesiredCapacity, undefined, 'desiredCapacity would reset the group on every deploy');
    }
    template.hasResourceProperties('AWS::AutoScaling::AutoScalingGroup', {
      MaxSize: '4',
      MixedInstancesPolicy: {
        InstancesDistribution: { OnDemandPercentageAboveBaseCapacity: 0, SpotAllocationStrategy: 'price-capacity-optimized' },
      },
    });
    template.hasResourceProperties('AWS::AutoScaling::AutoScalingGroup', { MaxSize: '2', LaunchTemplate: Match.anyValue() });
    template.resourcePropertiesCountIs(
      'AWS::ECS::CapacityProvider',
      { AutoScalingGroupProvider: { ManagedScaling: { Status: 'ENABLED', TargetCapacity: 100 } } },
      2,
    );
    template.hasResourceProperties('AWS::EC2::LaunchTemplate', {
      LaunchTemplateData: {
        InstanceType: 'g4dn.xlarge',
        ImageId: { Ref: Match.stringLikeRegexp('amazonlinux2023gpu') },
        MetadataOptions: { HttpTokens: 'required' },
      },
    });
    const params = JSON.stringify(template.toJSON().Parameters);
    assert.match(params, /\/aws\/service\/ecs\/optimized-ami\/amazon-linux-2023\/gpu\/recommended\/image_id/);
  });

  it('GPU task definition: one GPU, the worker image, tier and runtime environment, long stop timeout', () => {
    const defs = Object.values(template.findResources('AWS::ECS::TaskDefinition')).map((t) => t.Properties.ContainerDefinitions[0]);
    assert.equal(defs.length, 2);
    const env = (d: any) => Object.fromEntries(d.Environment.map((e: { Name: string; Value: unknown }) => [e.Name, e.Value]));
    assert.deepEqual(defs.map((d) => env(d).EFFITAG_TIER).sort(), ['premium', 'standard']);
    for (const d of defs) {
      assert.deepEqual(d.ResourceRequirements, [{ Type: 'GPU', Value: '1' }]);
      assert.match(JSON.stringify(d.Image), /cdk-hnb659fds-container-assets/);
      assert.equal(d.StopTimeout, 120);
      const e = env(d);
      assert.equal(e.TF_FORCE_GPU_ALLOW_GROWTH, 'true');
      assert.equal(JSON.parse(e.EFFITAG_TIERS).routing.default.tier, 'economy');
      assert.ok(e.EFFITAG_QUEUE_URLS && e.EFFITAG_WEIGHTS);
    }
    template.resourcePropertiesCountIs('AWS::ECS::Service', { CapacityProviderStrategy: [Match.objectLike({ Weight: 1 })] }, 2);
  });

  it('ECS services set no DesiredCount (a deploy must not reset the task count mid-backlog) and wait for the capacity-provider association', () => {
    const services = Object.values(template.findResources('AWS::ECS::Service'));
    assert.equal(services.length, 2);
    const [association] = Object.keys(template.findResources('AWS::ECS::ClusterCapacityProviderAssociations'));
    assert.ok(association, 'the cluster associates its capacity providers');
    for (const s of services) {
      assert.equal(s.Properties.DesiredCount, undefined, 'the backlog scaling owns the count');
      assert.ok(([] as string[]).concat(s.DependsOn ?? []).includes(association), `service must depend on ${association}`);
    }
  });

  it('GPU instances: IMDS hop limit 1 (containers cannot take the instance role), the region given to the task instead', () => {
    for (const lt of Object.values(template.findResources('AWS::EC2::LaunchTemplate'))) {
      assert.deepEqual(lt.Properties.LaunchTemplateData.MetadataOptions, { HttpPutResponseHopLimit: 1, HttpTokens: 'required' });
    }
    for (const t of Object.values(template.findResources('AWS::ECS::TaskDefinition'))) {
      const env = Object.fromEntries(
        t.Properties.ContainerDefinitions[0].Environment.map((e: { Name: string; Value: unknown }) => [e.Name, e.Value]),
      );
      assert.equal(env.AWS_REGION, 'us-east-1', "the stack's region (the test stack is in us-east-1)");
    }
  });

  it('spot GPU tiers: drained on interruption, and several instance types to draw spot capacity from', () => {
    const userData = (lt: any) => JSON.stringify(lt.Properties.LaunchTemplateData.UserData);
    const lts = Object.values(template.findResources('AWS::EC2::LaunchTemplate'));
    const spot = lts.filter((lt) => lt.Properties.LaunchTemplateData.InstanceType === 'g4dn.xlarge');
    const onDemand = lts.filter((lt) => lt.Properties.LaunchTemplateData.InstanceType === 'g5.xlarge');
    assert.equal(spot.length, 1);
    assert.match(userData(spot[0]), /echo ECS_ENABLE_SPOT_INSTANCE_DRAINING=true >> \/etc\/ecs\/ecs.config/);
    assert.doesNotMatch(userData(onDemand[0]), /SPOT_INSTANCE_DRAINING/, 'only spot instances are drained for interruptions');
    const group = Object.values(template.findResources('AWS::AutoScaling::AutoScalingGroup')).find(
      (g) => g.Properties.MixedInstancesPolicy,
    )!;
    const types = group.Properties.MixedInstancesPolicy.LaunchTemplate.Overrides.map((o: { InstanceType: string }) => o.InstanceType);
    assert.equal(types[0], 'g4dn.xlarge');
    assert.ok(types.length >= 3, `spot across several pools: ${types}`);
    for (const t of types.slice(1)) assert.ok(!t.startsWith('p3'), 'no alternative costs over twice as much');
  });

  it("GPU tasks keep the CUDA JIT cache on a host volume their user can write, at CUDA's largest size", () => {
    const def = Object.values(template.findResources('AWS::ECS::TaskDefinition'))[0].Properties;
    const container = def.ContainerDefinitions[0];
    const env = Object.fromEntries(container.Environment.map((e: { Name: string; Value: unknown }) => [e.Name, e.Value]));
    assert.equal(env.CUDA_CACHE_PATH, '/var/cache/cuda');
    assert.equal(env.CUDA_CACHE_MAXSIZE, String(4 * 1024 ** 3));
    assert.deepEqual(container.MountPoints, [{ ContainerPath: '/var/cache/cuda', ReadOnly: false, SourceVolume: 'cuda-cache' }]);
    assert.deepEqual(def.Volumes, [{ Host: { SourcePath: '/var/cache/effitag-cuda' }, Name: 'cuda-cache' }]);
    for (const lt of Object.values(template.findResources('AWS::EC2::LaunchTemplate'))) {
      assert.match(JSON.stringify(lt.Properties.LaunchTemplateData.UserData), /chown 1000:1000 \/var\/cache\/effitag-cuda/);
    }
  });

  it("the alarm topic's KMS key lets CloudWatch publish (else alarm e-mails are never delivered)", () => {
    const [topic] = Object.values(template.findResources('AWS::SNS::Topic'));
    const keyId = topic.Properties.KmsMasterKeyId['Fn::GetAtt'][0];
    const key = template.toJSON().Resources[keyId];
    const statement = key.Properties.KeyPolicy.Statement.find(
      (st: Statement & { Principal?: { Service?: string } }) => st.Principal?.Service === 'cloudwatch.amazonaws.com',
    );
    assert.ok(statement, 'a key policy statement for cloudwatch.amazonaws.com');
    assert.deepEqual([...statement.Action].sort(), ['kms:Decrypt', 'kms:GenerateDataKey*']);
    assert.equal(statement.Effect, 'Allow');
  });

  it('scaling on queue backlog: one message starts a task from zero, an empty backlog returns to zero, no CPU scaling', () => {
    const policies = template.findResources('AWS::ApplicationAutoScaling::ScalingPolicy');
    const types = Object.values(policies).map((p) => p.Properties.PolicyType);
    assert.ok(
      types.every((t) => t === 'StepScaling'),
      `no target tracking on CPU: ${types}`,
    );
    const steps = Object.values(policies).map((p) => p.Properties.StepScalingPolicyConfiguration);
    assert.ok(steps.every((c) => c.AdjustmentType === 'ExactCapacity'));
    // One policy per GPU tier on one `backlog >= 0` alarm: [0, 1) → 0, [1, …) → 1 and up (the whole
    // evaluation, bounds included, is in test/cdk-scaling.test.ts).
    assert.equal(steps.length, 2, 'one policy per GPU tier');
    for (const c of steps)
      assert.deepEqual(c.StepAdjustments.slice(0, 2), [
        { MetricIntervalLowerBound: 0, MetricIntervalUpperBound: 1, ScalingAdjustment: 0 },
        { MetricIntervalLowerBound: 1, MetricIntervalUpperBound: 200, ScalingAdjustment: 1 },
      ]);
    template.resourcePropertiesCountIs(
      'AWS::CloudWatch::Alarm',
      {
        Threshold: 0,
        ComparisonOperator: 'GreaterThanOrEqualToThreshold',
        Metrics: Match.arrayWith([Match.objectLike({ Expression: 'visible + inflight' })]),
      },
      2,
    );
    assert.deepEqual(backlogSteps(1), [
      { lower: 0, upper: 1, change: 0 },
      { lower: 1, upper: undefined, change: 1 },
    ]);
  });

  it('CPU tier: Lambda with the runtime layer, SQS source with partial batch failures, concurrency capped on the event source', () => {
    template.hasResourceProperties('AWS::Lambda::LayerVersion', {
      CompatibleArchitectures: ['x86_64'],
      CompatibleRuntimes: ['nodejs24.x'],
    });
    template.hasResourceProperties('AWS::Lambda::Function', {
      MemorySize: 3538,
      Layers: [{ Ref: Match.stringLikeRegexp('CpuRuntimex8664Layer') }],
      Runtime: 'nodejs24.x',
      Environment: { Variables: Match.objectLike({ EFFITAG_TIER: 'economy', EFFITAG_WEIGHTS: Match.anyValue() }) },
    });
    template.hasResourceProperties('AWS::Lambda::EventSourceMapping', {
      BatchSize: 8,
      FunctionResponseTypes: ['ReportBatchItemFailures'],
      ScalingConfig: { MaximumConcurrency: 10 },
    });
    // Reserved concurrency with an SQS trigger throttles received messages into the DLQ, and a new
    // account's quota of 10 cannot reserve it at all.
    for (const [id, fn] of Object.entries(template.findResources('AWS::Lambda::Function'))) {
      assert.equal(fn.Properties.ReservedConcurrentExecutions, undefined, `${id} reserves concurrency`);
    }
  });

  it('least privilege: every statement lists its actions (no wildcards) and scopes object access', () => {
    const all = statements(template);
    assert.ok(all.length > 10);
    for (const { policy, s } of all) {
      const actions = ([] as string[]).concat(s.Action);
      // aws-cdk-lib's generated ECS agent and ECR pull statements are the only wildcard actions (acknowledged in cdk/nag.ts).
      if (/InstanceRole/.test(policy)) continue;
      for (const a of actions) assert.ok(!a.includes('*'), `${policy}: wildcard action ${a}`);
    }
    const rewrite = all.filter(({ s }) => s.Sid === 'RewriteWatchedObjects');
    assert.equal(rewrite.length, 3, 'each worker role (2 GPU task roles, 1 Lambda)');
    for (const { s } of rewrite)
      assert.deepEqual(([] as string[]).concat(s.Action).sort(), [
        's3:GetObject',
        's3:GetObjectTagging',
        's3:GetObjectVersion',
        's3:GetObjectVersionTagging',
        's3:PutObject',
        's3:PutObjectTagging',
      ]);
    assert.ok(!all.some(({ s }) => ([] as string[]).concat(s.Action).some((a) => a.startsWith('kms:'))), 'no KMS without a bucket key');
    // s3:ListBucket makes S3 answer 404 for a deleted object instead of 403 (else it is retried into a DLQ).
    const listers = all.filter(({ s }) => s.Sid === 'SeeMissingObjects');
    assert.deepEqual(listers.map(({ policy }) => policy.replace(/[0-9A-F]{8}$/, '')).sort(), [
      'BackfillBatchServiceRoleDefaultPolicy',
      'CpueconomyWorkerServiceRoleDefaultPolicy',
      'GpupremiumTaskTaskRoleDefaultPolicy',
      'GpustandardTaskTaskRoleDefaultPolicy',
      'IngestRouterServiceRoleDefaultPolicy',
    ]);
    for (const { s } of listers) {
      assert.equal(s.Action, 's3:ListBucket');
      assert.match(JSON.stringify(s.Resource), /^\{"Fn::GetAtt":\["Bucket[0-9A-F]+","Arn"\]\}$/);
    }
    const enqueue = all
      .filter(({ s }) => s.Sid?.startsWith('Enqueue'))
      .map(({ s }) => s.Sid)
      .sort();
    assert.deepEqual(
      enqueue,
      ['EnqueueTasks', 'Enqueueeconomy', 'Enqueuepremium', 'Enqueuestandard'],
      'the router sends to each tier queue; the backfill batch function to all',
    );
  });

  it('tag index: an on-demand, encrypted table with point-in-time recovery; workers write it, the router deletes from it on ObjectRemoved, backfills read it', () => {
    const tables = template.findResources('AWS::DynamoDB::Table');
    assert.equal(Object.keys(tables).length, 1);
    const [id, table] = Object.entries(tables)[0];
    assert.equal(table.DeletionPolicy, 'Retain');
    template.hasResourceProperties('AWS::DynamoDB::Table', {
      BillingMode: 'PAY_PER_REQUEST',
      SSESpecification: { SSEEnabled: true },
      PointInTimeRecoverySpecification: { PointInTimeRecoveryEnabled: true },
      KeySchema: [
        { AttributeName: 'pk', KeyType: 'HASH' },
        { AttributeName: 'sk', KeyType: 'RANGE' },
      ],
    });
    template.hasResourceProperties('Custom::S3BucketNotifications', {
      NotificationConfiguration: {
        QueueConfigurations: Match.arrayWith([Match.objectLike({ Events: ['s3:ObjectRemoved:*'] })]),
      },
    });
    const onTable = statements(template).filter(({ s }) => JSON.stringify(s.Resource).includes(id));
    const byRole = Object.fromEntries(
      onTable.map(({ policy, s }) => [policy.replace(/[0-9A-F]{8}$/, ''), ([] as string[]).concat(s.Action).sort()]),
    );
    const worker = ['dynamodb:BatchWriteItem', 'dynamodb:GetItem', 'dynamodb:PutItem', 'dynamodb:UpdateItem'];
    assert.deepEqual(byRole, {
      CpueconomyWorkerServiceRoleDefaultPolicy: worker,
      GpupremiumTaskTaskRoleDefaultPolicy: worker,
      GpustandardTaskTaskRoleDefaultPolicy: worker,
      IngestRouterServiceRoleDefaultPolicy: ['dynamodb:BatchWriteItem', 'dynamodb:DeleteItem', 'dynamodb:GetItem'],
      // Backfill batches read an index-only tier's records.
      BackfillBatchServiceRoleDefaultPolicy: ['dynamodb:GetItem'],
    });
    // Every runtime is told the table; users are told it as an output.
    for (const fn of Object.values(template.findResources('AWS::Lambda::Function', { Properties: { Environment: Match.anyValue() } })))
      if (fn.Properties.Environment.Variables.EFFITAG_TIERS)
        assert.deepEqual(fn.Properties.Environment.Variables.EFFITAG_INDEX_TABLE, { Ref: id });
    template.hasOutput('IndexTable', { Value: { Ref: id } });
  });

  it('the created bucket blocks public access, is SSL-only, encrypted and logs access', () => {
    template.hasResourceProperties('AWS::S3::Bucket', {
      PublicAccessBlockConfiguration: {
        BlockPublicAcls: true,
        BlockPublicPolicy: true,
        IgnorePublicAcls: true,
        RestrictPublicBuckets: true,
      },
      BucketEncryption: Match.anyValue(),
      LoggingConfiguration: { DestinationBucketName: Match.anyValue(), LogFilePrefix: 'images/' },
    });
  });

  it('dashboard and alarms on DLQ depth and oldest message age', () => {
    template.resourceCountIs('AWS::CloudWatch::Dashboard', 1);
    const alarms = Object.values(template.findResources('AWS::CloudWatch::Alarm')).map((a) => a.Properties);
    const metricOf = (a: any): string | undefined =>
      a.MetricName ?? (a.Metrics?.length === 1 ? a.Metrics[0].MetricStat?.Metric?.MetricName : undefined);
    assert.equal(
      alarms.filter((a) => metricOf(a) === 'ApproximateNumberOfMessagesVisible' && a.Threshold === 1).length,
      4,
      'intake DLQ + one per tier DLQ',
    );
    // 30 minutes on the Lambda tier; on the GPU tiers 30 more for a scale-from-zero (test/cdk-operations.test.ts).
    assert.equal(alarms.filter((a) => metricOf(a) === 'ApproximateAgeOfOldestMessage' && a.Threshold === 1800).length, 1);
    assert.equal(alarms.filter((a) => metricOf(a) === 'ApproximateAgeOfOldestMessage' && a.Threshold === 3600).length, 2);
    assert.ok(
      alarms.filter((a) => a.Threshold === 1 || a.Threshold === 1800 || a.Threshold === 3600).every((a) => a.AlarmActions?.length === 1),
      'alarms notify the SNS topic',
    );
    const body = JSON.stringify(template.findResources('AWS::CloudWatch::Dashboard'));
    for (const title of [
      'Images tagged per tier',
      'Failures recorded, by reason',
      'GPU tasks running',
      'Dead-letter queues',
      'oldest task waiting',
    ])
      assert.ok(body.includes(title), title);
  });

  it('cdk-nag AwsSolutions: zero unacknowledged findings, and every acknowledgement says why', () => {
    const report = new AwsSolutionsChecks().validateScope(app);
    assert.deepEqual(
      report.violations.map(
        (v) => `${v.ruleName} ${JSON.stringify(v.violatingResources.map((r) => (r as { constructPath?: string }).constructPath))}`,
      ),
      [],
    );
    const acks = app.node.findAll().flatMap((c) =>
      c.node.metadata
        .filter((m) => m.type === 'aws:cdk:acknowledged-rules')
        .flatMap((m) => Object.entries(m.data as Record<string, string>))
        .filter(([id]) => id.includes('AwsSolutions')),
    );
    assert.ok(acks.length >= 10);
    for (const [id, reason] of acks) assert.ok(reason.length > 30, `acknowledgement of ${id} without a real reason: ${reason}`);
  });
});

describe('CDK: backfill state machine', () => {
  it('defaults, Distributed Map over ListObjectsV2, batches of 500, concurrency 10, retries, results to S3, scoped IAM', () => {
    const { template } = synth();
    const sm = Object.values(template.findResources('AWS::StepFunctions::StateMachine'))[0];
    const definition = JSON.parse(
      (sm.Properties.DefinitionString['Fn::Join'][1] as unknown[]).map((p) => (typeof p === 'string' ? p : 'X')).join(''),
    );
    assert.equal(definition.StartAt, 'Defaults');
    // The bucket defaults to the stack's own (the X is its token), so a console start needs no input.
    assert.match(
      definition.States.Defaults.Parameters['input.$'],
      /^States\.JsonMerge\(States\.StringToJson\('\{"bucket":"X","prefix":"","filter":\{"mode":"stale"\},"since":null,"until":null\}'\), \$, false\)$/,
    );
    assert.ok(
      (sm.Properties.DefinitionString['Fn::Join'][1] as unknown[]).some(
        (p) =>
          JSON.stringify(p) ===
          JSON.stringify({
            Ref: Object.keys(
              template.findResources('AWS::S3::Bucket', { Properties: { LoggingConfiguration: { LogFilePrefix: 'images/' } } }),
            )[0],
          }),
      ),
      'the default bucket is the tagged bucket',
    );
    const map = definition.States.ListAndEnqueue;
    assert.equal(map.ItemProcessor.ProcessorConfig.Mode, 'DISTRIBUTED');
    assert.equal(map.ItemReader.Resource, 'arn:X:states:::s3:listObjectsV2');
    assert.equal(map.ItemReader.Parameters['Prefix.$'], '$.prefix');
    assert.deepEqual(map.ItemBatcher, {
      MaxItemsPerBatch: 500,
      BatchInput: { 'bucket.$': '$.bucket', 'filter.$': '$.filter', 'since.$': '$.since', 'until.$': '$.until' },
    });
    assert.equal(map.MaxConcurrency, 10);
    assert.equal(map.ToleratedFailurePercentage, 1);
    assert.ok(map.ResultWriter, 'results go to S3, not into the execution history');
    const retry = map.ItemProcessor.States.RouteBatch.Retry[0];
    assert.deepEqual([retry.ErrorEquals, retry.MaxAttempts, retry.BackoffRate], [['States.ALL'], 4, 2]);
    const smPolicy = statements(template)
      .filter(({ policy }) => /BackfillStateMachineRoleDefaultPolicy/.test(policy))
      .map(({ s }) => s);
    const list = smPolicy.find((s) => s.Action === 's3:ListBucket')!;
    assert.match(JSON.stringify(list.Resource), /^\{"Fn::GetAtt":\["Bucket[0-9A-F]+","Arn"\]\}$/, 'lists the tagged bucket only');
    assert.ok(
      smPolicy.every(
        (s) =>
          !([] as string[])
            .concat(s.Action)
            .some(
              (a) =>
                a.startsWith('s3:') &&
                a !== 's3:ListBucket' &&
                a !== 's3:PutObject' &&
                a !== 's3:GetObject' &&
                a !== 's3:ListMultipartUploadParts' &&
                a !== 's3:AbortMultipartUpload',
            ),
      ),
    );
  });
});

describe('CDK: one stack per configuration', () => {
  it('two GPU tiers and one CPU tier → matching queues and compute; bucket imported with a KMS key', () => {
    const { template, app } = synth({
      'effitag:tiersFile': 'examples/tiers/two-gpu-one-cpu.json',
      'effitag:bucketName': 'my-photos',
      'effitag:bucketKmsKeyArn': 'arn:aws:kms:us-east-1:111111111111:key/abcd',
      'effitag:prefixes': 'photos/,scans/',
      'effitag:events': 's3', // an existing bucket's default is EventBridge (test/cdk-events.test.ts); this one checks the notification rules
    });
    assert.equal(Object.keys(template.findResources('AWS::SQS::Queue', { Properties: { FifoQueue: true } })).length, 6);
    template.resourceCountIs('AWS::ECS::Service', 2);
    template.resourceCountIs('AWS::AutoScaling::AutoScalingGroup', 2);
    template.hasResourceProperties('AWS::Lambda::LayerVersion', { CompatibleArchitectures: ['arm64'] });
    template.hasResourceProperties('AWS::Lambda::Function', {
      Architectures: ['arm64'],
      MemorySize: 2048,
      Environment: { Variables: Match.objectLike({ EFFITAG_TIER: 'thumbs' }) },
    });
    template.resourceCountIs('AWS::S3::Bucket', 3); // weights, access logs, backfill results (the tagged bucket is imported)
    const all = statements(template);
    const rewrite = all.find(({ s }) => s.Sid === 'RewriteWatchedObjects')!.s;
    assert.match(JSON.stringify(rewrite.Resource), /my-photos\/photos\/\*.*my-photos\/scans\/\*/);
    const list = all.find(({ s }) => s.Sid === 'SeeMissingObjects')!.s as Statement & { Condition?: unknown };
    assert.deepEqual(list.Condition, { StringLike: { 's3:prefix': ['photos/*', 'scans/*'] } }, 'listing scoped to the watched prefixes');
    assert.ok(all.some(({ s }) => s.Sid === 'BucketKmsKey' && JSON.stringify(s.Action).includes('kms:GenerateDataKey')));
    template.hasResourceProperties('Custom::S3BucketNotifications', {
      NotificationConfiguration: {
        QueueConfigurations: Match.arrayWith([
          Match.objectLike({ Filter: { Key: { FilterRules: [{ Name: 'prefix', Value: 'scans/' }] } } }),
        ]),
      },
    });
    const report = new AwsSolutionsChecks().validateScope(app);
    assert.deepEqual(
      report.violations.map((v) => v.ruleName),
      [],
    );
  });

  it('effitag:index=false: no table, no ObjectRemoved notifications, no index variable; refused when a tier writes back to the index only', async () => {
    const { template } = synth({ 'effitag:index': 'false' });
    template.resourceCountIs('AWS::DynamoDB::Table', 0);
    assert.doesNotMatch(JSON.stringify(template.toJSON()), /ObjectRemoved|EFFITAG_INDEX_TABLE|dynamodb:/);
    const dir = await tempDir();
    const tiers = JSON.parse(readFileSync('tiers/defaults.json', 'utf8'));
    tiers.tiers.economy.writeBack = 'index';
    writeFileSync(join(dir, 'tiers.json'), JSON.stringify(tiers));
    assert.throws(
      () => synth({ 'effitag:index': 'false', 'effitag:tiersFile': join(dir, 'tiers.json') }),
      /effitag:index=false, but tier economy writes back to the index only/,
    );
    // With the index, an index-only tier synthesizes.
    synth({ 'effitag:tiersFile': join(dir, 'tiers.json') });
  });

  it('an invalid tiers file fails synthesis with the validation message', async () => {
    const dir = await tempDir();
    const bad = join(dir, 'bad.json');
    writeFileSync(
      bad,
      JSON.stringify({
        version: 1,
        tiers: { a: { variants: ['b9'], compute: { target: 'lambda-cpu', memoryMb: 2048 }, engine: 'ort', batchSize: 4 } },
        routing: { default: { tier: 'a' } },
      }),
    );
    assert.throws(
      () => synth({ 'effitag:tiersFile': bad }),
      /invalid tiers configuration:\n\s+tiers\.a\.variants\[0\]: unknown variant "b9"/,
    );
  });

  it("a spot tier's task fits the smallest instance type it may launch", async () => {
    const dir = await tempDir();
    const file = join(dir, 'spot.json');
    writeFileSync(
      file,
      JSON.stringify({
        version: 1,
        tiers: {
          gpu: {
            variants: ['b0'],
            compute: {
              target: 'ecs-gpu',
              instanceType: 'g4dn.2xlarge',
              capacity: 'spot',
              maxTasks: 1,
              alternativeInstanceTypes: ['g4dn.xlarge'],
            },
            engine: 'tfjs',
            batchSize: 8,
          },
        },
        routing: { default: { tier: 'gpu' } },
      }),
    );
    const { template } = synth({ 'effitag:tiersFile': file });
    const group = Object.values(template.findResources('AWS::AutoScaling::AutoScalingGroup'))[0];
    assert.deepEqual(group.Properties.MixedInstancesPolicy.LaunchTemplate.Overrides, [
      { InstanceType: 'g4dn.2xlarge' },
      { InstanceType: 'g4dn.xlarge' },
    ]);
    const container = Object.values(template.findResources('AWS::ECS::TaskDefinition'))[0].Properties.ContainerDefinitions[0];
    assert.equal(
      container.MemoryReservation,
      Math.floor(16 * 1024 * 0.75),
      'sized for the 16 GiB g4dn.xlarge, not the 32 GiB g4dn.2xlarge',
    );
  });

  it('overlapping watched prefixes are refused (S3 rejects overlapping notification rules)', () => {
    assert.throws(() => synth({ 'effitag:prefixes': 'photos/,photos/raw/' }), /overlaps "photos\/"/);
  });
});

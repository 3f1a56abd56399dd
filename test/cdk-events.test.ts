import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { App } from 'aws-cdk-lib';
import { Match, type Template } from 'aws-cdk-lib/assertions';
import { configFromContext } from '../cdk/config.ts';
import { nagViolations, synthStack } from './support/synth.ts';

function synth(context: Record<string, unknown> = {}) {
  const { app, stack, template } = synthStack(context);
  return { stack, template, nag: nagViolations(app) };
}

const logicalId = (template: Template, type: string, props: object = {}): string => {
  const ids = Object.keys(template.findResources(type, props));
  assert.equal(ids.length, 1, `one ${type}: ${ids.join(', ')}`);
  return ids[0];
};

/** The intake queue (not its DLQ): the router's event source. */
const intakeId = (template: Template) =>
  (
    Object.values(template.findResources('AWS::Lambda::EventSourceMapping')) as {
      Properties: { EventSourceArn: { 'Fn::GetAtt': string[] } };
    }[]
  )
    .map((m) => m.Properties.EventSourceArn['Fn::GetAtt'][0])
    .find((id) => id.startsWith('IngestIntake'))!;

const existing = { 'effitag:bucketName': 'my-photos', 'effitag:prefixes': 'photos/,scans/' };

describe('CDK: how uploads reach the intake queue (effitag:events)', () => {
  it('an existing bucket defaults to EventBridge: its notification rules untouched, one rule feeding the intake queue from that rule only', () => {
    const { template, nag } = synth(existing);
    // The notification handler only turns on the bucket's EventBridge switch; it adds no queue rule that could overlap one already there.
    template.hasResourceProperties('Custom::S3BucketNotifications', {
      BucketName: 'my-photos',
      Managed: false,
      NotificationConfiguration: { EventBridgeConfiguration: {} },
    });
    const custom = Object.values(template.findResources('Custom::S3BucketNotifications'))[0] as {
      Properties: { NotificationConfiguration: object };
    };
    assert.deepEqual(Object.keys(custom.Properties.NotificationConfiguration), ['EventBridgeConfiguration']);

    const ruleId = logicalId(template, 'AWS::Events::Rule');
    const intake = intakeId(template);
    const dlq = Object.keys(template.findResources('AWS::SQS::Queue')).find((id) => id.startsWith('IngestIntakeDlq'))!;
    template.hasResourceProperties('AWS::Events::Rule', {
      State: 'ENABLED',
      EventPattern: {
        source: ['aws.s3'],
        'detail-type': ['Object Created', 'Object Deleted'],
        detail: { bucket: { name: ['my-photos'] }, object: { key: [{ prefix: 'photos/' }, { prefix: 'scans/' }] } },
      },
      Targets: [
        Match.objectLike({
          Arn: { 'Fn::GetAtt': [intake, 'Arn'] },
          DeadLetterConfig: { Arn: { 'Fn::GetAtt': [dlq, 'Arn'] } },
          RetryPolicy: { MaximumRetryAttempts: 185, MaximumEventAgeInSeconds: 86400 },
        }),
      ],
    });
    // The intake queue accepts EventBridge's messages from this rule only.
    const policies = Object.values(template.findResources('AWS::SQS::QueuePolicy')) as {
      Properties: {
        Queues: { Ref: string }[];
        PolicyDocument: { Statement: { Principal?: { Service?: string }; Condition?: unknown; Action: unknown }[] };
      };
    }[];
    const intakePolicy = policies.find((p) => p.Properties.Queues.some((q) => q.Ref === intake));
    assert.ok(intakePolicy, 'the intake queue has a policy');
    const fromEvents = intakePolicy.Properties.PolicyDocument.Statement.filter((s) => s.Principal?.Service === 'events.amazonaws.com');
    assert.equal(fromEvents.length, 1);
    // aws-cdk-lib's grantSendMessages: sending, and the two reads SendMessage clients make; nothing that receives or deletes.
    assert.deepEqual(fromEvents[0].Action, ['sqs:SendMessage', 'sqs:GetQueueAttributes', 'sqs:GetQueueUrl']);
    assert.deepEqual(fromEvents[0].Condition, { ArnEquals: { 'aws:SourceArn': { 'Fn::GetAtt': [ruleId, 'Arn'] } } });
    assert.deepEqual(nag, [], 'cdk-nag AwsSolutions clean in EventBridge mode');
  });

  it('-c effitag:events=s3 keeps S3 notification rules for an existing bucket (one per prefix and event type, filters encoded as S3 matches them), and no EventBridge rule', () => {
    const { template } = synth({ ...existing, 'effitag:prefixes': 'photos/,my scans/', 'effitag:events': 's3' });
    template.resourceCountIs('AWS::Events::Rule', 0);
    const custom = Object.values(template.findResources('Custom::S3BucketNotifications'))[0] as {
      Properties: {
        NotificationConfiguration: { QueueConfigurations: { Events: string[]; Filter: unknown }[]; EventBridgeConfiguration?: object };
      };
    };
    const rules = custom.Properties.NotificationConfiguration.QueueConfigurations.map(
      (q) => `${q.Events.join()} ${JSON.stringify(q.Filter)}`,
    );
    // A space is '+' in a notification filter, as in the keys S3's notifications carry.
    assert.deepEqual(rules.sort(), [
      's3:ObjectCreated:* {"Key":{"FilterRules":[{"Name":"prefix","Value":"my+scans/"}]}}',
      's3:ObjectCreated:* {"Key":{"FilterRules":[{"Name":"prefix","Value":"photos/"}]}}',
      's3:ObjectRemoved:* {"Key":{"FilterRules":[{"Name":"prefix","Value":"my+scans/"}]}}',
      's3:ObjectRemoved:* {"Key":{"FilterRules":[{"Name":"prefix","Value":"photos/"}]}}',
    ]);
    assert.equal(custom.Properties.NotificationConfiguration.EventBridgeConfiguration, undefined);
  });

  it('a created bucket keeps S3 notifications by default; -c effitag:events=eventbridge turns its EventBridge switch on and watches the whole bucket without a key filter', () => {
    const owned = synth({ 'effitag:index': 'false' }).template;
    owned.resourceCountIs('AWS::Events::Rule', 0);
    owned.hasResourceProperties('Custom::S3BucketNotifications', {
      NotificationConfiguration: { QueueConfigurations: [Match.objectLike({ Events: ['s3:ObjectCreated:*'] })] },
    });

    const { template, nag } = synth({ 'effitag:events': 'eventbridge', 'effitag:index': 'false' });
    const bucket = logicalId(template, 'AWS::S3::Bucket', { Properties: { LoggingConfiguration: { LogFilePrefix: 'images/' } } });
    template.hasResourceProperties('Custom::S3BucketNotifications', {
      BucketName: { Ref: bucket },
      NotificationConfiguration: { EventBridgeConfiguration: {} },
    });
    // Without the tag index, deletions are not needed: Object Created only; '' watches every key.
    template.hasResourceProperties('AWS::Events::Rule', {
      EventPattern: { source: ['aws.s3'], 'detail-type': ['Object Created'], detail: { bucket: { name: [{ Ref: bucket }] } } },
    });
    assert.deepEqual(nag, []);
  });

  it('validates the mode, and allows overlapping prefixes only where they cannot collide (EventBridge)', () => {
    const config = (context: Record<string, string>) => configFromContext(new App({ context }).node);
    assert.throws(() => config({ ...existing, 'effitag:events': 'sns' }), /effitag:events: "sns" is not one of s3, eventbridge/);
    const overlapping = { ...existing, 'effitag:prefixes': 'photos/,photos/raw/' };
    assert.throws(() => config({ ...overlapping, 'effitag:events': 's3' }), /overlaps "photos\/".*effitag:events=eventbridge/);
    assert.deepEqual(config(overlapping).prefixes, ['photos/', 'photos/raw/']);
    assert.equal(config(overlapping).events, 'eventbridge');
    assert.equal(config({}).events, 's3');
  });
});

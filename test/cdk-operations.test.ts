/**
 * The stack as an operator lives with it: a clean `cdk destroy` (what is deleted, what is kept), the
 * spot-draining permission, a queue-age alarm that a GPU scale-from-zero does not trip, a template
 * that bakes no region, and the idle cost `effitag tiers cost` reports, counted from the template.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { promisify } from 'node:util';
import { AwsSolutionsChecks } from 'cdk-nag';
import { idleCost, idleResourcesOfTemplate, idleResourcesOfTiers } from '../tiers/cost.ts';
import { tempDir } from './support/fixtures.ts';
import { synthStack } from './support/synth.ts';

const SHIPPED = [
  'tiers/defaults.json',
  ...readdirSync('examples/tiers')
    .filter((f) => f.endsWith('.json'))
    .map((f) => `examples/tiers/${f}`),
];

type Resource = { Type: string; Properties?: Record<string, any>; DeletionPolicy?: string; UpdateReplacePolicy?: string };

function synth(context: Record<string, unknown> = {}) {
  const { app, config, template } = synthStack(context);
  const json = template.toJSON() as { Resources: Record<string, Resource> };
  return { app, config, resources: json.Resources, json };
}

describe('cdk destroy: disposable resources go, user data stays', () => {
  const { app, resources } = synth();
  const entries = Object.entries(resources);

  it('the backfill results bucket is emptied and deleted with the stack', () => {
    const [id, results] = entries.find(([id, r]) => r.Type === 'AWS::S3::Bucket' && id.startsWith('BackfillResults'))!;
    assert.equal(results.DeletionPolicy, 'Delete');
    const emptier = entries.filter(([, r]) => r.Type === 'Custom::S3AutoDeleteObjects');
    assert.equal(emptier.length, 1, 'one auto-delete custom resource');
    assert.deepEqual(emptier[0][1].Properties?.BucketName, { Ref: id }, 'it empties the results bucket, and only that one');
  });

  it("the alarm topic's KMS key is scheduled for deletion (7-day window), not left behind at $1 a month", () => {
    const keys = entries.filter(([, r]) => r.Type === 'AWS::KMS::Key');
    assert.equal(keys.length, 1);
    assert.equal(keys[0][1].DeletionPolicy, 'Delete');
    assert.equal(keys[0][1].Properties?.PendingWindowInDays, 7);
  });

  it('kept: the tagged bucket, the weights, the access logs, the tag index and the embeddings; nothing else but log groups', () => {
    const retained = entries
      .filter(([, r]) => r.DeletionPolicy === 'Retain')
      .map(([id, r]) => `${r.Type} ${id.replace(/[0-9A-F]{8}$/, '')}`);
    const logGroups = retained.filter((r) => r.startsWith('AWS::Logs::LogGroup'));
    assert.deepEqual(retained.filter((r) => !logGroups.includes(r)).sort(), [
      'AWS::DynamoDB::Table TagIndexTable',
      'AWS::S3::Bucket AccessLogs',
      'AWS::S3::Bucket Bucket',
      'AWS::S3::Bucket Weights',
      // Embeddings (issue 23): computed again only by running every model again (backfill --embeddings).
      ...['b0', 'b1', 'b2', 'b3', 'b5', 'b7', 'v2m', 'v2s'].map((m) => `AWS::S3Vectors::Index SimilarImagesIndex${m}`),
      'AWS::S3Vectors::VectorBucket SimilarImagesBucket',
    ]);
    // Log groups are kept for a post-mortem and empty themselves (one month's retention; no cost once empty).
    for (const [, r] of entries.filter(([, r]) => r.Type === 'AWS::Logs::LogGroup' && r.DeletionPolicy === 'Retain'))
      assert.ok(r.Properties?.RetentionInDays, 'a retained log group expires its events');
  });

  it('cdk-nag: zero unacknowledged findings with the auto-delete handler', () => {
    const report = new AwsSolutionsChecks().validateScope(app);
    assert.deepEqual(
      report.violations.map(
        (v) => `${v.ruleName} ${JSON.stringify(v.violatingResources.map((r) => (r as { constructPath?: string }).constructPath))}`,
      ),
      [],
    );
  });
});

describe('GPU instances and alarms', () => {
  const { resources } = synth();
  const entries = Object.entries(resources);
  const policyOf = (tier: string) =>
    entries.find(([id, r]) => r.Type === 'AWS::IAM::Policy' && id.startsWith(`Gpu${tier}InstanceRoleDefaultPolicy`))![1].Properties!
      .PolicyDocument.Statement as { Sid?: string; Action: string | string[]; Resource: unknown; Condition?: unknown }[];

  it('spot instances may drain themselves (ecs:UpdateContainerInstancesState, this cluster only); on-demand ones need not', () => {
    const drain = policyOf('standard').find((s) => ([] as string[]).concat(s.Action).includes('ecs:UpdateContainerInstancesState'));
    assert.ok(drain, 'ECS_ENABLE_SPOT_INSTANCE_DRAINING needs the agent to set its instance DRAINING');
    const [clusterId] = entries.find(([, r]) => r.Type === 'AWS::ECS::Cluster')!;
    assert.deepEqual(drain.Condition, { ArnEquals: { 'ecs:cluster': { 'Fn::GetAtt': [clusterId, 'Arn'] } } });
    assert.ok(
      !policyOf('premium').some((s) => ([] as string[]).concat(s.Action).includes('ecs:UpdateContainerInstancesState')),
      'the on-demand tier is never interrupted',
    );
  });

  it('queue age: 30 minutes on the Lambda tier, 60 on GPU tiers (a scale-from-zero may take the first 30)', () => {
    const ageOf = (tier: string) => {
      const [, alarm] = entries.find(([id, r]) => r.Type === 'AWS::CloudWatch::Alarm' && id.startsWith(`Observability${tier}QueueAge`))!;
      assert.equal(alarm.Properties?.Metrics[0].MetricStat.Metric.MetricName, 'ApproximateAgeOfOldestMessage');
      return alarm.Properties?.Threshold;
    };
    assert.equal(ageOf('economy'), 30 * 60);
    assert.equal(ageOf('standard'), 60 * 60);
    assert.equal(ageOf('premium'), 60 * 60);
  });
});

describe('region', () => {
  it('the app run as `cdk synth` runs it (CDK_DEFAULT_REGION set by the CLI) bakes no region into the template', async () => {
    const outdir = await tempDir('effitag-region-');
    await promisify(execFile)(process.execPath, ['--import', 'tsx', 'cdk/app.ts'], {
      env: {
        ...process.env,
        CDK_OUTDIR: outdir,
        // What the CDK CLI passes when no region is configured anywhere.
        CDK_DEFAULT_REGION: 'us-east-1',
        CDK_DEFAULT_ACCOUNT: '111111111111',
        CDK_CONTEXT_JSON: JSON.stringify({ 'aws:cdk:bundling-stacks': [], 'effitag:tiersFile': 'tiers/defaults.json' }),
      },
      maxBuffer: 64 * 1024 * 1024,
    });
    const text = readFileSync(join(outdir, 'EffiTag.template.json'), 'utf8');
    assert.equal(text.match(/us-east-1/g)?.length ?? 0, 0, 'no region in image URIs, ARNs, log configuration or task environments');
    // biome-ignore lint/suspicious/noTemplateCurlyInString: CloudFormation's own Fn::Sub syntax, not a JS template
    assert.ok(text.includes('"Ref":"AWS::Region"') || text.includes('${AWS::Region}'), 'the region is the deploy-time pseudo parameter');
    assert.ok(!text.includes('111111111111'), 'nor the account');
  });
});

describe('idle cost, counted from what the stack creates', () => {
  for (const file of SHIPPED) {
    it(`${file}: the tiers file's prediction equals the synthesized template's alarms, metrics, dashboard and key`, () => {
      const { config, json } = synth({ 'effitag:tiersFile': file });
      const counted = idleResourcesOfTemplate(json);
      const predicted = idleResourcesOfTiers(config.tiers);
      assert.deepEqual({ ...predicted, source: '' }, { ...counted, source: '' });
      const tiers = Object.keys(config.tiers.tiers).length;
      assert.ok(counted.alarms > 2 * tiers, 'DLQ and age alarms per tier, plus scaling alarms');
      const cost = idleCost(counted);
      const polls = 0.648 * (counted.standardQueuePollers * 0.4 + counted.fifoQueuePollers * 0.5);
      assert.ok(Math.abs(cost.dollarsPerMonth - (3 + (counted.alarmMetrics + 2 * counted.capacityProviders) * 0.1 + 1 + polls)) < 1e-9);
    });
  }

  it('`effitag tiers cost --template` prices the template it is given', async () => {
    const { json } = synth();
    const file = join(await tempDir('effitag-idle-'), 'EffiTag.template.json');
    writeFileSync(file, JSON.stringify(json));
    const run = (...extra: string[]) =>
      promisify(execFile)(process.execPath, ['bin/effitag.js', 'tiers', 'cost', '--tiers', 'tiers/defaults.json', '--json', ...extra]);
    const fromTemplate = JSON.parse((await run('--template', file)).stdout).idle;
    assert.equal(fromTemplate.source, file);
    const alarms = fromTemplate.items.find((i: { what: string }) => i.what.startsWith('CloudWatch alarms'));
    assert.equal(alarms.count, idleResourcesOfTemplate(json).alarms);
    const predicted = JSON.parse((await run()).stdout).idle;
    assert.equal(predicted.dollarsPerMonth, fromTemplate.dollarsPerMonth);
    assert.match(predicted.source, /what the stack creates/);
  });

  it("the default tiers: $6.08 a month (dashboard $3, 9 alarms reading 11 metrics $1.10, KMS key $1, ECS's 4 scaling alarms $0.40, two idle queue pollers $0.58)", () => {
    const { json } = synth();
    const r = idleResourcesOfTemplate(json);
    assert.deepEqual([r.alarms, r.alarmMetrics, r.dashboards, r.kmsKeys], [9, 11, 1, 1]);
    assert.deepEqual(
      [r.capacityProviders, r.standardQueuePollers, r.fifoQueuePollers],
      [2, 1, 1],
      'two GPU tiers; the router and the economy Lambda poll',
    );
    assert.equal(idleCost(r).dollarsPerMonth.toFixed(2), '6.08');
  });
});

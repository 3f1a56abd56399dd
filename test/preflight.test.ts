import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { deployContext, runPreflight } from '../cli/commands/preflight.ts';
import {
  type BucketNotificationConfig,
  type CheckRow,
  eventsOverlap,
  type HeadResult,
  notificationConflicts,
  type PreflightAws,
  type PreflightInput,
  preflight,
  queueArnOf,
  type StackResource,
} from '../pipeline/preflight.ts';
import { readTiersJson } from '../tiers/load.ts';
import { parseTiers } from '../tiers/schema.ts';
import { tempDir } from './support/fixtures.ts';

const DEFAULTS = parseTiers(readTiersJson('tiers/defaults.json'), 'tiers/defaults.json');
const ALL_MODELS = ['b0', 'b1', 'b2', 'b3', 'b5', 'v2-s', 'b7', 'v2-m'];

/** A rule as GetBucketNotificationConfiguration returns it (filter names capitalised). */
const rule = (
  Id: string,
  Events: string[],
  filter: { prefix?: string; suffix?: string } = {},
  dest: object = { QueueArn: 'arn:aws:sqs:us-east-1:111111111111:other' },
) => ({
  Id,
  Events,
  ...dest,
  ...(filter.prefix || filter.suffix
    ? {
        Filter: {
          Key: {
            FilterRules: [
              ...(filter.prefix ? [{ Name: 'Prefix', Value: filter.prefix }] : []),
              ...(filter.suffix ? [{ Name: 'Suffix', Value: filter.suffix }] : []),
            ],
          },
        },
      }
    : {}),
});

const CREATED = ['s3:ObjectCreated:*'];
const BOTH = ['s3:ObjectCreated:*', 's3:ObjectRemoved:*'];

describe('notificationConflicts: rules S3 would refuse beside the stack’s', () => {
  it('event types overlap by wildcard: ObjectCreated:* covers Put, not ObjectRemoved or ObjectRestore', () => {
    assert.ok(eventsOverlap('s3:ObjectCreated:Put', 's3:ObjectCreated:*'));
    assert.ok(eventsOverlap('s3:ObjectCreated:*', 's3:ObjectCreated:CompleteMultipartUpload'));
    assert.ok(eventsOverlap('s3:ObjectRemoved:DeleteMarkerCreated', 's3:ObjectRemoved:*'));
    assert.ok(!eventsOverlap('s3:ObjectRemoved:*', 's3:ObjectCreated:*'));
    assert.ok(!eventsOverlap('s3:ObjectRestore:*', 's3:ObjectCreated:*'));
    assert.ok(!eventsOverlap('s3:ObjectCreated:Put', 's3:ObjectCreated:Copy'));
  });

  it('names an overlapping-prefix rule: its id, events, filter, destination, and the way out', () => {
    const existing = { QueueConfigurations: [rule('thumbnailer', CREATED, { prefix: 'photos/' })] };
    const [c, ...more] = notificationConflicts(existing, { events: BOTH, prefixes: ['photos/raw/'] });
    assert.equal(more.length, 0);
    assert.deepEqual(
      [c.id, c.events, c.prefix, c.suffix, c.collidesWith],
      ['thumbnailer', CREATED, 'photos/', '', { event: 's3:ObjectCreated:*', prefix: 'photos/raw/' }],
    );
    assert.match(c.message, /rule "thumbnailer" \(s3:ObjectCreated:\*; prefix "photos\/" → arn:aws:sqs:us-east-1:111111111111:other\)/);
    assert.match(c.message, /Configurations overlap/);
    assert.match(c.message, /-c effitag:events=eventbridge/);
    assert.match(c.message, /remove or narrow that rule/);
  });

  it('a suffix-only rule for ObjectCreated:Put collides with every watched prefix (the stack’s rules have no suffix)', () => {
    const existing = {
      LambdaFunctionConfigurations: [
        rule(
          'jpeg-resizer',
          ['s3:ObjectCreated:Put'],
          { suffix: '.jpg' },
          { LambdaFunctionArn: 'arn:aws:lambda:us-east-1:111111111111:function:resize' },
        ),
      ],
    };
    const conflicts = notificationConflicts(existing, { events: CREATED, prefixes: ['photos/', 'scans/'] });
    assert.deepEqual(
      conflicts.map((c) => [c.id, c.suffix, c.destination]),
      [['jpeg-resizer', '.jpg', 'arn:aws:lambda:us-east-1:111111111111:function:resize']],
    );
    assert.match(conflicts[0].message, /suffix "\.jpg"/);
  });

  it('leaves alone what S3 accepts: other prefixes, other event types, removals when the stack watches creations only', () => {
    const existing: BucketNotificationConfig = {
      QueueConfigurations: [rule('logs', BOTH, { prefix: 'logs/' }), rule('restores', ['s3:ObjectRestore:*'], { prefix: 'photos/' })],
      TopicConfigurations: [
        rule('deletions', ['s3:ObjectRemoved:Delete'], { prefix: 'photos/' }, { TopicArn: 'arn:aws:sns:us-east-1:111111111111:del' }),
      ],
    };
    assert.deepEqual(notificationConflicts(existing, { events: CREATED, prefixes: ['photos/', 'scans/'] }), []);
    // With the tag index the stack also subscribes ObjectRemoved:*: now the deletions rule collides.
    assert.deepEqual(
      notificationConflicts(existing, { events: BOTH, prefixes: ['photos/', 'scans/'] }).map((c) => [c.id, c.collidesWith.event]),
      [['deletions', 's3:ObjectRemoved:*']],
    );
  });

  it('watching the whole bucket collides with any rule of the same event type', () => {
    const existing = { QueueConfigurations: [rule('deep', CREATED, { prefix: 'a/b/c/', suffix: '.png' })] };
    assert.deepEqual(
      notificationConflicts(existing, { events: CREATED, prefixes: [''] }).map((c) => c.id),
      ['deep'],
    );
  });

  it('EventBridge already on: no conflict from it, and the way out says it is already on', () => {
    const quiet = { EventBridgeConfiguration: {}, QueueConfigurations: [rule('logs', CREATED, { prefix: 'logs/' })] };
    assert.deepEqual(notificationConflicts(quiet, { events: BOTH, prefixes: ['photos/'] }), []);
    const clash = { ...quiet, QueueConfigurations: [rule('all', CREATED)] };
    const [c] = notificationConflicts(clash, { events: CREATED, prefixes: ['photos/'] });
    assert.match(c.message, /no filter/);
    assert.match(c.message, /already sends events to EventBridge/);
  });

  it("skips the stack's own rules (its intake queue) from an earlier deploy", () => {
    const own = 'arn:aws:sqs:eu-west-1:111111111111:EffiTag-IngestIntake-abc';
    assert.equal(queueArnOf('https://sqs.eu-west-1.amazonaws.com/111111111111/EffiTag-IngestIntake-abc'), own);
    const existing = { QueueConfigurations: [rule('EffiTag-123', CREATED, { prefix: 'photos/' }, { QueueArn: own })] };
    assert.deepEqual(notificationConflicts(existing, { events: CREATED, prefixes: ['photos/'], ownQueueArn: own }), []);
    assert.equal(notificationConflicts(existing, { events: CREATED, prefixes: ['photos/'] }).length, 1);
  });
});

/** An in-memory account: a stack (or none), objects, zones, offerings, quotas, a bucket's notification rules. */
class FakeAws implements PreflightAws {
  calls: string[] = [];
  outputs?: Record<string, string>;
  resources: StackResource[] = [];
  objects = new Set<string>();
  denied = new Set<string>();
  subnets: Record<string, string> = {};
  vpcSubnets: Record<string, string> = {};
  zones = ['us-east-1a', 'us-east-1b', 'us-east-1c'];
  offerings: Record<string, string[]> = {};
  vcpus: Record<string, number> = { 'g4dn.xlarge': 4, 'g5.xlarge': 4, 'g6.xlarge': 4, 'g5.2xlarge': 8 };
  lambda = { concurrentExecutions: 1000, unreservedConcurrentExecutions: 1000 };
  quotas: Record<string, number | undefined> = { 'L-DB2E81BA': 64, 'L-3819A6DF': 64 };
  notifications: BucketNotificationConfig = {};

  async stackOutputs(name: string) {
    this.calls.push(`stackOutputs ${name}`);
    return this.outputs;
  }
  async stackResources(name: string) {
    this.calls.push(`stackResources ${name}`);
    return this.resources;
  }
  async headObject(bucket: string, key: string): Promise<HeadResult> {
    this.calls.push(`headObject ${bucket}/${key}`);
    const k = `${bucket}/${key}`;
    return this.objects.has(k) ? 'present' : this.denied.has(k) ? 'denied' : 'missing';
  }
  async subnetZones(q: { subnetIds?: string[]; vpcId?: string }) {
    this.calls.push(`subnetZones ${JSON.stringify(q)}`);
    const from = q.subnetIds ? Object.entries(this.subnets).filter(([id]) => q.subnetIds!.includes(id)) : Object.entries(this.vpcSubnets);
    return from.map(([subnetId, zone]) => ({ subnetId, zone }));
  }
  async availabilityZones() {
    this.calls.push('availabilityZones');
    return this.zones;
  }
  async instanceTypeOfferings(types: string[], zones: string[]) {
    this.calls.push(`instanceTypeOfferings ${types.join(',')} in ${zones.join(',')}`);
    return types.flatMap((t) => (this.offerings[t] ?? []).filter((z) => zones.includes(z)).map((zone) => ({ instanceType: t, zone })));
  }
  async instanceVcpus(types: string[]) {
    return Object.fromEntries(types.map((t) => [t, this.vcpus[t]]));
  }
  async lambdaAccountSettings() {
    this.calls.push('lambdaAccountSettings');
    return this.lambda;
  }
  async serviceQuota(code: string) {
    this.calls.push(`serviceQuota ${code}`);
    return this.quotas[code];
  }
  async bucketNotifications(bucket: string) {
    this.calls.push(`bucketNotifications ${bucket}`);
    return this.notifications;
  }
}

/** A deployed default stack with its VPC's two subnets, everything offered and every weight published. */
function deployedDefaults(): FakeAws {
  const aws = new FakeAws();
  aws.outputs = {
    WeightsLocation: 's3://effitag-weights-123/weights/',
    QueueUrls: JSON.stringify({ economy: 'q1', standard: 'q2', premium: 'q3' }),
    IntakeQueueUrl: 'https://sqs.us-east-1.amazonaws.com/111111111111/EffiTag-IngestIntake-1',
    BucketName: 'effitag-bucket-1',
  };
  aws.resources = [
    { logicalId: 'VpcpublicSubnet1Subnet1', type: 'AWS::EC2::Subnet', physicalId: 'subnet-a' },
    { logicalId: 'VpcpublicSubnet2Subnet2', type: 'AWS::EC2::Subnet', physicalId: 'subnet-b' },
    { logicalId: 'IngestIntake', type: 'AWS::SQS::Queue', physicalId: 'https://…' },
  ];
  aws.subnets = { 'subnet-a': 'us-east-1a', 'subnet-b': 'us-east-1b', 'subnet-other': 'us-east-1c' };
  aws.offerings = { 'g4dn.xlarge': ['us-east-1a', 'us-east-1b'], 'g5.xlarge': ['us-east-1a', 'us-east-1b'] };
  for (const m of ALL_MODELS) aws.objects.add(`effitag-weights-123/weights/${m}/manifest.json`);
  return aws;
}

const input = (context: Partial<PreflightInput['context']> = {}): PreflightInput => ({
  stackName: 'EffiTag',
  tiers: DEFAULTS,
  tiersFile: 'tiers/defaults.json',
  context: { prefixes: [''], events: 's3', index: true, ...context },
});

const row = (rows: CheckRow[], check: CheckRow['check'], subject: string) => {
  const r = rows.find((x) => x.check === check && x.subject === subject);
  assert.ok(r, `no ${check} row for ${subject}: ${JSON.stringify(rows.map((x) => `${x.check}/${x.subject}`))}`);
  return r;
};

describe('preflight (pure, over an in-memory AWS)', () => {
  it('a deployed default stack with everything in place is ready', async () => {
    const aws = deployedDefaults();
    const report = await preflight(aws, input());
    assert.equal(report.ready, true, JSON.stringify(report.rows, null, 1));
    assert.deepEqual(
      report.rows.filter((r) => r.check === 'weights').map((r) => [r.subject, r.status]),
      ALL_MODELS.map((m) => [m, 'ok']),
    );
    assert.match(
      row(report.rows, 'gpu-offering', 'standard').detail,
      /g4dn\.xlarge: us-east-1a, us-east-1b \(zones: the stack's subnets subnet-a, subnet-b\)/,
    );
    // Offerings were asked for the stack's subnets' zones only, not every zone of the region.
    assert.ok(aws.calls.includes('instanceTypeOfferings g4dn.xlarge,g5.xlarge in us-east-1a,us-east-1b'), aws.calls.join('\n'));
    assert.equal(row(report.rows, 'gpu-quota', 'spot G/VT vCPUs (L-3819A6DF)').status, 'ok');
    assert.match(
      row(report.rows, 'gpu-quota', 'on-demand G/VT vCPUs (L-DB2E81BA)').detail,
      /quota 64 ≥ 8 for premium \(2 × g5\.xlarge, 4 vCPUs\)/,
    );
    assert.equal(row(report.rows, 'lambda-concurrency', 'account').status, 'ok');
    assert.equal(row(report.rows, 'tiers', 'tiers/defaults.json').status, 'ok');
    // A bucket the stack created: no notification check.
    assert.ok(!aws.calls.some((c) => c.startsWith('bucketNotifications')));
  });

  it('lists each model whose manifest is missing under WeightsLocation, with the tiers that wait for it and the publish command', async () => {
    const aws = deployedDefaults();
    aws.objects.delete('effitag-weights-123/weights/b3/manifest.json');
    aws.objects.delete('effitag-weights-123/weights/v2-m/manifest.json');
    aws.denied.add('effitag-weights-123/weights/b7/manifest.json');
    aws.objects.delete('effitag-weights-123/weights/b7/manifest.json');
    const report = await preflight(aws, input());
    assert.equal(report.ready, false);
    const b3 = row(report.rows, 'weights', 'b3');
    assert.equal(b3.status, 'missing');
    assert.match(b3.detail, /no s3:\/\/effitag-weights-123\/weights\/b3\/manifest\.json: tiers standard, premium wait for it/);
    assert.equal(b3.fix, 'effitag weights publish --tiers tiers/defaults.json s3://effitag-weights-123/weights/');
    assert.equal(row(report.rows, 'weights', 'v2-m').status, 'missing');
    assert.equal(row(report.rows, 'weights', 'b7').status, 'unknown');
    assert.equal(row(report.rows, 'weights', 'b0').status, 'ok');
  });

  it('GPU tiers: a type offered in no zone of the stack is missing, in some only a warning; quotas below one instance are missing', async () => {
    const aws = deployedDefaults();
    aws.offerings = { 'g5.xlarge': ['us-east-1a', 'us-east-1c'] }; // g4dn.xlarge nowhere; g5.xlarge in one of the two zones
    aws.quotas['L-3819A6DF'] = 0; // the usual default for Spot G/VT vCPUs
    aws.quotas['L-DB2E81BA'] = 4;
    const report = await preflight(aws, input());
    const standard = row(report.rows, 'gpu-offering', 'standard');
    assert.equal(standard.status, 'missing');
    assert.match(standard.detail, /g4dn\.xlarge: not offered/);
    assert.match(standard.fix!, /offered in us-east-1a, us-east-1b/);
    const premium = row(report.rows, 'gpu-offering', 'premium');
    assert.equal(premium.status, 'warn');
    assert.match(premium.detail, /g5\.xlarge: us-east-1a \(/);
    const spot = row(report.rows, 'gpu-quota', 'spot G/VT vCPUs (L-3819A6DF)');
    assert.equal(spot.status, 'missing');
    assert.match(spot.detail, /quota 0 < 4: not even one instance of standard \(4 × g4dn\.xlarge, 4 vCPUs\) can start/);
    assert.match(spot.fix!, /request 16 in Service Quotas \(EC2, L-3819A6DF\)/);
    const od = row(report.rows, 'gpu-quota', 'on-demand G/VT vCPUs (L-DB2E81BA)');
    assert.equal(od.status, 'warn', 'one instance fits, maxTasks does not');
    assert.equal(report.ready, false);
  });

  it('an alternative instance type offered where the first is not keeps the tier usable', async () => {
    const aws = deployedDefaults();
    const tiers = JSON.parse(readTiersJsonText()) as { tiers: Record<string, { compute: Record<string, unknown> }> };
    tiers.tiers.standard.compute.alternativeInstanceTypes = ['g6.xlarge'];
    aws.offerings = { 'g6.xlarge': ['us-east-1a', 'us-east-1b'], 'g5.xlarge': ['us-east-1a', 'us-east-1b'] };
    const report = await preflight(aws, { ...input(), tiers: parseTiers(tiers, 'alt.json') });
    const standard = row(report.rows, 'gpu-offering', 'standard');
    assert.equal(standard.status, 'warn');
    assert.match(standard.detail, /g4dn\.xlarge: not offered; g6\.xlarge: us-east-1a, us-east-1b/);
  });

  it('Lambda: unreserved concurrency below the CPU tiers’ maxConcurrency sum is missing; barely above it warns', async () => {
    const aws = deployedDefaults();
    aws.lambda = { concurrentExecutions: 10, unreservedConcurrentExecutions: 10 }; // a new account
    const tight = row((await preflight(aws, input())).rows, 'lambda-concurrency', 'account');
    assert.equal(tight.status, 'missing');
    assert.match(tight.detail, /unreserved 10 of 10; CPU tiers' maxConcurrency sum 10 \(economy 10\)/);
    assert.match(tight.fix!, /at least 20 .*L-B99A9384/);
    aws.lambda = { concurrentExecutions: 15, unreservedConcurrentExecutions: 15 };
    assert.equal(row((await preflight(aws, input())).rows, 'lambda-concurrency', 'account').status, 'warn');
  });

  it('a tiers file that does not match the deployed stack is reported', async () => {
    const aws = deployedDefaults();
    aws.outputs!.QueueUrls = JSON.stringify({ economy: 'q1', thumbs: 'q4' });
    const r = row((await preflight(aws, input())).rows, 'tiers', 'tiers/defaults.json');
    assert.equal(r.status, 'missing');
    assert.match(r.detail, /only in the file: standard, premium; only in the stack: thumbs/);
  });

  it('before the first deploy onto an existing bucket in S3-notification mode: refuses with the conflicting rule, skips what needs the stack', async () => {
    const aws = new FakeAws(); // no stack
    aws.offerings = { 'g4dn.xlarge': ['us-east-1a', 'us-east-1b'], 'g5.xlarge': ['us-east-1a', 'us-east-1b'] };
    aws.notifications = { QueueConfigurations: [rule('thumbnailer', ['s3:ObjectCreated:*'], { prefix: 'photos/' })] };
    const report = await preflight(aws, input({ bucketName: 'my-photos', prefixes: ['photos/', 'scans/'], events: 's3' }));
    assert.equal(report.deployed, false);
    assert.equal(report.ready, false);
    assert.equal(row(report.rows, 'stack', 'EffiTag').status, 'skipped');
    assert.equal(row(report.rows, 'weights', '(all models)').status, 'skipped');
    const n = row(report.rows, 'notifications', 'my-photos: rule thumbnailer');
    assert.equal(n.status, 'missing');
    assert.match(n.detail, /rule "thumbnailer".*overlaps the stack's s3:ObjectCreated:\* rule for prefix "photos\/"/);
    assert.equal(n.fix, '-c effitag:events=eventbridge, or remove that rule');
    // The VPC it would create takes the region's first two zones.
    assert.ok(aws.calls.includes('instanceTypeOfferings g4dn.xlarge,g5.xlarge in us-east-1a,us-east-1b'), aws.calls.join('\n'));
    assert.ok(!aws.calls.some((c) => c.startsWith('headObject')));

    // The same bucket in EventBridge mode: nothing to refuse, and its rules are not even read.
    const eb = new FakeAws();
    eb.offerings = aws.offerings;
    eb.notifications = aws.notifications;
    const ok = await preflight(eb, input({ bucketName: 'my-photos', prefixes: ['photos/'], events: 'eventbridge' }));
    assert.equal(row(ok.rows, 'notifications', 'my-photos').status, 'ok');
    assert.ok(!eb.calls.some((c) => c.startsWith('bucketNotifications')));
    assert.equal(ok.ready, true, JSON.stringify(ok.rows, null, 1));
  });

  it('compares prefixes as S3 stores filters: a watched "my scans/" collides with an existing rule for "my+scans/"', async () => {
    const aws = new FakeAws();
    aws.offerings = { 'g4dn.xlarge': ['us-east-1a', 'us-east-1b'], 'g5.xlarge': ['us-east-1a', 'us-east-1b'] };
    aws.notifications = { QueueConfigurations: [rule('scanner', ['s3:ObjectCreated:Put'], { prefix: 'my+scans/' })] };
    const report = await preflight(aws, input({ bucketName: 'b', prefixes: ['my scans/raw/'], events: 's3' }));
    assert.equal(row(report.rows, 'notifications', 'b: rule scanner').status, 'missing');
  });

  it("an imported VPC's zones come from its subnets", async () => {
    const aws = new FakeAws();
    aws.vpcSubnets = { 'subnet-x': 'us-east-1c', 'subnet-y': 'us-east-1d' };
    aws.offerings = { 'g4dn.xlarge': ['us-east-1c', 'us-east-1d'], 'g5.xlarge': ['us-east-1d'] };
    const report = await preflight(aws, input({ vpcId: 'vpc-123' }));
    assert.ok(aws.calls.includes('subnetZones {"vpcId":"vpc-123"}'));
    assert.equal(row(report.rows, 'gpu-offering', 'standard').status, 'ok');
    assert.equal(row(report.rows, 'gpu-offering', 'premium').status, 'warn');
  });

  it('a failing AWS call becomes an unknown row (required check) or a warning (optional quota), not a crash', async () => {
    const aws = deployedDefaults();
    aws.lambdaAccountSettings = async () => {
      throw Object.assign(new Error('User is not authorized to perform: lambda:GetAccountSettings'), { name: 'AccessDeniedException' });
    };
    aws.serviceQuota = async () => {
      throw Object.assign(new Error('throttled'), { name: 'TooManyRequestsException' });
    };
    const report = await preflight(aws, input());
    const l = row(report.rows, 'lambda-concurrency', 'account');
    assert.equal(l.status, 'unknown');
    assert.match(l.detail, /could not check: AccessDeniedException: User is not authorized/);
    assert.equal(row(report.rows, 'gpu-quota', '(GPU tiers)').status, 'warn');
    assert.equal(report.ready, false);
  });
});

function readTiersJsonText(): string {
  return JSON.stringify(readTiersJson('tiers/defaults.json'));
}

describe('effitag preflight (the command over a fake AWS)', () => {
  it('reads cdk.json context and -c overrides, prints the table with the conflicting rule, exits 1; --json; exit 0 once ready', async () => {
    const cwd = await tempDir('effitag-preflight-');
    writeFileSync(
      join(cwd, 'cdk.json'),
      JSON.stringify({
        app: 'x',
        context: { 'effitag:tiersFile': join(process.cwd(), 'tiers/defaults.json'), 'effitag:prefixes': 'photos/', '@aws-cdk/x': true },
      }),
    );
    assert.deepEqual(deployContext(cwd, ['effitag:bucketName=my-photos', 'effitag:events=s3']), {
      'effitag:tiersFile': join(process.cwd(), 'tiers/defaults.json'),
      'effitag:prefixes': 'photos/',
      'effitag:bucketName': 'my-photos',
      'effitag:events': 's3',
    });
    assert.throws(() => deployContext(cwd, ['effitag:bucketName']), /expected key=value/);

    const aws = new FakeAws();
    aws.offerings = { 'g4dn.xlarge': ['us-east-1a', 'us-east-1b'], 'g5.xlarge': ['us-east-1a', 'us-east-1b'] };
    aws.notifications = {
      LambdaFunctionConfigurations: [
        rule('resize\u001b[2J', ['s3:ObjectCreated:Put'], { suffix: '.jpg' }, { LambdaFunctionArn: 'arn:fn' }),
      ],
    };
    let text = '';
    const code = await runPreflight({ context: ['effitag:bucketName=my-photos', 'effitag:events=s3'] }, aws, (s) => (text += s), cwd);
    assert.equal(code, 1);
    assert.match(text, /preflight of stack EffiTag \(not deployed yet\)/);
    assert.match(
      text,
      /notifications\s+my-photos: rule resize\\x1b\[2J\s+MISSING/,
      'the rule id is printed, its control characters escaped',
    );
    assert.match(text, /→ -c effitag:events=eventbridge, or remove that rule/);
    assert.match(text, /not ready: 1 item\(s\) missing or unknown/);

    let json = '';
    assert.equal(
      await runPreflight({ context: ['effitag:bucketName=my-photos'], json: true, stack: 'Photos' }, aws, (s) => (json += s), cwd),
      0,
    );
    const report = JSON.parse(json);
    assert.equal(report.stack, 'Photos');
    assert.equal(report.ready, true, 'an existing bucket defaults to EventBridge: nothing to refuse');
    assert.deepEqual(
      report.rows.filter((r: CheckRow) => r.check === 'notifications').map((r: CheckRow) => r.status),
      ['ok'],
    );
    // The deploy's own validation applies: a context synthesis would refuse is refused here too.
    await assert.rejects(
      runPreflight({ context: ['effitag:events=sns'] }, aws, () => {}, cwd),
      /effitag:events: "sns"/,
    );
  });
});

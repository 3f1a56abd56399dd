/**
 * `effitag preflight`: what a stack still lacks before anything is uploaded. Pure logic over a port
 * (`PreflightAws`): every AWS call sits behind it (pipeline/aws/preflight-aws.ts is the real one; the
 * tests use an in-memory fake). Checks:
 * - the stack (its outputs) and that the tiers file matches the tiers it was deployed with;
 * - weights: a manifest per model under the stack's WeightsLocation;
 * - GPU tiers: their instance types offered in the availability zones of the stack's subnets, and the
 *   account's G/VT vCPU quota (on-demand or Spot) against one instance and against maxTasks;
 * - Lambda: the account's unreserved concurrency against the CPU tiers' maxConcurrency sum;
 * - an existing bucket in S3-notification mode: rules it already has that S3 would refuse to overlap
 *   (`notificationConflicts`), so the deploy is refused before anything is created.
 * Before the first deploy (no stack yet) the stack-dependent checks are skipped and the rest run from
 * the deploy's context (bucket, prefixes, events mode, VPC).
 */
import { parseS3Folder } from '../base/s3-url.ts';
import type { EventsMode } from '../cdk/config.ts';
import { modelsFor, type Tier, type TiersFile } from '../tiers/schema.ts';
import { decodeVariant, int8Base, isVariantName } from '../model/spec.ts';
import { weightsFix } from './models.ts';
import { encodeS3Key } from './events.ts';

// ---------------------------------------------------------------- the port

export interface StackResource {
  logicalId: string;
  type: string;
  physicalId?: string;
}

/** GetBucketNotificationConfiguration's answer, as the SDK returns it. */
export interface NotificationFilterRule {
  Name?: string;
  Value?: string;
}
export interface NotificationRuleConfig {
  Id?: string;
  Events?: string[];
  Filter?: { Key?: { FilterRules?: NotificationFilterRule[] } };
  QueueArn?: string;
  TopicArn?: string;
  LambdaFunctionArn?: string;
}
export interface BucketNotificationConfig {
  QueueConfigurations?: NotificationRuleConfig[];
  TopicConfigurations?: NotificationRuleConfig[];
  LambdaFunctionConfigurations?: NotificationRuleConfig[];
  EventBridgeConfiguration?: object;
}

export type HeadResult = 'present' | 'missing' | 'denied';

/** Every AWS call preflight makes. `undefined` from `stackOutputs` means the stack does not exist. */
export interface PreflightAws {
  stackOutputs(stackName: string): Promise<Record<string, string> | undefined>;
  stackResources(stackName: string): Promise<StackResource[]>;
  headObject(bucket: string, key: string): Promise<HeadResult>;
  /** Zone of each subnet: the given ones, or all of a VPC's. */
  subnetZones(query: { subnetIds?: string[]; vpcId?: string }): Promise<{ subnetId: string; zone: string }[]>;
  /** The region's available zones, in the order Fn::GetAZs lists them (a created VPC takes the first two). */
  availabilityZones(): Promise<string[]>;
  /** Which of the types are offered in which of the zones (DescribeInstanceTypeOfferings, location-type availability-zone). */
  instanceTypeOfferings(types: string[], zones: string[]): Promise<{ instanceType: string; zone: string }[]>;
  /** vCPUs per instance type (DescribeInstanceTypes). */
  instanceVcpus(types: string[]): Promise<Record<string, number>>;
  lambdaAccountSettings(): Promise<{ concurrentExecutions: number; unreservedConcurrentExecutions: number }>;
  /** A Service Quotas value (EC2), or undefined where it cannot be read. */
  serviceQuota(code: string): Promise<number | undefined>;
  bucketNotifications(bucket: string): Promise<BucketNotificationConfig>;
}

// ---------------------------------------------------------------- notification conflicts

export interface WantedNotifications {
  /** The events the stack's rules would subscribe (s3:ObjectCreated:*, and s3:ObjectRemoved:* with the tag index). */
  events: string[];
  /** The watched prefixes ('' = the whole bucket); the stack's rules have no suffix. */
  prefixes: string[];
  /** The stack's own intake queue: its rules (from an earlier deploy) are not conflicts. */
  ownQueueArn?: string;
}

export interface NotificationConflict {
  id: string;
  destination: string;
  events: string[];
  prefix: string;
  suffix: string;
  /** Which of the stack's rules it collides with. */
  collidesWith: { event: string; prefix: string };
  message: string;
}

const filterValue = (rule: NotificationRuleConfig, name: 'prefix' | 'suffix'): string =>
  rule.Filter?.Key?.FilterRules?.find((f) => f.Name?.toLowerCase() === name)?.Value ?? '';

/** S3 event types overlap when equal or when one is the other's wildcard (s3:ObjectCreated:* ⊇ s3:ObjectCreated:Put). */
export function eventsOverlap(a: string, b: string): boolean {
  if (a === b) return true;
  const stem = (e: string) => (e.endsWith(':*') ? e.slice(0, -1) : undefined);
  const sa = stem(a);
  const sb = stem(b);
  return (sa !== undefined && b.startsWith(sa)) || (sb !== undefined && a.startsWith(sb));
}

/**
 * S3's rule: two filters overlap when one prefix starts the other AND one suffix ends the other ('' overlaps
 * everything). The stack's rules have no suffix, so any suffix overlaps them: only prefixes decide.
 */
const prefixesOverlap = (a: string, b: string) => a.startsWith(b) || b.startsWith(a);

/**
 * The bucket's existing notification rules that S3 would refuse beside the stack's (one rule per
 * watched prefix and event type, no suffix): "Configurations overlap" fails the deploy. Each names the
 * rule and the way out. The EventBridge switch never conflicts.
 */
export function notificationConflicts(existing: BucketNotificationConfig, wanted: WantedNotifications): NotificationConflict[] {
  const rules: { rule: NotificationRuleConfig; destination: string }[] = [
    ...(existing.QueueConfigurations ?? []).map((rule) => ({ rule, destination: rule.QueueArn ?? 'an SQS queue' })),
    ...(existing.TopicConfigurations ?? []).map((rule) => ({ rule, destination: rule.TopicArn ?? 'an SNS topic' })),
    ...(existing.LambdaFunctionConfigurations ?? []).map((rule) => ({ rule, destination: rule.LambdaFunctionArn ?? 'a Lambda function' })),
  ];
  const eventBridgeOn = existing.EventBridgeConfiguration !== undefined;
  const conflicts: NotificationConflict[] = [];
  for (const { rule, destination } of rules) {
    if (wanted.ownQueueArn && rule.QueueArn === wanted.ownQueueArn) continue;
    const prefix = filterValue(rule, 'prefix');
    const suffix = filterValue(rule, 'suffix');
    const events = rule.Events ?? [];
    const hit = wanted.events
      .flatMap((event) => wanted.prefixes.map((p) => ({ event, prefix: p })))
      .find((w) => events.some((e) => eventsOverlap(e, w.event)) && prefixesOverlap(prefix, w.prefix));
    if (!hit) continue;
    const id = rule.Id ?? '(no id)';
    const filter = [prefix && `prefix "${prefix}"`, suffix && `suffix "${suffix}"`].filter(Boolean).join(', ') || 'no filter';
    conflicts.push({
      id,
      destination,
      events,
      prefix,
      suffix,
      collidesWith: hit,
      message:
        `the bucket's notification rule "${id}" (${events.join(', ')}; ${filter} → ${destination}) overlaps the stack's ` +
        `${hit.event} rule for ${hit.prefix ? `prefix "${hit.prefix}"` : 'the whole bucket'}; S3 would refuse it ("Configurations overlap") and the deploy would fail. ` +
        `Way out: deploy with -c effitag:events=eventbridge (${eventBridgeOn ? 'the bucket already sends events to EventBridge' : 'turns on the bucket’s EventBridge delivery; existing rules stay'}), ` +
        'or remove or narrow that rule.',
    });
  }
  return conflicts;
}

// ---------------------------------------------------------------- the report

export type CheckStatus = 'ok' | 'missing' | 'unknown' | 'warn' | 'skipped';

export interface CheckRow {
  check: 'stack' | 'tiers' | 'weights' | 'gpu-offering' | 'gpu-quota' | 'lambda-concurrency' | 'notifications';
  subject: string;
  status: CheckStatus;
  detail: string;
  /** What to do about it. */
  fix?: string;
}

export interface PreflightReport {
  stack: string;
  deployed: boolean;
  rows: CheckRow[];
  /** Nothing missing or unknown among the required checks ('warn' and 'skipped' do not count). */
  ready: boolean;
}

export interface PreflightInput {
  stackName: string;
  tiers: TiersFile;
  tiersFile: string;
  /**
   * The local weights catalog `weights publish --tiers` uploads from (DIR/<model>/): where a model's
   * fix makes its artifact, named to publish too (the CLI: the cache's weights/, as `weights publish`
   * defaults). Absent: the placeholder DIR.
   */
  weightsDir?: string;
  /** The deploy's context, for what the stack's outputs cannot tell (and for everything before the first deploy). */
  context: {
    bucketName?: string;
    prefixes: string[];
    events: EventsMode;
    index: boolean;
    vpcId?: string;
  };
}

export interface ResolvedStack {
  name: string;
  outputs: Record<string, string>;
  resources: StackResource[];
}

/** Find the stack: its outputs and resources, or undefined before its first deploy. The one place a stack is resolved. */
export async function resolveStack(
  aws: Pick<PreflightAws, 'stackOutputs' | 'stackResources'>,
  name: string,
): Promise<ResolvedStack | undefined> {
  const outputs = await aws.stackOutputs(name);
  if (!outputs) return undefined;
  return { name, outputs, resources: await aws.stackResources(name) };
}

/** The SQS queue ARN of a queue URL (https://sqs.REGION.amazonaws.com/ACCOUNT/NAME). */
export function queueArnOf(url: string): string | undefined {
  const m = /^https:\/\/sqs\.([a-z0-9-]+)\.amazonaws\.com(?:\.cn)?\/(\d{12})\/([^/?]+)$/.exec(url);
  return m ? `arn:${url.includes('.amazonaws.com.cn') ? 'aws-cn' : 'aws'}:sqs:${m[1]}:${m[2]}:${m[3]}` : undefined;
}

/** A stack's weights location, or undefined where it is not an S3 URL: the report goes on without it. */
function parseLocation(url: string): { bucket: string; prefix: string } | undefined {
  try {
    return parseS3Folder(url);
  } catch {
    return undefined;
  }
}

const describe = (err: unknown) => (err as { name?: string }).name ?? String(err);

/** Each check's failure becomes an `unknown` row (required) or a `warn` row (optional), never a crash of the whole report. */
async function guarded(
  rows: CheckRow[],
  row: Omit<CheckRow, 'status' | 'detail'>,
  required: boolean,
  run: () => Promise<void>,
): Promise<void> {
  try {
    await run();
  } catch (err) {
    rows.push({
      ...row,
      status: required ? 'unknown' : 'warn',
      detail: `could not check: ${describe(err)}: ${(err as Error).message ?? ''}`.trim(),
    });
  }
}

const gpuTiers = (tiers: TiersFile) =>
  Object.values(tiers.tiers).filter((t): t is Extract<Tier, { kind: 'ecs-gpu' }> => t.kind === 'ecs-gpu');
const cpuTiers = (tiers: TiersFile) =>
  Object.values(tiers.tiers).filter((t): t is Extract<Tier, { kind: 'lambda-cpu' }> => t.kind === 'lambda-cpu');

/** Service Quotas codes (EC2, vCPUs) of the G and VT families; other GPU families are not checked. */
export const GPU_QUOTAS = { 'on-demand': 'L-DB2E81BA', spot: 'L-3819A6DF' } as const;
const isGandVt = (type: string) => /^(g\d|vt\d)/.test(type);

export async function preflight(aws: PreflightAws, input: PreflightInput): Promise<PreflightReport> {
  const rows: CheckRow[] = [];
  const { tiers } = input;
  const stack = await resolveStack(aws, input.stackName);
  const skipped = (check: CheckRow['check'], subject: string, why: string) => rows.push({ check, subject, status: 'skipped', detail: why });

  // The stack and its tiers.
  if (!stack) {
    rows.push({
      check: 'stack',
      subject: input.stackName,
      status: 'skipped',
      detail: 'not deployed yet: the checks that need its outputs are skipped; the others use the deploy context',
      fix: 'run preflight again after `cdk deploy`, before the first upload',
    });
  } else {
    rows.push({
      check: 'stack',
      subject: input.stackName,
      status: 'ok',
      detail: `deployed (${Object.keys(stack.outputs).length} outputs)`,
    });
    tiersMatch(rows, stack, input);
  }

  // Weights, one manifest per model.
  const location = stack?.outputs.WeightsLocation ? parseLocation(stack.outputs.WeightsLocation) : undefined;
  if (!location) skipped('weights', '(all models)', stack ? 'the stack has no WeightsLocation output' : 'the stack is not deployed yet');
  else
    for (const model of tiers.models) {
      const key = `${location.prefix}${model}/manifest.json`;
      const users = Object.values(tiers.tiers)
        .filter((t) => t.variants.some((v) => modelsFor(t, v).includes(model)))
        .map((t) => t.name);
      await guarded(rows, { check: 'weights', subject: model }, true, async () => {
        const found = await aws.headObject(location.bucket, key);
        const where = `s3://${location.bucket}/${key}`;
        const publish = `effitag weights publish --tiers ${input.tiersFile} ${stack!.outputs.WeightsLocation}`;
        // A Lite variant's artifact (`weights import --timm`) and an int8 model's (`weights quantize`) are
        // made before they can be published: the step the workers' waiting line names (weightsFix), into
        // the catalog the publish then reads (not a fixed ~/.cache path, which EFFITAG_CACHE_DIR moves).
        // A Keras variant's or custom model's publish names `weights fetch` or `train` itself if the catalog lacks it.
        const made = (isVariantName(model) && decodeVariant(model).family === 'lite') || int8Base(model) !== undefined;
        const catalog = input.weightsDir ?? 'DIR';
        const fix = made
          ? `${weightsFix(catalog, model)}, then effitag weights publish --tiers ${input.tiersFile} --weights ${catalog} ${stack!.outputs.WeightsLocation}`
          : publish;
        if (found === 'present')
          rows.push({ check: 'weights', subject: model, status: 'ok', detail: `${where} (tiers: ${users.join(', ')})` });
        else if (found === 'missing')
          rows.push({
            check: 'weights',
            subject: model,
            status: 'missing',
            detail: `no ${where}: tiers ${users.join(', ')} wait for it`,
            fix,
          });
        else
          rows.push({
            check: 'weights',
            subject: model,
            status: 'unknown',
            detail: `access denied on ${where} (a missing object reads as 403 without s3:ListBucket)`,
            fix,
          });
      });
    }

  await gpuChecks(aws, rows, input, stack);
  await lambdaCheck(aws, rows, tiers);
  await notificationCheck(aws, rows, input, stack);

  const ready = rows.every((r) => r.status !== 'missing' && r.status !== 'unknown');
  return { stack: input.stackName, deployed: Boolean(stack), rows, ready };
}

function tiersMatch(rows: CheckRow[], stack: ResolvedStack, input: PreflightInput): void {
  let deployed: string[] | undefined;
  try {
    deployed = Object.keys(JSON.parse(stack.outputs.QueueUrls ?? 'null') ?? {});
  } catch {
    deployed = undefined;
  }
  if (!deployed) {
    rows.push({
      check: 'tiers',
      subject: input.tiersFile,
      status: 'warn',
      detail: 'the stack has no readable QueueUrls output; the tiers file is taken as deployed',
    });
    return;
  }
  const file = Object.keys(input.tiers.tiers);
  const onlyFile = file.filter((t) => !deployed.includes(t));
  const onlyStack = deployed.filter((t) => !file.includes(t));
  if (!onlyFile.length && !onlyStack.length) {
    rows.push({ check: 'tiers', subject: input.tiersFile, status: 'ok', detail: `the stack's tiers: ${file.join(', ')}` });
    return;
  }
  rows.push({
    check: 'tiers',
    subject: input.tiersFile,
    status: 'missing',
    detail: `does not match the deployed stack (${[onlyFile.length && `only in the file: ${onlyFile.join(', ')}`, onlyStack.length && `only in the stack: ${onlyStack.join(', ')}`].filter(Boolean).join('; ')})`,
    fix: 'pass the tiers file the stack was deployed with (--tiers FILE), or deploy this one',
  });
}

/** The zones GPU instances can launch in: the stack's subnets, an imported VPC's subnets, or the first two zones a created VPC takes. */
async function gpuZones(
  aws: PreflightAws,
  input: PreflightInput,
  stack: ResolvedStack | undefined,
): Promise<{ zones: string[]; source: string }> {
  const subnetIds = (stack?.resources ?? []).filter((r) => r.type === 'AWS::EC2::Subnet' && r.physicalId).map((r) => r.physicalId!);
  if (subnetIds.length) {
    const found = await aws.subnetZones({ subnetIds });
    return { zones: [...new Set(found.map((s) => s.zone))].sort(), source: `the stack's subnets ${subnetIds.join(', ')}` };
  }
  if (input.context.vpcId) {
    const found = await aws.subnetZones({ vpcId: input.context.vpcId });
    return { zones: [...new Set(found.map((s) => s.zone))].sort(), source: `the subnets of ${input.context.vpcId}` };
  }
  const zones = (await aws.availabilityZones()).slice(0, 2);
  return { zones, source: 'the first two zones of the region (the VPC the stack creates, maxAzs 2)' };
}

async function gpuChecks(aws: PreflightAws, rows: CheckRow[], input: PreflightInput, stack: ResolvedStack | undefined): Promise<void> {
  const gpu = gpuTiers(input.tiers);
  if (!gpu.length) return;
  await guarded(rows, { check: 'gpu-offering', subject: '(GPU tiers)' }, true, async () => {
    const { zones, source } = await gpuZones(aws, input, stack);
    const types = [...new Set(gpu.flatMap((t) => [t.compute.instanceType, ...(t.compute.alternativeInstanceTypes ?? [])]))];
    const offered = await aws.instanceTypeOfferings(types, zones);
    for (const tier of gpu) {
      const mine = [tier.compute.instanceType, ...(tier.compute.alternativeInstanceTypes ?? [])];
      const where = mine.map((type) => ({
        type,
        zones: offered
          .filter((o) => o.instanceType === type && zones.includes(o.zone))
          .map((o) => o.zone)
          .sort(),
      }));
      const detail = `${where.map((w) => `${w.type}: ${w.zones.length ? w.zones.join(', ') : 'not offered'}`).join('; ')} (zones: ${source})`;
      const usable = where.filter((w) => w.zones.length);
      if (!usable.length)
        rows.push({
          check: 'gpu-offering',
          subject: tier.name,
          status: 'missing',
          detail,
          fix: `pick an instance type offered in ${zones.join(', ')} (compute.instanceType or alternativeInstanceTypes), or deploy into a VPC whose subnets are in zones that offer it (-c effitag:vpcId=…)`,
        });
      else if (where[0].zones.length < zones.length)
        rows.push({ check: 'gpu-offering', subject: tier.name, status: 'warn', detail: `${detail}: instances launch only where offered` });
      else rows.push({ check: 'gpu-offering', subject: tier.name, status: 'ok', detail });
    }
  });

  // vCPU quotas (optional: Service Quotas may be unreadable; only the G and VT families are checked).
  await guarded(rows, { check: 'gpu-quota', subject: '(GPU tiers)' }, false, async () => {
    const gandvt = gpu.filter((t) => isGandVt(t.compute.instanceType));
    for (const t of gpu.filter((t) => !isGandVt(t.compute.instanceType)))
      rows.push({
        check: 'gpu-quota',
        subject: t.name,
        status: 'skipped',
        detail: `${t.compute.instanceType}: only G and VT vCPU quotas are checked`,
      });
    if (!gandvt.length) return;
    const vcpus = await aws.instanceVcpus([...new Set(gandvt.map((t) => t.compute.instanceType))]);
    for (const capacity of ['on-demand', 'spot'] as const) {
      const these = gandvt.filter((t) => t.compute.capacity === capacity);
      if (!these.length) continue;
      const code = GPU_QUOTAS[capacity];
      const quota = await aws.serviceQuota(code);
      const subject = `${capacity} G/VT vCPUs (${code})`;
      // One task per instance: each GPU task reserves the instance's GPU.
      const one = Math.max(...these.map((t) => vcpus[t.compute.instanceType] ?? 0));
      const all = these.reduce((n, t) => n + t.compute.maxTasks * (vcpus[t.compute.instanceType] ?? 0), 0);
      const names = these
        .map((t) => `${t.name} (${t.compute.maxTasks} × ${t.compute.instanceType}, ${vcpus[t.compute.instanceType] ?? '?'} vCPUs)`)
        .join(', ');
      const fix = `request ${all} in Service Quotas (EC2, ${code})`;
      if (quota === undefined)
        rows.push({ check: 'gpu-quota', subject, status: 'warn', detail: `quota unreadable; ${names} need up to ${all}` });
      else if (quota < one)
        rows.push({
          check: 'gpu-quota',
          subject,
          status: 'missing',
          detail: `quota ${quota} < ${one}: not even one instance of ${names} can start`,
          fix,
        });
      else if (quota < all)
        rows.push({ check: 'gpu-quota', subject, status: 'warn', detail: `quota ${quota} < ${all} that ${names} reach at maxTasks`, fix });
      else rows.push({ check: 'gpu-quota', subject, status: 'ok', detail: `quota ${quota} ≥ ${all} for ${names}` });
    }
  });
}

/**
 * The stack reserves no concurrency: its CPU tiers (each capped by its event source's maxConcurrency),
 * the router and the backfill share the account's unreserved pool. Too small a pool throttles them, and
 * an SQS event source's throttled batches count as receives, so messages can reach the DLQs.
 */
export const LAMBDA_HEADROOM = 10;

async function lambdaCheck(aws: PreflightAws, rows: CheckRow[], tiers: TiersFile): Promise<void> {
  const cpu = cpuTiers(tiers);
  await guarded(rows, { check: 'lambda-concurrency', subject: 'account' }, true, async () => {
    const settings = await aws.lambdaAccountSettings();
    const need = cpu.reduce((n, t) => n + t.compute.maxConcurrency, 0);
    const pool = settings.unreservedConcurrentExecutions;
    const tiersText = cpu.length
      ? `CPU tiers' maxConcurrency sum ${need} (${cpu.map((t) => `${t.name} ${t.compute.maxConcurrency}`).join(', ')})`
      : 'no CPU tiers';
    const detail = `unreserved ${pool} of ${settings.concurrentExecutions}; ${tiersText}, plus the router and the backfill`;
    const fix = `request "Concurrent executions" of at least ${need + LAMBDA_HEADROOM} (Service Quotas, AWS Lambda, L-B99A9384)${cpu.length ? ", or lower the CPU tiers' maxConcurrency" : ''}`;
    if (pool < need + 1)
      rows.push({
        check: 'lambda-concurrency',
        subject: 'account',
        status: 'missing',
        detail: `${detail}: not enough to run them and the router`,
        fix,
      });
    else if (pool < need + LAMBDA_HEADROOM)
      rows.push({
        check: 'lambda-concurrency',
        subject: 'account',
        status: 'warn',
        detail: `${detail}: under ${LAMBDA_HEADROOM} to spare for the router and the backfill`,
        fix,
      });
    else rows.push({ check: 'lambda-concurrency', subject: 'account', status: 'ok', detail });
  });
}

async function notificationCheck(
  aws: PreflightAws,
  rows: CheckRow[],
  input: PreflightInput,
  stack: ResolvedStack | undefined,
): Promise<void> {
  const { context } = input;
  if (!context.bucketName) return; // a bucket the stack creates has no other rules
  const subject = context.bucketName;
  if (context.events === 'eventbridge') {
    rows.push({
      check: 'notifications',
      subject,
      status: 'ok',
      detail: 'EventBridge mode: the bucket’s notification rules are left as they are',
    });
    return;
  }
  await guarded(rows, { check: 'notifications', subject }, true, async () => {
    const existing = await aws.bucketNotifications(context.bucketName!);
    const ownQueueArn = stack?.outputs.IntakeQueueUrl ? queueArnOf(stack.outputs.IntakeQueueUrl) : undefined;
    const events = ['s3:ObjectCreated:*', ...(context.index ? ['s3:ObjectRemoved:*'] : [])];
    // Rules store their filters encoded as S3 notifications encode keys; the stack's would be stored so too.
    const conflicts = notificationConflicts(existing, { events, prefixes: context.prefixes.map(encodeS3Key), ownQueueArn });
    if (!conflicts.length) {
      rows.push({ check: 'notifications', subject, status: 'ok', detail: 'no existing rule overlaps the stack’s (S3-notification mode)' });
      return;
    }
    for (const c of conflicts)
      rows.push({
        check: 'notifications',
        subject: `${subject}: rule ${c.id}`,
        status: 'missing',
        detail: c.message,
        fix: '-c effitag:events=eventbridge, or remove that rule',
      });
  });
}

/**
 * What a synthesized template's GPU scaling does, evaluated the way Application Auto Scaling applies
 * it, with no AWS account: for a steady queue backlog, which CloudWatch alarms are in ALARM, which
 * step of each alarm's step-scaling policy applies, and the task count that results.
 *
 * Read from the template (not from the constructs) on purpose: it checks what CloudFormation will
 * create, whatever construct or aws-cdk-lib version produced it. The rules applied:
 * - an alarm is in ALARM when `backlog <op> threshold` holds (one steady value: evaluation periods
 *   and datapoints-to-alarm only delay it);
 * - a step's bounds are relative to the alarm's threshold; for an alarm above its threshold
 *   (GreaterThan…) the lower bound is inclusive and the upper exclusive, for one below it (LessThan…)
 *   the lower bound is exclusive and the upper inclusive; a missing bound is infinite;
 * - ExactCapacity sets the count to the step's adjustment, clamped to the scalable target's
 *   MinCapacity..MaxCapacity;
 * - alarms that are in ALARM at once each apply their own policy: if they set different counts the
 *   count flaps between them (a conflict);
 * - no alarm in ALARM: nothing changes the count (reported as `tasks: null`).
 * Alarm actions on AWS Auto Scaling are repeated every minute while the alarm stays in ALARM, so an
 * alarm that is always in ALARM (threshold 0, `>=`) keeps applying its policy's steps.
 *
 * Only what the stack ships is supported: ExactCapacity step policies on alarms whose metric is a
 * queue's backlog (ApproximateNumberOfMessagesVisible + ApproximateNumberOfMessagesNotVisible, one
 * queue). Anything else throws, naming the resource, rather than being evaluated wrongly.
 */
import { ENV } from '../base/runtime-names.ts';

// biome-ignore lint/suspicious/noExplicitAny: template JSON, checked field by field where it is read
type Json = any;

/** The part of a CloudFormation template this module reads. */
export interface CfnTemplate {
  Resources: Record<string, { Type: string; Properties?: Record<string, Json> }>;
}

type Operator = 'GreaterThanOrEqualToThreshold' | 'GreaterThanThreshold' | 'LessThanThreshold' | 'LessThanOrEqualToThreshold';
const OPERATORS: Record<Operator, (v: number, t: number) => boolean> = {
  GreaterThanOrEqualToThreshold: (v, t) => v >= t,
  GreaterThanThreshold: (v, t) => v > t,
  LessThanThreshold: (v, t) => v < t,
  LessThanOrEqualToThreshold: (v, t) => v <= t,
};

export interface ScalingStep {
  /** Relative to the alarm's threshold; undefined = −∞. */
  lower?: number;
  /** Relative to the alarm's threshold; undefined = +∞. */
  upper?: number;
  adjustment: number;
}

export interface ScalingRule {
  alarm: string;
  operator: Operator;
  threshold: number;
  policy: string;
  steps: ScalingStep[];
}

export interface ScaledService {
  /** The tier the service runs (its container's EFFITAG_TIER), else the service's logical id. */
  tier: string;
  service: string;
  target: string;
  minCapacity: number;
  maxCapacity: number;
  /** The logical id of the queue whose backlog the alarms watch. */
  queue?: string;
  rules: ScalingRule[];
}

export interface AlarmOutcome {
  alarm: string;
  policy: string;
  /** The count this alarm's policy sets; null when no step covers the backlog (a gap). */
  tasks: number | null;
  /** The step applied, as text (absolute backlog interval). */
  step?: string;
}

export interface ScalingDecision {
  backlog: number;
  /** The resulting task count; null when no alarm acts (the count stays as it was) or on a conflict. */
  tasks: number | null;
  /** Every alarm in ALARM at this backlog and what its policy sets. */
  alarms: AlarmOutcome[];
  /** Two alarms in ALARM set different counts (or one has no step for the backlog). */
  conflict: boolean;
}

export interface TierScaling extends ScaledService {
  rows: ScalingDecision[];
  /** Broken promises: a backlog ≥ 1 with no task, a count at an empty queue, conflicts, MaxCapacity never reached. */
  problems: string[];
}

const fail = (msg: string): never => {
  throw new Error(`scaling model: ${msg}`);
};

const refOf = (v: unknown): string | undefined =>
  v && typeof v === 'object' && typeof (v as { Ref?: unknown }).Ref === 'string' ? (v as { Ref: string }).Ref : undefined;
const getAttOf = (v: unknown): [string, string] | undefined => {
  const g = v && typeof v === 'object' ? (v as { 'Fn::GetAtt'?: unknown })['Fn::GetAtt'] : undefined;
  return Array.isArray(g) && g.length === 2 ? [String(g[0]), String(g[1])] : undefined;
};

/** The ECS service a scalable target scales: its ResourceId joins `service/`, the cluster, `/`, the service's name. */
function serviceOfTarget(id: string, props: Record<string, Json>): string {
  const join = props.ResourceId?.['Fn::Join'];
  const parts: unknown[] = Array.isArray(join) ? join[1] : [];
  for (const p of parts) {
    const att = getAttOf(p);
    if (att && att[1] === 'Name') return att[0];
  }
  return fail(`${id}: ResourceId names no ECS service of this template`);
}

function tierOfService(template: CfnTemplate, service: string): string {
  const td = refOf(template.Resources[service]?.Properties?.TaskDefinition);
  const containers: Json[] = (td && template.Resources[td]?.Properties?.ContainerDefinitions) || [];
  for (const c of containers) {
    const tier = (c.Environment ?? []).find((e: { Name: string }) => e.Name === ENV.tier)?.Value;
    if (typeof tier === 'string') return tier;
  }
  return service;
}

const BACKLOG_METRICS = ['ApproximateNumberOfMessagesNotVisible', 'ApproximateNumberOfMessagesVisible'];

/**
 * The queue whose backlog an alarm watches: a metric-math sum of one queue's visible and in-flight
 * counts. Anything else is refused: the model would not know what value the alarm sees.
 */
function backlogQueue(id: string, props: Record<string, Json>): string {
  const metrics: Json[] = props.Metrics ?? fail(`${id}: alarm on a single metric (${props.MetricName}), not on the backlog`);
  const returned = metrics.filter((m) => m.ReturnData !== false);
  if (returned.length !== 1 || typeof returned[0].Expression !== 'string')
    return fail(`${id}: expected one returned metric-math expression`);
  const ids = returned[0].Expression.split('+').map((s: string) => s.trim());
  const stats = ids.map((ref: string) => metrics.find((m) => m.Id === ref)?.MetricStat?.Metric);
  if (stats.some((s: unknown) => !s)) return fail(`${id}: expression "${returned[0].Expression}" is not a sum of this alarm's metrics`);
  const names = stats.map((s: { MetricName: string }) => s.MetricName).sort();
  const queues = new Set(
    stats.map((s: { Namespace: string; Dimensions?: { Name: string; Value: unknown }[] }) => {
      const dim = s.Namespace === 'AWS/SQS' ? s.Dimensions?.find((d) => d.Name === 'QueueName') : undefined;
      return dim ? (getAttOf(dim.Value)?.[0] ?? JSON.stringify(dim.Value)) : undefined;
    }),
  );
  if (JSON.stringify(names) !== JSON.stringify(BACKLOG_METRICS) || queues.size !== 1 || queues.has(undefined))
    return fail(`${id}: "${returned[0].Expression}" is not one queue's visible + in-flight backlog (${names.join(', ')})`);
  return [...queues][0] as string;
}

/** Every ECS service with a scalable target, and the alarms and step policies that set its count. */
export function scaledServices(template: CfnTemplate): ScaledService[] {
  const resources = Object.entries(template.Resources);
  const services: ScaledService[] = [];
  for (const [target, r] of resources) {
    if (r.Type !== 'AWS::ApplicationAutoScaling::ScalableTarget') continue;
    const p = r.Properties ?? {};
    if (p.ScalableDimension !== 'ecs:service:DesiredCount') continue;
    const service = serviceOfTarget(target, p);
    const policies = resources.filter(
      ([, x]) => x.Type === 'AWS::ApplicationAutoScaling::ScalingPolicy' && refOf(x.Properties?.ScalingTargetId) === target,
    );
    const rules: ScalingRule[] = [];
    const queues = new Set<string>();
    for (const [policy, x] of policies) {
      const cfg = x.Properties?.StepScalingPolicyConfiguration;
      if (x.Properties?.PolicyType !== 'StepScaling' || !cfg)
        fail(`${policy}: ${x.Properties?.PolicyType} is not evaluated (step scaling only)`);
      if (cfg.AdjustmentType !== 'ExactCapacity')
        fail(`${policy}: ${cfg.AdjustmentType} depends on the current count; only ExactCapacity is evaluated`);
      const steps: ScalingStep[] = (cfg.StepAdjustments ?? []).map((s: Record<string, number>) => ({
        lower: s.MetricIntervalLowerBound,
        upper: s.MetricIntervalUpperBound,
        adjustment: s.ScalingAdjustment,
      }));
      const alarms = resources.filter(
        ([, a]) => a.Type === 'AWS::CloudWatch::Alarm' && (a.Properties?.AlarmActions ?? []).some((act: unknown) => refOf(act) === policy),
      );
      if (!alarms.length) fail(`${policy}: no alarm invokes this policy`);
      for (const [alarm, a] of alarms) {
        const ap = a.Properties ?? {};
        const operator = ap.ComparisonOperator as Operator;
        if (!(operator in OPERATORS)) fail(`${alarm}: comparison ${operator} is not evaluated`);
        if (typeof ap.Threshold !== 'number') fail(`${alarm}: no numeric threshold`);
        queues.add(backlogQueue(alarm, ap));
        rules.push({ alarm, operator, threshold: ap.Threshold, policy, steps });
      }
    }
    if (queues.size > 1) fail(`${target}: its alarms watch different queues (${[...queues].join(', ')})`);
    services.push({
      tier: tierOfService(template, service),
      service,
      target,
      minCapacity: Number(p.MinCapacity),
      maxCapacity: Number(p.MaxCapacity),
      queue: [...queues][0],
      rules,
    });
  }
  return services;
}

const above = (op: Operator) => op.startsWith('Greater');

/** The step of a rule that covers a backlog (bounds as Application Auto Scaling reads them), if Json. */
function stepFor(rule: ScalingRule, backlog: number): ScalingStep | undefined {
  const d = backlog - rule.threshold;
  return rule.steps.find(({ lower = -Infinity, upper = Infinity }) =>
    above(rule.operator) ? lower <= d && d < upper : lower < d && d <= upper,
  );
}

function describeStep(rule: ScalingRule, s: ScalingStep): string {
  const lo = s.lower === undefined ? '-∞' : String(rule.threshold + s.lower);
  const hi = s.upper === undefined ? '∞' : String(rule.threshold + s.upper);
  return above(rule.operator) ? `[${lo}, ${hi})` : `(${lo}, ${hi}]`;
}

/** What the service's scaling does at a steady backlog. */
export function decide(service: ScaledService, backlog: number): ScalingDecision {
  const alarms: AlarmOutcome[] = [];
  for (const rule of service.rules) {
    if (!OPERATORS[rule.operator](backlog, rule.threshold)) continue;
    const step = stepFor(rule, backlog);
    const tasks = step ? Math.min(service.maxCapacity, Math.max(service.minCapacity, step.adjustment)) : null;
    alarms.push({ alarm: rule.alarm, policy: rule.policy, tasks, step: step && describeStep(rule, step) });
  }
  const counts = new Set(alarms.map((a) => a.tasks));
  const conflict = counts.size > 1 || counts.has(null);
  return { backlog, tasks: conflict || !alarms.length ? null : alarms[0].tasks, alarms, conflict };
}

function findService(template: CfnTemplate, tierOrServiceId: string): ScaledService {
  const all = scaledServices(template);
  return (
    all.find((s) => s.tier === tierOrServiceId || s.service === tierOrServiceId || s.target === tierOrServiceId) ??
    fail(`no scaled service for "${tierOrServiceId}" (have: ${all.map((s) => s.tier).join(', ') || 'none'})`)
  );
}

/** The task count a steady backlog leads to for one tier (its name, or its service's or target's logical id). */
export function tasksForBacklog(template: CfnTemplate, tierOrServiceId: string, backlog: number): ScalingDecision {
  return decide(findService(template, tierOrServiceId), backlog);
}

/**
 * The backlogs worth checking: 0, 1, each step boundary (as an absolute backlog) and its
 * neighbours, and a large one (ten times the highest boundary, at least 10,000).
 */
export function probeBacklogs(service: ScaledService, large?: number): number[] {
  const bounds = service.rules.flatMap((r) =>
    r.steps
      .flatMap((s) => [s.lower, s.upper])
      .filter((b) => b !== undefined)
      .map((b) => r.threshold + b),
  );
  const thresholds = service.rules.map((r) => r.threshold);
  const edges = [...bounds, ...thresholds].flatMap((b) => [Math.floor(b) - 1, Math.floor(b), Math.ceil(b), Math.ceil(b) + 1]);
  const top = Math.max(1, ...edges);
  const backlogs = new Set([0, 1, ...edges.filter((b) => b >= 0), large ?? Math.max(10_000, top * 10)]);
  return [...backlogs].sort((a, b) => a - b);
}

/** The promises the GPU scaling keeps, checked on a table's rows. */
export function scalingProblems(service: ScaledService, rows: ScalingDecision[]): string[] {
  const problems: string[] = [];
  let previous = 0;
  for (const r of rows) {
    const what = r.alarms.map((a) => `${a.alarm} → ${a.tasks ?? 'no step'}`).join(', ');
    if (r.conflict) problems.push(`backlog ${r.backlog}: alarms disagree (${what})`);
    else if (r.tasks === null) problems.push(`backlog ${r.backlog}: no alarm in ALARM, the count is left as it was`);
    else if (r.backlog === 0 && r.tasks !== 0) problems.push(`backlog 0: ${r.tasks} task(s) kept running on an empty queue`);
    else if (r.backlog >= 1 && r.tasks < 1) problems.push(`backlog ${r.backlog}: ${r.tasks} tasks, the messages wait forever`);
    if (r.tasks !== null) {
      if (r.tasks < previous) problems.push(`backlog ${r.backlog}: ${r.tasks} task(s), fewer than at a smaller backlog (${previous})`);
      previous = r.tasks;
    }
  }
  const last = rows.at(-1);
  if (last && last.tasks !== service.maxCapacity)
    problems.push(`backlog ${last.backlog}: ${last.tasks ?? 'no'} task(s), MaxCapacity ${service.maxCapacity} never reached`);
  return problems;
}

/** Per scaled service (one per GPU tier): backlog → tasks at every backlog worth checking, and what is wrong. */
export function scalingTable(template: CfnTemplate, options: { large?: number } = {}): TierScaling[] {
  return scaledServices(template).map((service) => {
    const rows = probeBacklogs(service, options.large).map((b) => decide(service, b));
    return { ...service, rows, problems: scalingProblems(service, rows) };
  });
}

const SYMBOLS: Record<Operator, string> = {
  GreaterThanOrEqualToThreshold: '>=',
  GreaterThanThreshold: '>',
  LessThanThreshold: '<',
  LessThanOrEqualToThreshold: '<=',
};
/** An alarm by its condition (`backlog >= 0`): shorter than its logical id, and what matters. */
const condition = (t: ScaledService, alarm: string) => {
  const r = t.rules.find((x) => x.alarm === alarm);
  return r ? `backlog ${SYMBOLS[r.operator]} ${r.threshold}` : alarm;
};

/** The tables as text, one block per tier: backlog, tasks, the alarms in ALARM and the step each applies. */
export function formatScalingTable(tables: TierScaling[]): string {
  const out: string[] = [];
  for (const t of tables) {
    out.push(`${t.tier}: ${t.minCapacity}..${t.maxCapacity} tasks, ${t.rules.length} alarm(s) on the backlog of ${t.queue ?? '?'}`);
    const cells = t.rows.map((r) => [
      String(r.backlog),
      r.conflict ? 'CONFLICT' : r.tasks === null ? 'unchanged' : String(r.tasks),
      r.alarms.map((a) => `${condition(t, a.alarm)}: ${a.step ?? '(no step)'} → ${a.tasks ?? '?'}`).join('; ') || '(none in ALARM)',
    ]);
    const head = ['backlog', 'tasks', 'alarms in ALARM: step (absolute backlog) → tasks'];
    const widths = head.map((h, i) => Math.max(h.length, ...cells.map((c) => c[i].length)));
    for (const row of [head, ...cells]) out.push(`  ${row.map((c, i) => (i < 2 ? c.padStart(widths[i]) : c)).join('  ')}`);
    out.push(
      t.problems.length
        ? t.problems.map((p) => `  PROBLEM ${p}`).join('\n')
        : '  ok: 0 at 0, ≥ 1 from 1, no conflicts, MaxCapacity reached',
    );
  }
  return `${out.join('\n')}\n`;
}

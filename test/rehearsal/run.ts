/**
 * The deploy rehearsal: what `cdk synth` produced, run the way AWS runs it, against the embedded
 * S3/SQS stand-ins (only the endpoint differs). One scenario drives every deployed artifact:
 *
 * 1. publish weights; store a "legacy" image whose upload event is lost (as if stored before the stack);
 * 2. S3's s3:TestEvent, then uploads with URL-encoded keys, through the router Lambda (its SQS event
 *    source), to the CPU worker Lambda (FIFO batches) and the GPU container (on the CPU engine);
 * 3. an object deleted before it is routed, an SSE-C object, a non-image, a broken "JPEG";
 * 4. a backfill through the state machine's Defaults, ItemReader and batches, into the backfill Lambda;
 * 5. SIGTERM to the container, as ECS stops a task.
 *
 * Every AWS call each principal made is then evaluated against the template's IAM policies.
 */
import { DeleteObjectCommand, HeadObjectCommand, PutObjectCommand } from '@aws-sdk/client-s3';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { HEIC_FIXTURES } from '../support/bombs.ts';
import { waitFor } from '../support/local-stack.ts';
import { publishWeights } from '../../pipeline/aws/s3-weights.ts';
import { gradientImage, randomArtifact, tempDir } from '../support/fixtures.ts';
import { startGpuContainer, type Container } from './container.ts';
import { eventSourcesFor, type EventSource } from './event-sources.ts';
import type { AuditedCall } from '../../pipeline/aws/audit.ts';
import { evaluateCalls, readAudit, unusedGrants, type Verdict } from './iam.ts';
import { nodeFunctions, startLambda, type LambdaFunction } from './lambda.ts';
import { runBackfillStateMachine, stateMachineOf } from './state-machine.ts';
import { synthesize, type Assembly, type Resolver } from './template.ts';
import { CREDENTIALS, startWorld, type World } from './world.ts';
import { dynamoClient } from '../../pipeline/aws/clients.ts';
import { DynamoTagIndex } from '../../pipeline/aws/dynamo-index.ts';

export interface PrincipalReport {
  role: string;
  /** What runs with this role. */
  runs: string;
  /** Every AWS call it made, as the SDK audit recorded it. */
  calls: AuditedCall[];
  verdicts: Verdict[];
  unused: { action: string; resources: string[] }[];
}

export interface RehearsalReport {
  assembly: Assembly;
  /** The physical names the run gave the template's resources (to evaluate calls again). */
  resolver: Resolver;
  queueArnOfUrl: (url: string) => string | undefined;
  tableArnOf: (name: string) => string | undefined;
  functions: { logicalId: string; coldStart: 'ok' }[];
  container: { taskDefinition: string; exitCode: number | null; output: string };
  objects: Record<string, Record<string, string> | 'missing' | 'unreadable (SSE-C)'>;
  deadLetters: Record<string, number>;
  /** Keys the deployed workers put into the stack's tag index (its table, on dynalite). */
  indexed: string[];
  routerInvocations: EventSource['invocations'];
  workerInvocations: EventSource['invocations'];
  backfill: { input: Record<string, unknown>; batches: number; results: unknown[] };
  principals: PrincipalReport[];
  /** Requests a role's policies would deny (or that could not be mapped to IAM): must be empty. */
  denied: Verdict[];
  seconds: number;
}

export const SCENARIO = {
  photo: 'uploads/a photo+1.jpg',
  catalog: 'catalog/shoe, left.png',
  textFile: 'notes/readme.txt',
  broken: 'uploads/broken.jpg',
  deleted: 'uploads/deleted before routing.jpg',
  sseC: 'uploads/secret.jpg',
  legacy: 'legacy/stored before the stack.jpg',
  heic: 'catalog/IMG_0001.heic',
} as const;

export async function runRehearsal(options: { assembly?: Assembly; log?: (line: string) => void } = {}): Promise<RehearsalReport> {
  const log = options.log ?? (() => {});
  const started = Date.now();
  log('synthesizing (cdk synth) …');
  const assembly = options.assembly ?? (await synthesize());
  const world: World = await startWorld(assembly);
  const lambdas: LambdaFunction[] = [];
  const sources: EventSource[] = [];
  const containers: Container[] = [];
  let pumping = true;
  const pumps: Promise<void>[] = [];
  try {
    const [[bucketId]] = assembly.ofType('Custom::S3BucketNotifications').map(([, r]) => [r.Properties!.BucketName.Ref as string]);
    const bucket = world.bucketName(bucketId);
    const anyFn = assembly.template.Resources[nodeFunctions(assembly)[0]];
    const weightsLocation = world.resolver.resolve(anyFn.Properties!.Environment.Variables.EFFITAG_WEIGHTS) as string;
    log(`publishing random B0 weights to ${weightsLocation}`);
    const weights = await tempDir('effitag-rehearsal-weights-');
    await randomArtifact(weights, 'b0');
    await publishWeights(world.s3, weights, weightsLocation);

    const put = async (key: string, body: Uint8Array | string, extra: Record<string, unknown> = {}) =>
      world.s3.send(new PutObjectCommand({ Bucket: bucket, Key: key, Body: body, ...extra }));
    const intakeId = assembly.ofType('Custom::S3BucketNotifications')[0][1].Properties!.NotificationConfiguration.QueueConfigurations[0]
      .QueueArn['Fn::GetAtt'][0] as string;
    const intake = world.queues.get(intakeId)!;
    // 1. An image stored before the stack existed: its event never reaches the pipeline.
    await put(SCENARIO.legacy, await gradientImage(320, 240, 'jpeg', 9), { ContentType: 'image/jpeg' });
    await waitFor(
      'the legacy upload event',
      async () => {
        const m = await intake.receive({ max: 10, waitSeconds: 1 });
        if (m.length) await intake.delete(m);
        return m.length > 0 || undefined;
      },
      10_000,
    );

    log('starting the Lambda functions from their assets …');
    for (const id of nodeFunctions(assembly)) lambdas.push(await startLambda(assembly, world, id));
    for (const fn of lambdas) sources.push(...eventSourcesFor(assembly, world, fn));
    for (const source of sources) {
      pumps.push(
        (async () => {
          while (pumping) await source.pollOnce().catch((err) => log(`event source ${source.functionId}: ${String(err)}`));
        })(),
      );
    }
    log('starting the GPU worker container on the CPU engine …');
    for (const [id] of assembly.ofType('AWS::ECS::TaskDefinition')) containers.push(await startGpuContainer(assembly, world, id));

    // 2–3. S3's test event, then the uploads.
    await intake.send([
      {
        body: JSON.stringify({
          Service: 'Amazon S3',
          Event: 's3:TestEvent',
          Time: new Date().toISOString(),
          Bucket: bucket,
          RequestId: 'R',
          HostId: 'H',
        }),
      },
    ]);
    await put(SCENARIO.photo, await gradientImage(640, 480, 'jpeg', 1), { ContentType: 'image/jpeg' });
    await put(SCENARIO.catalog, await gradientImage(300, 300, 'png', 2), { ContentType: 'image/png' });
    await put(SCENARIO.heic, readFileSync(join(HEIC_FIXTURES, 'photo.heic')), { ContentType: 'image/heic' });
    await put(SCENARIO.textFile, 'not an image', { ContentType: 'text/plain' });
    await put(SCENARIO.broken, 'this is text, not a JPEG', { ContentType: 'image/jpeg' });
    await put(SCENARIO.sseC, await gradientImage(64, 64, 'jpeg', 3), {
      ContentType: 'image/jpeg',
      SSECustomerAlgorithm: 'AES256',
      SSECustomerKey: Buffer.alloc(32, 7).toString('base64'),
    });
    // Deleted while its event waits in the intake queue.
    await put(SCENARIO.deleted, await gradientImage(64, 64, 'jpeg', 4), { ContentType: 'image/jpeg' });
    await world.s3.send(new DeleteObjectCommand({ Bucket: bucket, Key: SCENARIO.deleted }));

    const metadataOf = async (key: string) =>
      (await world.s3.send(new HeadObjectCommand({ Bucket: bucket, Key: key })).catch(() => undefined))?.Metadata;
    /** What an operator sees: the object's metadata, or why there is none to see. */
    const stateOf = async (key: string): Promise<Record<string, string> | 'missing' | 'unreadable (SSE-C)'> => {
      try {
        return (await world.s3.send(new HeadObjectCommand({ Bucket: bucket, Key: key }))).Metadata ?? {};
      } catch (err) {
        const status = (err as { $metadata?: { httpStatusCode?: number } }).$metadata?.httpStatusCode;
        if (status === 404) return 'missing';
        if (status === 400) return 'unreadable (SSE-C)';
        throw err;
      }
    };
    const settled = (keys: string[]) => async () =>
      (await Promise.all(keys.map(metadataOf))).every((m) => m?.['effitag-status']) || undefined;
    log('waiting for the uploads to be tagged …');
    await waitFor('uploads tagged', settled([SCENARIO.photo, SCENARIO.catalog, SCENARIO.heic, SCENARIO.broken]), 120_000);

    // 4. Backfill through the state machine, with the input a console start would give.
    log('backfill through the state machine …');
    const backfillFn = lambdas.find((f) => f.logicalId === stateMachineProcessor(assembly))!;
    const sm = stateMachineOf(assembly, world);
    const smAudit = join(await tempDir('effitag-rehearsal-sm-'), 'audit.jsonl');
    const backfill = await runBackfillStateMachine(assembly, world, backfillFn, {}, smAudit);
    await waitFor('the legacy image tagged', settled([SCENARIO.legacy]), 60_000);

    // Let the router see the write-backs' own Copy events, then stop.
    await waitFor(
      'the intake queue drained',
      async () => (await intake.receive({ max: 1, waitSeconds: 0, visibilitySeconds: 0 })).length === 0 || undefined,
      30_000,
    );
    pumping = false;
    await Promise.all(pumps);
    log('stopping the container (SIGTERM) …');
    const exitCode = await containers[0].stop();

    const objects: RehearsalReport['objects'] = {};
    for (const key of Object.values(SCENARIO)) objects[key] = await stateOf(key);
    const [tableId] = assembly.ofType('AWS::DynamoDB::Table').map(([id]) => id);
    const dynamo = dynamoClient({ dynamoEndpoint: world.dynamoEndpoint, credentials: CREDENTIALS });
    const indexed = (await new DynamoTagIndex(dynamo, world.physical.get(tableId)!.ref).search({ bucket, tags: [], limit: 100 })).hits
      .map((h) => h.key)
      .sort();
    dynamo.destroy();
    const deadLetters: Record<string, number> = {};
    for (const [id, q] of world.queues) {
      if (!/dlq/i.test(id)) continue;
      deadLetters[id] = (await q.receive({ max: 10, waitSeconds: 0, visibilitySeconds: 0 })).length;
    }

    log("evaluating every recorded call against the template's IAM policies …");
    const runsOf: { role: string; runs: string; audit: string }[] = [
      ...lambdas.map((f) => ({ role: f.roleId, runs: `Lambda ${f.logicalId}`, audit: f.auditLog })),
      ...containers.map((c) => ({ role: c.roleId, runs: `ECS task ${c.taskDefinitionId}`, audit: c.auditLog })),
      { role: sm.roleId, runs: `state machine ${sm.id} (Distributed Map ItemReader)`, audit: smAudit },
    ];
    const principals: PrincipalReport[] = [];
    for (const r of runsOf) {
      const calls = readAudit(r.audit);
      const verdicts = await evaluateCalls(assembly, world.resolver, r.role, calls, world.queueArnOfUrl, world.tableArnOf);
      principals.push({ role: r.role, runs: r.runs, calls, verdicts, unused: unusedGrants(assembly, world.resolver, r.role, verdicts) });
    }
    return {
      assembly,
      resolver: world.resolver,
      queueArnOfUrl: world.queueArnOfUrl,
      tableArnOf: world.tableArnOf,
      functions: lambdas.map((f) => ({ logicalId: f.logicalId, coldStart: 'ok' as const })),
      container: { taskDefinition: containers[0].taskDefinitionId, exitCode, output: containers[0].output() },
      objects,
      indexed,
      deadLetters,
      routerInvocations: sources.filter((s) => s.queueId === intakeId).flatMap((s) => s.invocations),
      workerInvocations: sources.filter((s) => s.queueId !== intakeId).flatMap((s) => s.invocations),
      backfill: { input: backfill.input, batches: backfill.batches, results: backfill.results },
      principals,
      denied: principals.flatMap((p) => p.verdicts.filter((v) => v.result !== 'Allowed')),
      seconds: (Date.now() - started) / 1000,
    };
  } catch (err) {
    // What each artifact printed is the only way to see why a run went wrong.
    const tails = [
      ...lambdas.map((f) => [`Lambda ${f.logicalId}`, f.output()]),
      ...containers.map((c) => [`ECS task ${c.taskDefinitionId}`, c.output()]),
    ]
      .map(([who, out]) => `--- ${who} (last lines):\n${out.split('\n').slice(-15).join('\n')}`)
      .join('\n');
    (err as Error).message += `\n${tails}`;
    throw err;
  } finally {
    pumping = false;
    await Promise.allSettled(pumps);
    for (const s of sources) s.stop();
    for (const c of containers) await c.stop().catch(() => {});
    for (const f of lambdas) await f.stop().catch(() => {});
    await world.stop();
  }
}

/** The Lambda the backfill state machine's item processor invokes. */
export function stateMachineProcessor(assembly: Assembly): string {
  const [[, sm]] = assembly.ofType('AWS::StepFunctions::StateMachine');
  const refs = JSON.stringify(sm.Properties!.DefinitionString).match(/"Fn::GetAtt":\["([A-Za-z0-9]+)","Arn"\]/g) ?? [];
  const ids = refs
    .map((r) => /\["([A-Za-z0-9]+)"/.exec(r)![1])
    .filter((id) => assembly.template.Resources[id]?.Type === 'AWS::Lambda::Function');
  if (ids.length !== 1) throw new Error(`expected one Lambda in the state machine, found ${ids.join(', ')}`);
  return ids[0];
}

/** The report as a reviewer reads it before deploying (`npm run rehearse`). */
export function formatReport(report: RehearsalReport): string {
  const lines: string[] = [];
  lines.push(`Deploy rehearsal (${report.seconds.toFixed(0)} s): the synthesized artifacts, run as AWS runs them`);
  lines.push('');
  for (const f of report.functions) lines.push(`  Lambda ${f.logicalId}: cold start ok (asset + its layers only)`);
  lines.push(`  ECS task ${report.container.taskDefinition}: exit code ${report.container.exitCode} after SIGTERM`);
  lines.push('');
  lines.push('Objects after the run:');
  for (const [key, m] of Object.entries(report.objects)) {
    lines.push(
      `  ${key}: ${typeof m === 'string' ? m : m['effitag-status'] ? `${m['effitag-status']}${m['effitag-reason'] ? ` (${m['effitag-reason'].slice(0, 60)})` : ` ${m['effitag-model']}`}` : 'untouched'}`,
    );
  }
  lines.push(
    `Dead-letter queues: ${Object.entries(report.deadLetters)
      .map(([q, n]) => `${q} ${n}`)
      .join(', ')}`,
  );
  lines.push('');
  for (const p of report.principals) {
    lines.push(`${p.runs}  (role ${p.role})`);
    for (const v of p.verdicts) {
      lines.push(
        `  ${v.result === 'Allowed' ? 'allow' : 'DENY '} ${v.action.padEnd(28)} ${v.resource}${Object.keys(v.context).length ? ` ${JSON.stringify(v.context)}` : ''}  ×${v.count}${v.detail ? `  ${v.detail}` : ''}`,
      );
    }
    if (p.unused.length) lines.push(`  granted, never used: ${p.unused.map((u) => u.action).join(', ')}`);
  }
  lines.push('');
  lines.push(
    report.denied.length
      ? `VERDICT: ${report.denied.length} request(s) the template would deny`
      : 'VERDICT: every call each principal made is allowed by the template',
  );
  return lines.join('\n');
}

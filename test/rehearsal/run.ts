/**
 * The deploy rehearsal: what `cdk synth` produced from a shipped tiers file, run the way AWS runs it,
 * against the embedded S3/SQS/DynamoDB stand-ins (only the endpoint differs), following the README's
 * deploy steps in the README's order (cdk/deploy-steps.ts, one list for both):
 *
 * 1. deploy: synth; every bucket, queue and table on the stand-ins; the Lambdas from their assets;
 *    a container per GPU task definition. No weights are published yet: the stack must settle (the
 *    tasks keep running, waiting) and a first upload per tier waits untagged, its reason logged,
 *    nothing in a DLQ. An image stored before the stack (its event lost) is there too.
 * 2. fetch: random weights in the official artifact layout (no internet), cached per checkout.
 * 3. publish: `effitag weights publish --tiers FILE` (the CLI) onto the stand-in weights bucket, then
 *    the backfill state machine (what `--backfill-state-machine` starts): what waited is tagged.
 * 4. upload (tiers/defaults.json): uploads with URL-encoded keys, S3's s3:TestEvent, an object deleted
 *    before it is routed, an SSE-C object, a non-image, a broken "JPEG", a HEIC; then SIGTERM to
 *    every task.
 *
 * Every AWS call each principal made is then evaluated against the template's IAM policies.
 */
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { CreateBucketCommand, DeleteObjectCommand, GetObjectTaggingCommand, HeadObjectCommand, PutObjectCommand } from '@aws-sdk/client-s3';
import { REPO_ROOT } from '../../cdk/constructs/bundling.ts';
import { deploySteps, type DeployStepId } from '../../cdk/deploy-steps.ts';
import { formatScalingTable, scalingTable, type TierScaling } from '../../cdk/scaling-model.ts';
import type { AuditedCall } from '../../pipeline/aws/audit.ts';
import { dynamoClient } from '../../pipeline/aws/clients.ts';
import { DynamoTagIndex } from '../../pipeline/aws/dynamo-index.ts';
import { chooseVariant } from '../../tiers/choose.ts';
import { loadTiers } from '../../tiers/load.ts';
import { OVERRIDE_METADATA_KEY, routeObject } from '../../tiers/route.ts';
import { modelFor, type TiersFile } from '../../tiers/schema.ts';
import { HEIC_FIXTURES } from '../support/bombs.ts';
import { gradientImage, randomArtifact } from '../support/fixtures.ts';
import { waitFor } from '../support/local-stack.ts';
import { startGpuContainer, type Container } from './container.ts';
import { eventSourcesFor, type EventSource } from './event-sources.ts';
import { evaluateCalls, readAudit, unusedGrants, type Verdict } from './iam.ts';
import { copyTree, nodeFunctions, startLambda, type LambdaFunction, type StartLambdaOptions } from './lambda.ts';
import { cached, runTemp } from './paths.ts';
import { runBackfillStateMachine, stateMachineOf } from './state-machine.ts';
import { REGION, SHIPPED_TIERS, synthesize, type Assembly, type Resolver } from './template.ts';
import { type CloudFormationStandIn, resolvedOutputs, startCloudFormation } from './cloudformation.ts';
import { CREDENTIALS, startWorld, WEIGHTS_RECHECK_SECONDS, type World } from './world.ts';

export interface PrincipalReport {
  role: string;
  /** What runs with this role. */
  runs: string;
  /** Every AWS call it made, as the SDK audit recorded it. */
  calls: AuditedCall[];
  verdicts: Verdict[];
  unused: { action: string; resources: string[] }[];
}

export interface StepReport {
  id: DeployStepId;
  command: string;
  standIn: string;
  seconds: number;
  /** What the step showed (a line each). */
  notes: string[];
}

export interface RehearsalReport {
  tiersFile: string;
  events: 's3' | 'eventbridge';
  tiers: string[];
  /** The README's deploy steps, in its order, as the rehearsal ran them. */
  steps: StepReport[];
  firstUploads: FirstUpload[];
  unreachable: { tier: string; why: string }[];
  /** Models the tiers use that this run did not publish (their objects would keep waiting). */
  lacking: string[];
  /** Per GPU tier: backlog → tasks, as Application Auto Scaling applies the synthesized alarms and steps. */
  scaling: TierScaling[];
  assembly: Assembly;
  /** The physical names the run gave the template's resources (to evaluate calls again). */
  resolver: Resolver;
  queueArnOfUrl: (url: string) => string | undefined;
  tableArnOf: (name: string) => string | undefined;
  functions: { logicalId: string; coldStart: 'ok' }[];
  /** Every GPU task: still running before any weights were published, and its exit code after SIGTERM. */
  tasks: { taskDefinition: string; tier: string; exitCode: number | null; runningBeforeWeights: boolean; output: string }[];
  container: { taskDefinition: string; exitCode: number | null; output: string };
  objects: Record<string, Record<string, string> | 'missing' | 'unreadable (SSE-C)'>;
  deadLetters: Record<string, number>;
  /** Keys the deployed workers put into the stack's tag index (its table, on dynalite). */
  indexed: string[];
  /** What `effitag --stack EffiTag search s3://BUCKET` listed (no table: no search). */
  searchedWithStack?: string[];
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
  /** A large original for the premium tier: B7's 600 px, a model this run does not publish. */
  unpublished: 'originals/large scan.jpg',
} as const;

export interface RehearsalOptions {
  /** The tiers file to deploy (default tiers/defaults.json). */
  tiersFile?: string;
  assembly?: Assembly;
  log?: (line: string) => void;
  /** The scenario of step 4 (uploads of every kind); default: for tiers/defaults.json. */
  scenario?: boolean;
  /** How uploads reach the intake queue (effitag:events): bucket notifications (default) or an EventBridge rule. */
  events?: 's3' | 'eventbridge';
}

/** Both delivery modes are rehearsed: the defaults with S3 notifications, the examples with EventBridge. */
export const eventsModeFor = (tiersFile: string): 's3' | 'eventbridge' => (tiersFile === SHIPPED_TIERS[0] ? 's3' : 'eventbridge');

/** One first upload per tier: small, so that its tier's cheapest variant is chosen. */
export interface FirstUpload {
  tier: string;
  key: string;
  metadata?: Record<string, string>;
  variant: string;
  model: string;
  /** Before any weights: the router's WARN line for it (tier, model, location, fix). */
  waitingLog?: Record<string, unknown>;
  /** Its state before weights were published (undefined: untagged, as it should be). */
  statusBeforeWeights?: string;
  after?: Record<string, string>;
}

export const FIRST_UPLOAD_SIZE = { width: 160, height: 120 };

/**
 * Models the rehearsal generates and publishes: up to B3 (12 M parameters, 49 MB). B5, B7, V2-S and
 * V2-M (30–66 M parameters, up to 267 MB each) would take minutes to generate, export and load on two
 * cores for no other code path: their tiers' uploads that need them are shown waiting instead.
 */
export const CHEAP_MODELS = ['b0', 'b1', 'b2', 'b3'];

/**
 * A key (and override metadata) that routes to each tier with the stack's own bucket, and what it
 * will be tagged with; tiers no upload to the stack's bucket reaches are listed apart.
 */
export function firstUploadsOf(config: TiersFile): { uploads: FirstUpload[]; unreachable: { tier: string; why: string }[] } {
  const uploads: FirstUpload[] = [];
  const unreachable: { tier: string; why: string }[] = [];
  const bucket = 'the-stacks-bucket';
  const candidates = [
    ...config.routing.rules.filter((r) => r.bucket === undefined).map((r) => r.prefix),
    'first-uploads/', // the default route
  ];
  for (const [name, tier] of Object.entries(config.tiers)) {
    let found: { key: string; metadata?: Record<string, string> } | undefined;
    for (const prefix of candidates) {
      const key = `${prefix}first upload for ${name}.jpg`;
      if (routeObject(config, { bucket, key }).tier === name) found ??= { key };
      const metadata = { [OVERRIDE_METADATA_KEY]: name };
      const d = routeObject(config, { bucket, key, metadata });
      if (d.tier === name && d.override?.honoured) found ??= { key, metadata };
    }
    if (!found) {
      unreachable.push({ tier: name, why: 'no prefix or override routes an upload to the stack bucket here (a rule for another bucket)' });
      continue;
    }
    const variant = chooseVariant(tier, FIRST_UPLOAD_SIZE.width, FIRST_UPLOAD_SIZE.height, config.resolutionTolerance).variant;
    uploads.push({ tier: name, ...found, variant, model: modelFor(tier, variant) });
  }
  return { uploads, unreachable };
}

/**
 * Random weights for a model in the official artifact layout, generated once per checkout: cached
 * under the model, the seed and a hash of the code that lays an artifact out (a changed network plan
 * or format is a new entry, never a stale one).
 */
export async function weightsCatalog(models: readonly string[]): Promise<string> {
  const catalog = runTemp('weights-catalog-');
  const layout = createHash('sha256');
  for (const f of ['plan.ts', 'random-weights.ts', 'weights.ts']) layout.update(readFileSync(join(REPO_ROOT, 'model', f)));
  const version = layout.digest('hex').slice(0, 12);
  for (const model of models) {
    const dir = await cached(`weights-${model}-random-seed7-${version}`, async (tmp) => {
      await randomArtifact(tmp, model, { seed: 7 });
    });
    copyTree(dir, join(catalog, model));
  }
  return catalog;
}

/** The rehearsed stack's name, as `cdk deploy` names it (and `--stack` takes it). */
export const STACK_NAME = 'EffiTag';

/**
 * `npx effitag --stack EffiTag ARGS` against the stand-ins, as an operator runs it: the stack named
 * once, its outputs read from (the rehearsal's) CloudFormation; as the runtimes, the SDK is pointed
 * at the stand-ins by AWS_ENDPOINT_URL_*, and nothing else differs from AWS.
 */
async function effitag(world: World, cfn: CloudFormationStandIn, args: string[]): Promise<{ stdout: string; stderr: string }> {
  return promisify(execFile)(process.execPath, [join(REPO_ROOT, 'bin', 'effitag.js'), '--stack', STACK_NAME, ...args], {
    cwd: REPO_ROOT,
    maxBuffer: 16 * 1024 * 1024,
    env: {
      ...process.env,
      AWS_ENDPOINT_URL_CLOUDFORMATION: cfn.endpoint,
      AWS_ENDPOINT_URL_S3: world.s3Endpoint,
      AWS_ENDPOINT_URL_SQS: world.sqsEndpoint,
      AWS_ENDPOINT_URL_DYNAMODB: world.dynamoEndpoint,
      AWS_ACCESS_KEY_ID: CREDENTIALS.accessKeyId,
      AWS_SECRET_ACCESS_KEY: CREDENTIALS.secretAccessKey,
      AWS_REGION: REGION,
    },
  });
}

/** JSON log lines of an artifact's output. */
export function logLines(output: string): Record<string, any>[] {
  return output
    .split('\n')
    .filter((l) => l.startsWith('{'))
    .flatMap((l) => {
      try {
        return [JSON.parse(l)];
      } catch {
        return [];
      }
    });
}

export async function runRehearsal(options: RehearsalOptions = {}): Promise<RehearsalReport> {
  const log = options.log ?? (() => {});
  const tiersFile = options.tiersFile ?? SHIPPED_TIERS[0];
  const fullScenario = options.scenario ?? tiersFile === SHIPPED_TIERS[0];
  const { config } = loadTiers(join(REPO_ROOT, tiersFile));
  const started = Date.now();
  const steps: StepReport[] = [];
  const planned = deploySteps(tiersFile);
  const step = (id: DeployStepId) => {
    const s = planned.find((p) => p.id === id)!;
    const r: StepReport = { id, command: s.command.join(' '), standIn: s.standIn, seconds: 0, notes: [] };
    steps.push(r);
    log(`step ${steps.length}. ${id}: ${s.command[0]}${s.command.length > 1 ? ' …' : ''}`);
    log(`   stand-in: ${s.standIn}`);
    const t = Date.now();
    return Object.assign(r, { done: () => (r.seconds = (Date.now() - t) / 1000) });
  };

  // 1. Deploy.
  const deploy = step('deploy');
  const events = options.events ?? eventsModeFor(tiersFile);
  log(`synthesizing ${tiersFile}, events from ${events === 's3' ? 'S3 notifications' : 'EventBridge'} (cdk synth) …`);
  const assembly = options.assembly ?? (await synthesize({ tiersFile, context: { 'effitag:events': events } }));
  const world: World = await startWorld(assembly);
  const cfn = await startCloudFormation({ [STACK_NAME]: resolvedOutputs(assembly, world.resolver) });
  const lambdas: LambdaFunction[] = [];
  const sources: EventSource[] = [];
  const containers: Container[] = [];
  let pumping = true;
  const pumps: Promise<void>[] = [];
  try {
    const { bucketId, intakeId } = bucketAndIntake(assembly);
    const bucket = world.bucketName(bucketId);
    // Weights a tier names in another bucket of the user's (examples/tiers: a custom network): the
    // bucket exists, nothing is published there yet.
    for (const t of Object.values(config.tiers)) {
      for (const v of t.variants) {
        const m = /^s3:\/\/([^/]+)/.exec(typeof v === 'string' ? '' : String((v as { weights?: string }).weights ?? ''));
        if (m) await world.s3.send(new CreateBucketCommand({ Bucket: m[1] })).catch(() => {});
      }
    }

    const put = async (key: string, body: Uint8Array | string, extra: Record<string, unknown> = {}) =>
      world.s3.send(new PutObjectCommand({ Bucket: bucket, Key: key, Body: body, ...extra }));
    const intake = world.queues.get(intakeId)!;
    // An image stored before the stack existed: its event never reaches the pipeline.
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
    for (const id of nodeFunctions(assembly)) lambdas.push(await startLambda(assembly, world, id, await nativeLayerFor(assembly, id)));
    for (const fn of lambdas) sources.push(...eventSourcesFor(assembly, world, fn));
    for (const source of sources) {
      pumps.push(
        (async () => {
          while (pumping) await source.pollOnce().catch((err) => log(`event source ${source.functionId}: ${String(err)}`));
        })(),
      );
    }
    log('starting a container per GPU task definition (CPU engine), with no weights published …');
    for (const [id] of assembly.ofType('AWS::ECS::TaskDefinition')) containers.push(await startGpuContainer(assembly, world, id));
    const tierOfTask = (c: Container) => taskTier(assembly, c.taskDefinitionId);
    // Settled: every task says which models it waits for, and keeps running.
    for (const c of containers) {
      await waitFor(
        `${c.taskDefinitionId} waiting for its weights`,
        async () => {
          if (c.exitCode() !== null)
            throw new Error(`${c.taskDefinitionId} exited ${c.exitCode()} with no weights:\n${c.output().slice(-2000)}`);
          return logLines(c.output()).some((l) => l.msg === 'waiting for weights: model not published') || undefined;
        },
        120_000,
      );
    }

    const { uploads: firstUploads, unreachable } = firstUploadsOf(config);
    for (const u of firstUploads) {
      await put(u.key, await gradientImage(FIRST_UPLOAD_SIZE.width, FIRST_UPLOAD_SIZE.height, 'jpeg', u.key.length), {
        ContentType: 'image/jpeg',
        Metadata: u.metadata,
      });
    }
    const router = lambdas.find((f) => f.logicalId.startsWith('IngestRouter'))!;
    for (const u of firstUploads) {
      u.waitingLog = await waitFor(
        `the router's waiting-for-weights line for ${u.key}`,
        async () => logLines(router.output()).find((l) => l.msg === 'waiting for weights: not enqueued' && l.key === u.key),
        60_000,
      );
    }
    for (const u of firstUploads) u.statusBeforeWeights = (await resultOf(world.s3, bucket, u.key))?.['effitag-status'];
    const settledWithoutWeights = containers.map((c) => ({
      task: c.taskDefinitionId,
      tier: tierOfTask(c),
      running: c.exitCode() === null,
    }));
    deploy.notes.push(
      ...settledWithoutWeights.map((c) => `task ${c.tier}: ${c.running ? 'running, waiting for its weights' : 'EXITED'}`),
      ...firstUploads.map((u) => `${u.tier}: "${u.key}" waits (${u.model} not published), logged at ${u.waitingLog?.level}`),
      ...unreachable.map((u) => `${u.tier}: not exercised: ${u.why}`),
    );
    deploy.done();

    // 2. Fetch: the cheap models (generating and loading B5–B7 and V2 on two cores takes minutes);
    // the rest stay unpublished, so their objects must keep waiting.
    const fetch = step('fetch');
    const needed = config.models.filter((m) => CHEAP_MODELS.includes(m));
    const catalog = await weightsCatalog(needed);
    fetch.notes.push(
      `generated ${needed.join(', ')} (random weights, cached per checkout); not generated: ${config.models.filter((m) => !needed.includes(m)).join(', ') || 'none'}`,
    );
    fetch.done();

    // 3. Publish with the CLI, then the catch-up backfill through the state machine.
    const publish = step('publish');
    // No location: the stack's output WeightsLocation.
    const published = await effitag(world, cfn, [
      'weights',
      'publish',
      '--tiers',
      join(REPO_ROOT, tiersFile),
      '--weights',
      catalog,
      '--allow-missing',
    ]);
    publish.notes.push(
      ...(published.stdout + published.stderr)
        .trim()
        .split('\n')
        .filter((l) => /published|not published/.test(l)),
    );
    const lacking = config.models.filter((m) => !needed.includes(m));
    // `--backfill` waits `--backfill-delay` (by default the routers' recheck interval) before the
    // backfill: a router that found a model missing reads its manifest again only after that. Waited
    // here from the router's last "missing" answer, so uploads after this step are routed.
    const lastMissing = Math.max(
      0,
      ...[router, backfillFnOf(lambdas, assembly)].flatMap((f) =>
        logLines(f.output())
          .filter((l) => /^waiting for weights|^weights not published/.test(String(l.msg)))
          .map((l) => Date.parse(l.time)),
      ),
    );
    const delayMs = Math.max(0, lastMissing + WEIGHTS_RECHECK_SECONDS * 1000 + 1000 - Date.now());
    log(`waiting ${(delayMs / 1000).toFixed(0)} s for the routers to read the manifests again (weights publish --backfill-delay) …`);
    await new Promise((r) => setTimeout(r, delayMs));
    publish.notes.push(`waited ${(delayMs / 1000).toFixed(0)} s, as --backfill-delay does, for the routers to re-read the manifests`);
    const backfillFn = backfillFnOf(lambdas, assembly);
    const sm = stateMachineOf(assembly, world);
    const smAudit = join(runTemp('state-machine-'), 'audit.jsonl');
    const backfill = await runBackfillStateMachine(assembly, world, backfillFn, {}, smAudit);
    log('waiting for the first uploads and the legacy image to be tagged …');
    const ready = firstUploads.filter((u) => needed.includes(u.model));
    await waitFor(
      'the first uploads whose models are published, and the legacy image, tagged',
      settled(world, bucket, [...ready.map((u) => u.key), SCENARIO.legacy]),
      240_000,
    );
    for (const u of firstUploads) u.after = await resultOf(world.s3, bucket, u.key);
    publish.notes.push(
      ...firstUploads.map((u) => `${u.tier}: "${u.key}" ${u.after?.['effitag-status']} with ${u.after?.['effitag-model']}`),
    );
    publish.done();

    // 4. Uploads of every kind (the default tiers' routes).
    const upload = step('upload');
    if (fullScenario) {
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
      await put(SCENARIO.catalog, await gradientImage(200, 200, 'png', 2), { ContentType: 'image/png' });
      await put(SCENARIO.heic, readFileSync(join(HEIC_FIXTURES, 'photo.heic')), { ContentType: 'image/heic' });
      await put(SCENARIO.unpublished, await gradientImage(640, 640, 'jpeg', 5), { ContentType: 'image/jpeg' });
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
      log('waiting for the uploads to be tagged …');
      await waitFor('uploads tagged', settled(world, bucket, [SCENARIO.photo, SCENARIO.catalog, SCENARIO.heic, SCENARIO.broken]), 180_000);
      const waiting = await waitFor(
        `the router's waiting-for-weights line for ${SCENARIO.unpublished}`,
        async () => logLines(router.output()).find((l) => l.msg === 'waiting for weights: not enqueued' && l.key === SCENARIO.unpublished),
        60_000,
      );
      upload.notes.push(`"${SCENARIO.unpublished}" waits: ${waiting.tier} chose ${waiting.model}, not published (WARN logged)`);
    } else {
      upload.notes.push('the first uploads above were the uploads of this tiers file');
    }
    upload.done();

    // Let the router see the write-backs' own Copy events, then stop.
    await waitFor(
      'the intake queue drained',
      async () => (await intake.receive({ max: 1, waitSeconds: 0, visibilitySeconds: 0 })).length === 0 || undefined,
      30_000,
    );
    pumping = false;
    await Promise.all(pumps);
    log('stopping the tasks (SIGTERM) …');
    const tasks: RehearsalReport['tasks'] = [];
    for (const c of containers) {
      const exitCode = await c.stop();
      tasks.push({
        taskDefinition: c.taskDefinitionId,
        tier: tierOfTask(c),
        exitCode,
        runningBeforeWeights: settledWithoutWeights.find((s) => s.task === c.taskDefinitionId)!.running,
        output: c.output(),
      });
    }

    const objects: RehearsalReport['objects'] = {};
    for (const key of fullScenario ? Object.values(SCENARIO) : [SCENARIO.legacy]) objects[key] = await stateOf(world, bucket, key);
    const [tableId] = assembly.ofType('AWS::DynamoDB::Table').map(([id]) => id);
    let indexed: string[] = [];
    let searchedWithStack: string[] | undefined;
    if (tableId) {
      const dynamo = dynamoClient({ dynamoEndpoint: world.dynamoEndpoint, credentials: CREDENTIALS });
      indexed = (await new DynamoTagIndex(dynamo, world.physical.get(tableId)!.ref).search({ bucket, tags: [], limit: 100 })).hits
        .map((h) => h.key)
        .sort();
      dynamo.destroy();
      // The same through the CLI, the stack named once (`effitag search --stack EffiTag`): its table from its outputs.
      const searched = await effitag(world, cfn, ['search', `s3://${bucket}`, '--limit', '100', '--json']);
      searchedWithStack = (JSON.parse(searched.stdout) as { hits: { key: string }[] }).hits.map((h) => h.key).sort();
    }
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
      tiersFile,
      events,
      tiers: Object.keys(config.tiers),
      steps: steps.map(({ id, command, standIn, seconds, notes }) => ({ id, command, standIn, seconds, notes })),
      firstUploads,
      unreachable,
      lacking,
      scaling: scalingTable(assembly.template),
      assembly,
      resolver: world.resolver,
      queueArnOfUrl: world.queueArnOfUrl,
      tableArnOf: world.tableArnOf,
      functions: lambdas.map((f) => ({ logicalId: f.logicalId, coldStart: 'ok' as const })),
      tasks,
      container: { taskDefinition: tasks[0]?.taskDefinition, exitCode: tasks[0]?.exitCode ?? null, output: tasks[0]?.output ?? '' },
      objects,
      indexed,
      searchedWithStack,
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
    await cfn.close();
    await world.stop();
  }
}

/**
 * Each key's metadata (undefined where the HEAD fails), a few requests at a time. Not all at once: a
 * burst of connection resets on a busy machine (the server closing keep-alive sockets while the event
 * loop stalls) costs the SDK's retry quota 14 of its 500 tokens each, so with 40 HEADs in flight the
 * quota runs dry and the rest fail unretried (`ECONNRESET`, attempts: 1), as CI saw. Deployed code
 * shares this limit: the SDK's standard retry strategy.
 */
export async function metadataOfAll(
  s3: World['s3'],
  bucket: string,
  keys: readonly string[],
  concurrency = 4,
): Promise<(Record<string, string> | undefined)[]> {
  const out: (Record<string, string> | undefined)[] = new Array(keys.length);
  let next = 0;
  const lane = async () => {
    for (let i = next++; i < keys.length; i = next++) out[i] = await resultOf(s3, bucket, keys[i]);
  };
  await Promise.all(Array.from({ length: Math.min(concurrency, keys.length) }, lane));
  return out;
}

/**
 * What EffiTag wrote on an object: its metadata, or for a `tags` tier its object tags (`effitag-model`
 * and `effitag-tags`, read as `effitag-status: tagged`); undefined when the object cannot be read.
 */
async function resultOf(s3: World['s3'], bucket: string, key: string): Promise<Record<string, string> | undefined> {
  const metadata = (await s3.send(new HeadObjectCommand({ Bucket: bucket, Key: key })).catch(() => undefined))?.Metadata;
  if (!metadata || metadata['effitag-status']) return metadata;
  const tags = await s3.send(new GetObjectTaggingCommand({ Bucket: bucket, Key: key })).catch(() => undefined);
  const ours = Object.fromEntries((tags?.TagSet ?? []).filter((t) => t.Key?.startsWith('effitag-')).map((t) => [t.Key!, t.Value!]));
  if (ours['effitag-model'] && !ours['effitag-status']) ours['effitag-status'] = 'tagged';
  return { ...metadata, ...ours };
}

const settled = (world: World, bucket: string, keys: string[]) => async () =>
  (await metadataOfAll(world.s3, bucket, keys)).every((m) => m?.['effitag-status']) || undefined;

/** What an operator sees: the object's metadata, or why there is none to see. */
async function stateOf(world: World, bucket: string, key: string): Promise<Record<string, string> | 'missing' | 'unreadable (SSE-C)'> {
  try {
    const metadata = (await world.s3.send(new HeadObjectCommand({ Bucket: bucket, Key: key }))).Metadata ?? {};
    return (await resultOf(world.s3, bucket, key)) ?? metadata;
  } catch (err) {
    const status = (err as { $metadata?: { httpStatusCode?: number } }).$metadata?.httpStatusCode;
    if (status === 404) return 'missing';
    if (status === 400) return 'unreadable (SSE-C)';
    throw err;
  }
}

/** The watched bucket and the intake queue, from the bucket's notification rules or the EventBridge rule. */
export function bucketAndIntake(assembly: Assembly): { bucketId: string; intakeId: string } {
  // (EventBridge mode keeps the custom resource too, to switch the bucket's EventBridge delivery on.)
  const notifications = assembly
    .ofType('Custom::S3BucketNotifications')
    .find(([, r]) => r.Properties!.NotificationConfiguration.QueueConfigurations?.length);
  if (notifications) {
    const p = notifications[1].Properties!;
    return { bucketId: p.BucketName.Ref, intakeId: p.NotificationConfiguration.QueueConfigurations[0].QueueArn['Fn::GetAtt'][0] };
  }
  const rule = assembly.ofType('AWS::Events::Rule').find(([, r]) => (r.Properties!.EventPattern?.source ?? []).includes('aws.s3'));
  if (!rule) throw new Error('the template delivers no S3 events (no bucket notifications, no EventBridge rule)');
  const p = rule[1].Properties!;
  return { bucketId: p.EventPattern.detail.bucket.name[0].Ref, intakeId: p.Targets[0].Arn['Fn::GetAtt'][0] };
}

const backfillFnOf = (lambdas: LambdaFunction[], assembly: Assembly) =>
  lambdas.find((f) => f.logicalId === stateMachineProcessor(assembly))!;

/** The tier a GPU task definition serves (its EFFITAG_TIER). */
export function taskTier(assembly: Assembly, taskDefinitionId: string): string {
  const env = assembly.template.Resources[taskDefinitionId].Properties!.ContainerDefinitions[0].Environment as {
    Name: string;
    Value: unknown;
  }[];
  return String(env.find((e) => e.Name === 'EFFITAG_TIER')?.Value ?? taskDefinitionId);
}

/**
 * A function built for another architecture than this machine's (arm64 tiers on an x86 host) runs
 * with the same layer built for this machine: the layer's package.json is the same, only the native
 * binaries differ, and those cannot run here.
 */
async function nativeLayerFor(assembly: Assembly, logicalId: string): Promise<StartLambdaOptions> {
  const props = assembly.template.Resources[logicalId].Properties!;
  const arch = (props.Architectures as string[] | undefined)?.[0] ?? 'x86_64';
  const here = process.arch === 'arm64' ? 'arm64' : 'x86_64';
  if (arch === here || !(props.Layers ?? []).length) return {};
  const source = join(REPO_ROOT, 'layers', 'cpu-runtime');
  const hash = createHash('sha256')
    .update(readFileSync(join(source, 'package.json')))
    .update(readFileSync(join(REPO_ROOT, 'layers', 'build.mjs')))
    .update(here)
    .digest('hex');
  const dir = await cached(`layer-asset.${hash}`, (tmp) =>
    promisify(execFile)(process.execPath, [join(REPO_ROOT, 'layers', 'build.mjs'), here, tmp], { cwd: REPO_ROOT }).then(() => {}),
  );
  return { layerDirs: [dir] };
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
  lines.push(
    `Deploy rehearsal of ${report.tiersFile}, events from ${report.events === 's3' ? 'S3 notifications' : 'EventBridge'} (${report.seconds.toFixed(0)} s): tiers ${report.tiers.join(', ')}; the README's deploy steps in its order`,
  );
  lines.push('');
  for (const [i, s] of report.steps.entries()) {
    lines.push(`${i + 1}. ${s.id} (${s.seconds.toFixed(0)} s): ${s.command}`);
    lines.push(`   stand-in: ${s.standIn}`);
    for (const n of s.notes) lines.push(`   - ${n}`);
  }
  lines.push('');
  lines.push('First upload per tier (before any weights → after publishing):');
  for (const u of report.firstUploads) {
    lines.push(
      `  ${u.tier.padEnd(10)} ${u.model.padEnd(8)} "${u.key}": ${u.statusBeforeWeights ?? 'waiting (WARN logged, not enqueued)'} → ${u.after?.['effitag-status'] ? `${u.after['effitag-status']} ${u.after['effitag-model'] ?? ''}` : `still waiting (${u.model} not published in this run)`}`,
    );
  }
  for (const u of report.unreachable) lines.push(`  ${u.tier.padEnd(10)} not exercised: ${u.why}`);
  if (report.lacking.length) lines.push(`Not published in this run (their uploads keep waiting): ${report.lacking.join(', ')}`);
  if (report.searchedWithStack)
    lines.push(
      `effitag --stack ${STACK_NAME} search (its outputs from CloudFormation, no other stack flag): ${report.searchedWithStack.length} object(s)${report.searchedWithStack.join() === report.indexed.join() ? ', as in the index' : `; the index holds ${report.indexed.length}`}`,
    );
  lines.push('');
  lines.push('GPU scaling, as Application Auto Scaling applies the synthesized alarms and step policies:');
  lines.push(formatScalingTable(report.scaling).trimEnd());
  lines.push('');
  for (const f of report.functions) lines.push(`  Lambda ${f.logicalId}: cold start ok (asset + its layers only)`);
  for (const t of report.tasks)
    lines.push(
      `  ECS task ${t.taskDefinition} (${t.tier}): ${t.runningBeforeWeights ? 'kept running with no weights' : 'EXITED with no weights'}; exit code ${t.exitCode} after SIGTERM`,
    );
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

/** What `npm run rehearse` fails on: a denied call, a task that exited, a first upload not as expected, a DLQ message, a scaling problem. */
export function rehearsalProblems(report: RehearsalReport): string[] {
  const problems = report.denied.map((v) => `denied: ${v.role} ${v.action} ${v.resource}`);
  for (const t of report.tasks) {
    if (!t.runningBeforeWeights) problems.push(`${t.tier}: the task exited with no weights published`);
    if (t.exitCode !== 0) problems.push(`${t.tier}: exit code ${t.exitCode} after SIGTERM`);
  }
  for (const u of report.firstUploads) {
    if (u.statusBeforeWeights !== undefined) problems.push(`${u.key}: ${u.statusBeforeWeights} before its weights existed`);
    const tagged = u.after?.['effitag-status'] === 'tagged';
    if (CHEAP_MODELS.includes(u.model) !== tagged) problems.push(`${u.key}: ${u.after?.['effitag-status'] ?? 'untagged'} after publishing`);
  }
  for (const [q, n] of Object.entries(report.deadLetters)) if (n) problems.push(`${q}: ${n} message(s)`);
  if (report.searchedWithStack && report.searchedWithStack.join() !== report.indexed.join())
    problems.push(
      `effitag --stack ${STACK_NAME} search listed ${report.searchedWithStack.join(', ')}, the index holds ${report.indexed.join(', ')}`,
    );
  for (const t of report.scaling) problems.push(...t.problems.map((p) => `scaling ${t.tier}: ${p}`));
  // Issue 23: with a vector index, a worker stores each tagged upload's embedding, and the router
  // deletes the embedding of the upload deleted in the upload step (its ObjectRemoved event).
  if (report.assembly.ofType('AWS::S3Vectors::Index').length) {
    // Workers delete vectors too (a re-tag in another model's space), so the router's are checked by name.
    const isRouter = (p: PrincipalReport) => p.runs.startsWith('Lambda IngestRouter');
    const made = (action: string, by: (p: PrincipalReport) => boolean) =>
      report.principals.some((p) => by(p) && p.verdicts.some((v) => v.action === action));
    if (!made('s3vectors:PutVectors', (p) => !isRouter(p))) problems.push('no worker stored an embedding (s3vectors:PutVectors)');
    if (SCENARIO.deleted in report.objects && !made('s3vectors:DeleteVectors', isRouter))
      problems.push(`the router deleted no embedding (s3vectors:DeleteVectors) for "${SCENARIO.deleted}"`);
  }
  return problems;
}

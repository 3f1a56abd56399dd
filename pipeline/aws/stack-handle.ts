/**
 * Which stack, once: a `StackHandle` names everything a command or runtime talks to — the bucket it
 * tags, its tiers and weights, the intake and tier queues with their dead-letter queues, the tag
 * index, the backfill state machine, and where and how to reach them (endpoints, credentials,
 * region, profile). Three resolvers make one:
 * - `handleFromEnvironment`: a deployed runtime (Lambda, ECS task), from the CDK stack's environment
 *   variables (pipeline/runtime-config.ts, the runtime contract);
 * - `resolveDeployedStack`: a deployed stack by its CloudFormation name, from its outputs
 *   (DescribeStacks): what `effitag --stack NAME …` does, so no output is copied by hand;
 * - `resolveEmbeddedStack`: a running embedded stack (`npm start`), from the handle file it writes in
 *   its data directory at start (owner-only, like its credentials): its ports, queues and key pair,
 *   so later commands need no port flag whatever ports it was started on.
 * `openStack` turns a handle into SDK clients and the pipeline's ports, and closes them.
 */
import { CloudFormationClient, DescribeStacksCommand } from '@aws-sdk/client-cloudformation';
import type { DynamoDBClient } from '@aws-sdk/client-dynamodb';
import type { S3Client } from '@aws-sdk/client-s3';
import type { SQSClient } from '@aws-sdk/client-sqs';
import type { S3VectorsClient } from '@aws-sdk/client-s3vectors';
import { randomBytes } from 'node:crypto';
import { chmodSync, existsSync, readFileSync, renameSync, statSync, unlinkSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { z } from 'zod';
import { loadTiers } from '../../tiers/load.ts';
import { parseTiers, type TiersFile } from '../../tiers/schema.ts';
import type { Logger } from '../log.ts';
import { directoryCatalog, isPublished, type Markers, weightsFix } from '../models.ts';
import { runtimeConfig, type RuntimeConfig } from '../runtime-config.ts';
import { dynamoClient, type Endpoints, s3Client, sqsClient } from './clients.ts';
import type { VectorIndex } from '../ports.ts';
import { DynamoTagIndex } from './dynamo-index.ts';
import { defaultDataDir, type EmbeddedCredentials } from './local-credentials.ts';
import { s3Markers } from './markers.ts';
import { S3VectorIndex, s3VectorsClient } from './s3-vectors.ts';
import { S3Store } from './s3-store.ts';
import { SqsQueue } from './sqs-queue.ts';

/** The name `--stack` takes (and EFFITAG_STACK holds) for the embedded stack; any other name is a CloudFormation stack's. */
export const EMBEDDED_STACK = 'embedded';

/**
 * Silence after which a command gives up on the embedded stack (clients.ts `embeddedSilenceMs`): it
 * answers on loopback in milliseconds, so 12 s, twice, is a frozen stack, told in well under 30 s.
 */
export const EMBEDDED_SILENCE_MS = 12_000;

/** A queue of the stack and its dead-letter queue (SQS URLs). */
export interface QueueHandle {
  url: string;
  /** Its DLQ; absent where only the queue's redrive policy knows it (a deployed stack: read when asked). */
  deadLetterUrl?: string;
}

/** Where a stack's services answer; all absent for AWS (the SDK's own endpoints, or AWS_ENDPOINT_URL_*). */
export interface StackEndpoints {
  s3?: string;
  sqs?: string;
  dynamodb?: string;
  /** S3 Vectors (issue 23: the embedded stand-in's endpoint; absent on AWS). */
  s3vectors?: string;
}

export interface StackHandle {
  /** 'embedded' for the embedded stack; else the CloudFormation stack's name ('runtime' inside a deployed runtime). */
  name: string;
  kind: 'embedded' | 'deployed' | 'runtime';
  region?: string;
  /** AWS CLI profile for credentials (and region); deployed stacks only. */
  profile?: string;
  /** The bucket(s) whose uploads the stack tags (none known inside a runtime: its events name them). */
  buckets: string[];
  /** The tiers the stack runs: a file, or the tiers JSON itself (a deployed runtime's EFFITAG_TIERS). Absent: not known. */
  tiers?: { file: string } | { json: unknown };
  /** Weights: a catalog directory (embedded) or s3://bucket/prefix (deployed). */
  weightsLocation: string;
  intake?: QueueHandle;
  /** Tier name → its task queue. */
  tierQueues: Record<string, QueueHandle>;
  /** The tag index's DynamoDB table; absent when the stack has none. */
  indexTable?: string;
  /** The Step Functions backfill (deployed stacks). */
  backfillStateMachine?: string;
  endpoints: StackEndpoints;
  /** The embedded stack's own key pair; absent for AWS (the SDK's credential chain, or the profile). */
  credentials?: EmbeddedCredentials;
  /** S3 Vectors bucket of the similar-images index (issue 23), when the stack has one. */
  vectorBucket?: string;
  /** The embedded stack's data directory (where its handle and credentials are kept). */
  dataDir?: string;
}

// ------------------------------------------------------------------ resolver 1: a runtime's environment

/** A deployed runtime's stack, from the environment the CDK stack gives it (the runtime contract). */
export function handleFromEnvironment(env: NodeJS.ProcessEnv = process.env, config: RuntimeConfig = runtimeConfig(env)): StackHandle {
  return {
    name: 'runtime',
    kind: 'runtime',
    region: env.AWS_REGION || undefined,
    buckets: [],
    tiers: { json: config.tiers.input },
    weightsLocation: config.weightsLocation,
    tierQueues: Object.fromEntries(Object.entries(config.queueUrls).map(([tier, url]) => [tier, { url }])),
    indexTable: config.indexTable,
    vectorBucket: config.vectorBucket,
    endpoints: {},
  };
}

// ------------------------------------------------------------------ resolver 2: a deployed stack's name

/** Where the AWS SDK would go, as the AWS CLI takes them: `--region`/`--profile`, else AWS_REGION/AWS_PROFILE. */
export interface AwsSelection {
  region?: string;
  profile?: string;
}

/** The stack outputs a handle is made of (cdk/effitag-stack.ts writes them). */
const Outputs = z.object({
  BucketName: z.string().min(1),
  WeightsLocation: z.string().startsWith('s3://'),
  QueueUrls: z.string(),
  IntakeQueueUrl: z.string().optional(),
  IndexTable: z.string().optional(),
  BackfillStateMachine: z.string().optional(),
  /** Issue 23: the similar-images index's S3 Vectors bucket. */
  VectorBucket: z.string().optional(),
  /** The tiers file the stack was deployed with (JSON). */
  Tiers: z.string().optional(),
});

/** A deployed stack's handle from its CloudFormation outputs; a clear error naming what is missing. */
export function handleFromOutputs(name: string, outputs: Record<string, string>, aws: AwsSelection = {}): StackHandle {
  const parsed = Outputs.safeParse(outputs);
  if (!parsed.success) {
    const missing = parsed.error.issues.map((i) => i.path.join('.')).join(', ');
    throw new Error(`stack ${name}: its outputs lack or garble ${missing}; is it an EffiTag stack (deployed with cdk deploy)?`);
  }
  const o = parsed.data;
  let queueUrls: Record<string, string>;
  try {
    queueUrls = z.record(z.string(), z.string()).parse(JSON.parse(o.QueueUrls));
  } catch {
    throw new Error(`stack ${name}: its output QueueUrls is not a JSON object of tier → queue URL`);
  }
  let tiers: StackHandle['tiers'];
  try {
    tiers = o.Tiers ? { json: JSON.parse(o.Tiers) } : undefined;
  } catch {
    throw new Error(`stack ${name}: its output Tiers is not JSON`);
  }
  return {
    name,
    kind: 'deployed',
    region: aws.region,
    profile: aws.profile,
    buckets: [o.BucketName],
    ...(tiers ? { tiers } : {}),
    weightsLocation: o.WeightsLocation,
    ...(o.IntakeQueueUrl ? { intake: { url: o.IntakeQueueUrl } } : {}),
    tierQueues: Object.fromEntries(Object.entries(queueUrls).map(([tier, url]) => [tier, { url }])),
    indexTable: o.IndexTable || undefined,
    backfillStateMachine: o.BackfillStateMachine || undefined,
    vectorBucket: o.VectorBucket || undefined,
    endpoints: {},
  };
}

/**
 * A stack's outputs by name (CloudFormation DescribeStacks), or undefined when there is no such
 * stack: the one place stack outputs are read (preflight's port uses it too).
 */
export async function describeStackOutputs(name: string, aws: AwsSelection = {}): Promise<Record<string, string> | undefined> {
  const cfn = new CloudFormationClient({
    ...(aws.region ? { region: aws.region } : {}),
    ...(aws.profile ? { profile: aws.profile } : {}),
    maxAttempts: 4,
  });
  try {
    const out = await cfn.send(new DescribeStacksCommand({ StackName: name }));
    const stack = out.Stacks?.[0];
    if (!stack) return undefined;
    return Object.fromEntries((stack.Outputs ?? []).map((o) => [o.OutputKey ?? '', o.OutputValue ?? '']));
  } catch (err) {
    // CloudFormation answers a missing stack with a ValidationError "Stack with id NAME does not exist".
    if ((err as Error).name === 'ValidationError' && /does not exist/.test((err as Error).message)) return undefined;
    throw err;
  } finally {
    cfn.destroy();
  }
}

/** A deployed stack by its CloudFormation name. `outputsOf` is replaceable (tests). */
export async function resolveDeployedStack(
  name: string,
  aws: AwsSelection = {},
  outputsOf: (name: string, aws: AwsSelection) => Promise<Record<string, string> | undefined> = describeStackOutputs,
): Promise<StackHandle> {
  const outputs = await outputsOf(name, aws);
  if (!outputs)
    throw new Error(
      `no stack ${name}${aws.region ? ` in ${aws.region}` : ''}: deploy it (npx cdk deploy), or check --stack, --region and --profile`,
    );
  return handleFromOutputs(name, outputs, aws);
}

// ------------------------------------------------------------------ resolver 3: a running embedded stack

/** Dotted like the credentials file: not a bucket name, so no S3 request can address it. */
const HANDLE_FILE = '.effitag-stack.json';

/** Where the embedded stack keeping its objects in `dataDir` writes its handle. */
export const stackFile = (dataDir: string): string => join(resolve(dataDir), HANDLE_FILE);

const QueueSchema = z.object({ url: z.string(), deadLetterUrl: z.string().optional() });
const HandleFile = z.object({
  /** The process running the stack: a handle whose process is gone is stale. */
  pid: z.number().int().positive(),
  startedAt: z.string(),
  handle: z.object({
    name: z.literal(EMBEDDED_STACK),
    kind: z.literal('embedded'),
    region: z.string().optional(),
    buckets: z.array(z.string()),
    tiers: z.union([z.object({ file: z.string() }), z.object({ json: z.unknown() })]).optional(),
    weightsLocation: z.string(),
    intake: QueueSchema.optional(),
    tierQueues: z.record(z.string(), QueueSchema),
    indexTable: z.string().optional(),
    endpoints: z.object({
      s3: z.string().optional(),
      sqs: z.string().optional(),
      dynamodb: z.string().optional(),
      s3vectors: z.string().optional(),
    }),
    credentials: z.object({ accessKeyId: z.string(), secretAccessKey: z.string() }),
    vectorBucket: z.string().optional(),
    dataDir: z.string().optional(),
  }),
});

export class StackNotRunningError extends Error {
  override name = 'StackNotRunningError';
}

/**
 * A command's bucket checked against the embedded stack's: that stack tags only the bucket(s) its
 * handle names, so a search or look-up elsewhere would answer "nothing found" for a mistyped name.
 * Deployed stacks are not checked (their role may read other buckets, which the SDK's error names).
 */
export function requireStackBucket(handle: StackHandle, bucket: string): void {
  if (handle.kind !== 'embedded' || handle.buckets.length === 0 || handle.buckets.includes(bucket)) return;
  throw new Error(
    `the embedded stack does not tag s3://${bucket}: it tags ${handle.buckets.map((b) => `s3://${b}`).join(', ')} (npm start -- --bucket NAME runs one for another)`,
  );
}

/**
 * Written by the embedded stack once it is up: temporary file (0600) renamed into place, so a reader
 * never sees half of it and nobody but the owner reads the key pair in it. `pid` defaults to this process.
 */
export function writeStackFile(dataDir: string, handle: StackHandle, pid = process.pid): string {
  const file = stackFile(dataDir);
  const temp = `${file}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`;
  const body = { pid, startedAt: new Date().toISOString(), handle: { ...handle, dataDir: resolve(dataDir) } };
  writeFileSync(temp, `${JSON.stringify(body, null, 2)}\n`, { mode: 0o600, flag: 'wx' });
  renameSync(temp, file);
  return file;
}

/** Removes the handle file at stop, if it is still this process's (a later start may have replaced it). */
export function removeStackFile(dataDir: string, pid = process.pid): void {
  try {
    const { pid: owner } = JSON.parse(readFileSync(stackFile(dataDir), 'utf8')) as { pid?: number };
    if (owner === pid) unlinkSync(stackFile(dataDir));
  } catch {} // gone already, or not ours to remove
}

const alive = (pid: number): boolean => {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM'; // exists, another user's
  }
};

/**
 * Before a start: another process's stack running on `dataDir` is refused in one line. Two stacks on
 * one folder would share its objects, journal and index (dynalite's second open crashed the second
 * with a stack trace), and the second's handle would hide the first's. A handle that is stale,
 * garbled or this process's own (a test's restart) is no obstacle: the start replaces it.
 */
export function refuseSecondStack(dataDir: string): void {
  let running: z.infer<typeof HandleFile>;
  try {
    running = HandleFile.parse(JSON.parse(readFileSync(stackFile(dataDir), 'utf8')));
  } catch {
    return;
  }
  if (running.pid === process.pid || !alive(running.pid)) return;
  throw new Error(
    `an embedded stack is already running for ${resolve(dataDir)} (process ${running.pid}, S3 at ${running.handle.endpoints.s3 ?? '?'}): use that one, stop it first, or start this one with another --data`,
  );
}

/**
 * The data directory a command looks for the embedded stack in: EFFITAG_DATA_DIR, else the nearest
 * `.effitag/data` holding a handle, from the working directory up, as git finds its repository.
 * `npm start` runs at the project's root whatever folder it is typed in, so without this a command
 * typed in a subfolder (`cd photos && npx effitag tag .`) said no stack was running. None found:
 * `.effitag/data` here, which the "not running" line names.
 */
export function embeddedDataDir(env: NodeJS.ProcessEnv = process.env, cwd: string = process.cwd()): string {
  if (env.EFFITAG_DATA_DIR !== undefined) return defaultDataDir(env);
  for (let dir = resolve(cwd); ; dir = dirname(dir)) {
    const candidate = join(dir, '.effitag', 'data');
    if (existsSync(stackFile(candidate))) return candidate;
    if (dirname(dir) === dir) return resolve(cwd, '.effitag', 'data');
  }
}

/** The running embedded stack of `dataDir` (EFFITAG_DATA_DIR, else .effitag/data); one clear line when there is none. */
export function resolveEmbeddedStack(dataDir: string = defaultDataDir()): StackHandle {
  const file = stackFile(dataDir);
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT')
      throw new StackNotRunningError(
        `no embedded stack is running for ${resolve(dataDir)} (no ${HANDLE_FILE} there): start it (npm start), set EFFITAG_DATA_DIR to its --data directory, or name a deployed stack with --stack NAME`,
      );
    throw new StackNotRunningError(`cannot read the embedded stack's handle ${file}: ${(err as Error).message}`);
  }
  let parsed: z.infer<typeof HandleFile>;
  try {
    parsed = HandleFile.parse(JSON.parse(text));
  } catch {
    throw new StackNotRunningError(`${file} is not an embedded-stack handle; delete it and start the stack again (npm start)`);
  }
  if (!alive(parsed.pid))
    throw new StackNotRunningError(
      `the embedded stack for ${resolve(dataDir)} is not running (its handle names process ${parsed.pid}, started ${parsed.startedAt}, which has exited): start it again (npm start)`,
    );
  // A handle others could read would hand out the key pair: tighten it, as the credentials file is.
  if ((statSync(file).mode & 0o077) !== 0) chmodSync(file, 0o600);
  return parsed.handle;
}

// ------------------------------------------------------------------ the CLI's choice

/** `--stack NAME` (env EFFITAG_STACK; default the embedded stack), with `--region`/`--profile` (AWS_REGION/AWS_PROFILE). */
export interface StackSelection extends AwsSelection {
  stack?: string;
  /**
   * The command runs inside a deployed task (the GPU image's `train.mjs`): with no stack named, its
   * stack is the one its environment describes (the runtime contract), not the embedded one, so the
   * task needs no CloudFormation read and no stack name.
   */
  inTask?: boolean;
}

/** The stack the CLI was pointed at: the embedded stack unless a deployed stack is named. */
export async function resolveStackHandle(sel: StackSelection = {}, env: NodeJS.ProcessEnv = process.env): Promise<StackHandle> {
  if (!sel.stack && !env.EFFITAG_STACK && sel.inTask) return handleFromEnvironment(env);
  const name = sel.stack || env.EFFITAG_STACK || EMBEDDED_STACK;
  if (name === EMBEDDED_STACK) return resolveEmbeddedStack(embeddedDataDir(env));
  return resolveDeployedStack(name, {
    region: sel.region || env.AWS_REGION || env.AWS_DEFAULT_REGION || undefined,
    profile: sel.profile || env.AWS_PROFILE || undefined,
  });
}

/**
 * The stack's tiers: `explicit` (a command's --tiers) first, else the handle's (the embedded stack's
 * own, a deployed stack's output Tiers, a runtime's EFFITAG_TIERS); a stack deployed before that
 * output existed says so.
 */
export function stackTiers(handle: StackHandle, explicit?: string): { path: string; config: TiersFile } {
  if (explicit) return loadTiers(explicit);
  if (handle.tiers && 'file' in handle.tiers) return loadTiers(handle.tiers.file);
  if (handle.tiers) return { path: `the tiers of stack ${handle.name}`, config: parseTiers(handle.tiers.json) };
  if (process.env.EFFITAG_TIERS_FILE) return loadTiers(process.env.EFFITAG_TIERS_FILE);
  throw new Error(`stack ${handle.name}: which tiers file was it deployed with? pass --tiers FILE (or set EFFITAG_TIERS_FILE)`);
}

// ------------------------------------------------------------------ open

/**
 * The current markers of the models the tiers can choose, from published manifests (`s3://…`,
 * learned lazily: a model not yet published is re-checked after a minute) or a local catalog
 * directory (read on every miss). A missing model is no error here: its objects wait (the router's
 * `waiting-for-weights` drop); the start-up log names what is missing.
 */
export async function currentMarkers(
  conn: { s3: S3Client },
  tiers: TiersFile,
  weights: string,
  log?: Logger,
  options: { recheckMs?: number } = {},
): Promise<Markers> {
  const markers: Markers = weights.startsWith('s3://')
    ? s3Markers(conn.s3, weights, { ttlMs: options.recheckMs })
    : directoryCatalog(weights);
  const missing: string[] = [];
  for (const m of tiers.models) if (!(await isPublished(markers, m))) missing.push(m);
  if (missing.length)
    log?.log('warn', 'weights not published yet: objects of these models wait', {
      models: missing,
      location: weights,
      fix: weightsFix(weights, missing[0]),
    });
  return markers;
}

/** The clients' form of a handle's endpoints and credentials. */
export function clientEndpoints(handle: StackHandle): Endpoints {
  return {
    ...(handle.region ? { region: handle.region } : {}),
    ...(handle.profile ? { profile: handle.profile } : {}),
    ...(handle.endpoints.s3 ? { s3Endpoint: handle.endpoints.s3 } : {}),
    ...(handle.endpoints.sqs ? { sqsEndpoint: handle.endpoints.sqs } : {}),
    ...(handle.endpoints.dynamodb ? { dynamoEndpoint: handle.endpoints.dynamodb } : {}),
    ...(handle.credentials ? { credentials: handle.credentials } : {}),
  };
}

/** A stack's queue by its name: `intake` or a tier's. */
export interface NamedQueue {
  name: string;
  queue: SqsQueue;
}

export interface OpenStack {
  handle: StackHandle;
  endpoints: Endpoints;
  s3: S3Client;
  sqs: SQSClient;
  dynamo: DynamoDBClient;
  store: S3Store;
  /** The intake queue, when the handle names one. */
  intake?: SqsQueue;
  /** Task queue of each tier. */
  queues: Record<string, SqsQueue>;
  /** Dead-letter queue of each source (`intake`, each tier) the handle knows one for. */
  deadLetters: Record<string, SqsQueue>;
  /** `intake` and each tier's queue, by name, sorted (dead letters and the gallery's status view). */
  sources: NamedQueue[];
  /** The tag index, when the stack has one. */
  index?: DynamoTagIndex;
  /** The tag index, or a clear error when the stack has none. */
  requireIndex(): DynamoTagIndex;
  /**
   * The image embeddings (issue 23), when the handle names a vector bucket: what a deployed worker
   * stores into and the router removes from, and what similar/dupes read. Only the embedded stack's
   * creates a model's index on its first put; a deployed stack's come with the deploy (its roles may
   * not create one), so a put for a model without an index fails with a clear error.
   */
  vectors?: VectorIndex;
  /** The models' current markers from the stack's weights location (wiring.ts `currentMarkers`). */
  markers(tiers: TiersFile, log?: Logger, options?: { recheckMs?: number }): Promise<Markers>;
  close(): void;
}

/**
 * The S3 Vectors client of a handle, reached as its other clients are: embedded, the stand-in with the
 * stack's key pair; deployed, the SDK's endpoint (or AWS_ENDPOINT_URL_S3VECTORS, as the rehearsal sets)
 * with the handle's region and --profile, else the SDK's credential chain.
 */
export function vectorsClientFor(handle: StackHandle): S3VectorsClient {
  return s3VectorsClient({
    region: handle.region,
    profile: handle.profile,
    endpoint: handle.endpoints.s3vectors,
    credentials: handle.credentials,
  });
}

/** SDK clients and the pipeline's ports for a stack; `close()` releases the clients. */
export function openStack(handle: StackHandle, options: { socketTimeoutMs?: number; embeddedSilenceMs?: number } = {}): OpenStack {
  const endpoints: Endpoints = { ...clientEndpoints(handle), ...options };
  const s3 = s3Client(endpoints);
  const sqs = sqsClient(endpoints);
  const dynamo = dynamoClient(endpoints);
  // The embedded stack's S3 is the s3rver stand-in (its quirks are harmless elsewhere).
  const store = new S3Store(s3, handle.kind === 'embedded' ? { quirks: 's3rver' } : {});
  const queues = Object.fromEntries(Object.entries(handle.tierQueues).map(([tier, q]) => [tier, new SqsQueue(sqs, q.url)]));
  const intake = handle.intake ? new SqsQueue(sqs, handle.intake.url) : undefined;
  const deadLetters: Record<string, SqsQueue> = {};
  for (const [name, q] of [...(handle.intake ? [['intake', handle.intake] as const] : []), ...Object.entries(handle.tierQueues)])
    if (q.deadLetterUrl) deadLetters[name] = new SqsQueue(sqs, q.deadLetterUrl);
  const sources: NamedQueue[] = [
    ...(intake ? [{ name: 'intake', queue: intake }] : []),
    ...Object.entries(queues).map(([name, queue]) => ({ name, queue })),
  ].sort((a, b) => a.name.localeCompare(b.name));
  const index = handle.indexTable ? new DynamoTagIndex(dynamo, handle.indexTable) : undefined;
  const vectorsClient = handle.vectorBucket ? vectorsClientFor(handle) : undefined;
  const vectors =
    vectorsClient && handle.vectorBucket
      ? new S3VectorIndex({ client: vectorsClient, vectorBucket: handle.vectorBucket, createIndexes: handle.kind === 'embedded' })
      : undefined;
  const open: OpenStack = {
    handle,
    endpoints,
    s3,
    sqs,
    dynamo,
    store,
    intake,
    queues,
    deadLetters,
    sources,
    index,
    ...(vectors ? { vectors } : {}),
    requireIndex() {
      if (!index) throw new Error(`stack ${handle.name} has no tag index (deployed with -c effitag:index=false?)`);
      return index;
    },
    markers: (tiers, log, o) => currentMarkers(open, tiers, handle.weightsLocation, log, o),
    close() {
      s3.destroy();
      sqs.destroy();
      dynamo.destroy();
      vectorsClient?.destroy();
    },
  };
  return open;
}

/**
 * Where am I, and what do I talk to? The one module that turns a place — the embedded stack on
 * loopback, AWS, or an explicit S3/SQS-compatible endpoint — into SDK clients, the pipeline's ports
 * (ObjectStore, MessageQueue), the queues of each tier, and the models' current markers. The CLI,
 * the embedded stack, the benchmarks, the Lambda handlers and the GPU container all wire here, so
 * a port, a credential, a queue name or a weights location is decided once.
 */
import { GetQueueUrlCommand, ListQueuesCommand, type SQSClient } from '@aws-sdk/client-sqs';
import type { S3Client } from '@aws-sdk/client-s3';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { cacheDir } from '../../model/cache-dir.ts';
import type { TiersFile } from '../../tiers/schema.ts';
import { MissingWeightsError, type Markers } from '../models.ts';
import type { Logger } from '../log.ts';
import { runtimeConfig, type RuntimeConfig } from '../runtime-config.ts';
import type { DynamoDBClient } from '@aws-sdk/client-dynamodb';
import { dynamoClient, s3Client, sqsClient, type Endpoints } from './clients.ts';
import { type LocalCredentials, readLocalCredentials } from './local-credentials.ts';
import { DynamoTagIndex } from './dynamo-index.ts';
import { S3Store } from './s3-store.ts';
import { SqsQueue } from './sqs-queue.ts';

/**
 * The embedded stack's credentials: a random pair per data directory, kept in it owner-only; the
 * stand-ins accept requests signed with nothing else (pipeline/aws/local-credentials.ts).
 */
export { defaultDataDir, ensureLocalCredentials, readLocalCredentials, type LocalCredentials } from './local-credentials.ts';

/**
 * The credentials of the embedded stack of EFFITAG_DATA_DIR (else .effitag/data), read from its data
 * directory each time they are used: what `effitag` commands sign with, and what tests get once their
 * stack is started (test/support/local-stack.ts points EFFITAG_DATA_DIR at it).
 */
export const LOCAL_CREDENTIALS: LocalCredentials = {
  // Not frozen: the SDK notes on a credentials object where it came from ($source).
  get accessKeyId() {
    return readLocalCredentials().accessKeyId;
  },
  get secretAccessKey() {
    return readLocalCredentials().secretAccessKey;
  },
};

/** The embedded stack's ports (overridden by EFFITAG_S3_PORT / EFFITAG_SQS_PORT / EFFITAG_DYNAMODB_PORT / EFFITAG_GALLERY_PORT). */
export const EMBEDDED_PORTS = { s3: 4568, sqs: 4566, dynamodb: 4569, gallery: 4570 } as const;

/** The embedded stack's tag index table (a deployed stack's name comes from CloudFormation: EFFITAG_INDEX_TABLE). */
export const INDEX_TABLE = 'effitag-index';

/** The embedded stack's tiers: B0 on the CPU engine. */
export const LOCAL_TIERS_FILE = fileURLToPath(new URL('../../tiers/local.json', import.meta.url));

/** Queue names the embedded stack creates (a deployed stack's names come from CloudFormation). */
export const QUEUE_NAMES = {
  intake: 'effitag-intake',
  intakeDeadLetters: 'effitag-intake-dlq',
  tier: (tier: string) => `effitag-${tier}.fifo`,
  tierDeadLetters: (tier: string) => `effitag-${tier}-dlq.fifo`,
} as const;

/** The weights catalog of the embedded stack and the CLI: the cache's `weights/` folder. */
export const defaultWeightsDir = (): string => join(cacheDir(), 'weights');

export type Place =
  /**
   * The embedded stack (`npm start`), at its default ports unless endpoints are given; signed with
   * the credentials in its data directory (default EFFITAG_DATA_DIR, else .effitag/data).
   */
  | { kind: 'embedded'; s3Endpoint?: string; sqsEndpoint?: string; dynamoEndpoint?: string; dataDir?: string }
  /** Real AWS: credentials and region from the environment. */
  | { kind: 'aws' }
  /** Any S3/SQS-compatible endpoint (tests, a proxy in front of the stand-ins). */
  | { kind: 'endpoint'; endpoints: Endpoints };

/** The embedded stack's endpoints from the environment's ports. */
export function embeddedEndpoints(env: NodeJS.ProcessEnv = process.env): {
  s3Endpoint: string;
  sqsEndpoint: string;
  dynamoEndpoint: string;
} {
  return {
    s3Endpoint: `http://127.0.0.1:${env.EFFITAG_S3_PORT ?? EMBEDDED_PORTS.s3}`,
    sqsEndpoint: `http://127.0.0.1:${env.EFFITAG_SQS_PORT ?? EMBEDDED_PORTS.sqs}`,
    dynamoEndpoint: `http://127.0.0.1:${env.EFFITAG_DYNAMODB_PORT ?? EMBEDDED_PORTS.dynamodb}`,
  };
}

/** What the CLI's `--aws`, `--endpoint` and `--sqs-endpoint` flags say. */
export function placeFromFlags(opts: { aws?: boolean; endpoint?: string; sqsEndpoint?: string; dynamoEndpoint?: string }): Place {
  return opts.aws
    ? { kind: 'aws' }
    : { kind: 'embedded', s3Endpoint: opts.endpoint, sqsEndpoint: opts.sqsEndpoint, dynamoEndpoint: opts.dynamoEndpoint };
}

export function endpointsOf(place: Place): Endpoints {
  if (place.kind === 'aws') return {};
  if (place.kind === 'endpoint') return place.endpoints;
  const defaults = embeddedEndpoints();
  return {
    s3Endpoint: place.s3Endpoint ?? defaults.s3Endpoint,
    sqsEndpoint: place.sqsEndpoint ?? defaults.sqsEndpoint,
    dynamoEndpoint: place.dynamoEndpoint ?? defaults.dynamoEndpoint,
    credentials: readLocalCredentials(place.dataDir),
  };
}

export interface Connection {
  place: Place;
  endpoints: Endpoints;
  s3: S3Client;
  sqs: SQSClient;
  dynamo: DynamoDBClient;
  store: S3Store;
  close(): void;
}

/** SDK clients and the object store for a place. */
export function connect(place: Place): Connection {
  const endpoints = endpointsOf(place);
  const s3 = s3Client(endpoints);
  const sqs = sqsClient(endpoints);
  const dynamo = dynamoClient(endpoints);
  // Anything but AWS is taken to be the s3rver stand-in (its quirks are harmless elsewhere).
  const store = new S3Store(s3, place.kind === 'aws' ? {} : { quirks: 's3rver' });
  return {
    place,
    endpoints,
    s3,
    sqs,
    dynamo,
    store,
    close: () => {
      s3.destroy();
      sqs.destroy();
      dynamo.destroy();
    },
  };
}

/**
 * The task queue of every tier: from the stack's queue URLs (AWS: required, the stack output
 * QueueUrls), else by the embedded stack's names.
 */
export async function tierQueues(
  conn: Connection,
  tiers: TiersFile,
  queueUrls?: Record<string, string>,
): Promise<Record<string, SqsQueue>> {
  const queues: Record<string, SqsQueue> = {};
  for (const tier of Object.keys(tiers.tiers)) {
    let url = queueUrls?.[tier];
    if (!url && conn.place.kind !== 'aws')
      url = (await conn.sqs.send(new GetQueueUrlCommand({ QueueName: QUEUE_NAMES.tier(tier) }))).QueueUrl;
    if (!url) throw new Error(`no queue URL for tier ${tier}: pass --queue-urls (the stack output QueueUrls)`);
    queues[tier] = new SqsQueue(conn.sqs, url);
  }
  return queues;
}

/**
 * The tag index of a place: the embedded stack's table, or on AWS the stack's (`table`: the stack
 * output IndexTable, or EFFITAG_INDEX_TABLE).
 */
export function tagIndex(conn: Connection, table = process.env.EFFITAG_INDEX_TABLE): DynamoTagIndex {
  const name = table ?? (conn.place.kind === 'aws' ? undefined : INDEX_TABLE);
  if (!name) throw new Error('which index? pass --table (the stack output IndexTable) or set EFFITAG_INDEX_TABLE');
  return new DynamoTagIndex(conn.dynamo, name);
}

/**
 * The pipeline's queues by name — `intake` and one per tier — each with its DLQ through its redrive
 * policy: the embedded stack's by their names, a deployed stack's from its outputs (QueueUrls,
 * IntakeQueueUrl; or EFFITAG_QUEUE_URLS, EFFITAG_INTAKE_URL).
 */
export async function pipelineQueues(
  conn: Connection,
  aws: { queueUrls?: string; intakeUrl?: string } = {},
): Promise<{ name: string; queue: SqsQueue }[]> {
  const found: { name: string; queue: SqsQueue }[] = [];
  if (conn.place.kind === 'aws') {
    const urls = aws.queueUrls ?? process.env.EFFITAG_QUEUE_URLS;
    if (!urls) throw new Error('--aws needs --queue-urls (the stack output QueueUrls, or EFFITAG_QUEUE_URLS)');
    for (const [tier, url] of Object.entries(JSON.parse(urls) as Record<string, string>))
      found.push({ name: tier, queue: new SqsQueue(conn.sqs, url) });
    const intake = aws.intakeUrl ?? process.env.EFFITAG_INTAKE_URL;
    if (intake) found.push({ name: 'intake', queue: new SqsQueue(conn.sqs, intake) });
  } else {
    const { QueueUrls = [] } = await conn.sqs.send(new ListQueuesCommand({ QueueNamePrefix: 'effitag-' }));
    for (const url of QueueUrls) {
      const name = url.split('/').pop()!;
      if (/-dlq(\.fifo)?$/.test(name)) continue;
      found.push({
        name: name === QUEUE_NAMES.intake ? 'intake' : name.replace(/^effitag-/, '').replace(/\.fifo$/, ''),
        queue: new SqsQueue(conn.sqs, url, name),
      });
    }
    // Says "does not exist" plainly when no embedded stack runs there.
    if (!found.length) await conn.sqs.send(new GetQueueUrlCommand({ QueueName: QUEUE_NAMES.intake }));
  }
  return found.sort((a, b) => a.name.localeCompare(b.name));
}

/** Which model is current for each variant: all the router and backfills need of the weights. */
export type { Markers };

/** The models' current markers from a weights location (pipeline/aws/stack-handle.ts). */
export { currentMarkers } from './stack-handle.ts';

/**
 * Which models the tiers can tag with lack weights. None at all: nothing could ever be tagged, an
 * error now (the embedded stack's first run fetches B0 on it). Some: logged, and their objects wait.
 */
export function checkWeights(tiers: TiersFile, models: Markers, log?: Logger): string[] {
  const missing: string[] = [];
  const lines: string[] = [];
  for (const [name, tier] of Object.entries(tiers.tiers)) {
    for (const m of tier.model ? [tier.model] : tier.variants) {
      try {
        models.marker(m);
      } catch (err) {
        if (!missing.includes(m)) missing.push(m);
        lines.push(`${name}: ${(err as Error).message}`);
      }
    }
  }
  if (missing.length && missing.length === tiers.models.length)
    throw new MissingWeightsError(`weights missing for the configured tiers:\n  ${lines.join('\n  ')}`);
  for (const line of lines)
    log?.log('warn', 'weights missing: objects of this model wait until they are in place', {
      detail: line,
      location: models.location,
    });
  return missing;
}

/** What every deployed entry point (Lambda handlers, GPU container) wires from its environment. */
export interface Deployed extends Connection {
  config: RuntimeConfig;
  /** Task queue of each tier. */
  queues: Record<string, SqsQueue>;
  /** The stack's tag index, when it has one. */
  index?: DynamoTagIndex;
}

export function deployed<C extends RuntimeConfig>(
  env: NodeJS.ProcessEnv = process.env,
  config: C = runtimeConfig(env) as C,
): Deployed & { config: C } {
  const conn = connect({ kind: 'aws' });
  const queues = Object.fromEntries(Object.entries(config.queueUrls).map(([tier, url]) => [tier, new SqsQueue(conn.sqs, url)]));
  const index = config.indexTable ? new DynamoTagIndex(conn.dynamo, config.indexTable) : undefined;
  return { ...conn, config, queues, index };
}

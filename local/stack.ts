/**
 * The embedded default: everything EffiTag runs on AWS, on one machine over loopback.
 * - S3: s3rver with If-Match and AWS-style notifications (local/s3-server.ts), data on disk;
 * - DynamoDB: dynalite, the tag index (pipeline/tag-index.ts), on disk beside the data directory;
 * - SQS: fauxqs — an intake queue (as S3 notifications feed in AWS) and, per tier, a FIFO task
 *   queue with its dead-letter queue (redrive after `maxReceiveCount` receives);
 * - the router, polling the intake queue as its Lambda event source would;
 * - a worker per tier on that tier's engine, the same code the Lambda and GPU tasks run.
 */
import { messageOf } from '../base/errors.ts';
import { CreateBucketCommand, type S3Client } from '@aws-sdk/client-s3';
import type { SQSClient } from '@aws-sdk/client-sqs';
import { mkdir } from 'node:fs/promises';
import { dirname, resolve } from 'node:path';
import type { Engine, EngineName } from '../inference/engine.ts';
import { engineChooser } from '../inference/engines.ts';
import { sqsClient, type Endpoints } from '../pipeline/aws/clients.ts';
import { type DynamoTagIndex, ensureIndexTable } from '../pipeline/aws/dynamo-index.ts';
import { checkWeights, ensureEmbeddedCredentials, INDEX_TABLE, type EmbeddedCredentials, QUEUE_NAMES } from '../pipeline/aws/wiring.ts';
import { credentialsFile } from '../pipeline/aws/local-credentials.ts';
import {
  EMBEDDED_STACK,
  openStack,
  refuseSecondStack,
  removeStackFile,
  type StackHandle,
  writeStackFile,
} from '../pipeline/aws/stack-handle.ts';
import { SqsQueue } from '../pipeline/aws/sqs-queue.ts';
import { Counters, jsonLogger, type Logger } from '../pipeline/log.ts';
import { directoryCatalog, type ModelCatalog } from '../pipeline/models.ts';
import type { ObjectStore } from '../pipeline/ports.ts';
import { makeRouter, routeBatch, type Router } from '../pipeline/router.ts';
import { makeWorker, type Worker, type WorkerOptions } from '../pipeline/worker.ts';
import {
  catchUpOnce,
  settledState,
  uploadJournal,
  watchIdle,
  type CatchUpResult,
  type JournalEntry,
  type UploadJournal,
} from './catch-up.ts';

export type { CatchUpResult };
import type { TiersFile } from '../tiers/schema.ts';
import { startS3Server } from './s3-server.ts';
import { startDynamoServer } from './dynamo-server.ts';
import { startSqsServer } from './sqs-server.ts';
import { EMBEDDED_VECTOR_BUCKET, startS3VectorsServer } from './s3vectors-server.ts';
import { S3VectorIndex, s3VectorsClient } from '../pipeline/aws/s3-vectors.ts';
import type { VectorIndex } from '../pipeline/ports.ts';

export { EMBEDDED_CREDENTIALS } from '../pipeline/aws/wiring.ts';

export interface EmbeddedStackOptions {
  dataDir: string;
  tiers: TiersFile;
  /** Weights catalog: `DIR/<variant>/manifest.json` (or one artifact). */
  weightsDir: string;
  /** Runs every tier (the CLI's --engine, tests' counting engines); default: each tier's own `engine`. */
  engine?: Engine;
  /**
   * Address the servers listen on. Default 127.0.0.1. They answer only requests signed with the
   * stack's credentials (made at the first start, kept in the data directory), from a loopback or
   * IP-literal Host, with no Origin but `trustedOrigins`.
   */
  host?: string;
  /** Pages that may call the stand-ins from a browser (the gallery's origin); any other Origin is refused. */
  trustedOrigins?: readonly string[];
  s3Port?: number;
  sqsPort?: number;
  dynamoPort?: number;
  /** The S3 Vectors stand-in's port (similar images, issue 23); default any free one. */
  s3vectorsPort?: number;
  /** Where the index keeps its tables; default `<dataDir>.index` (s3rver would take a folder inside dataDir for a bucket). */
  indexDir?: string;
  bucket?: string;
  /** Receives before a task goes to its DLQ. */
  maxReceiveCount?: number;
  visibilitySeconds?: number;
  worker?: WorkerOptions;
  log?: Logger;
  /** Run the router on the intake queue (default true); backfill tests place fixtures without it. */
  runRouter?: boolean;
  /** Which tiers get a worker here (default all); tests run their own for the others. */
  runWorkers?: (tier: string) => boolean;
  /** Wrap the store the pipeline uses (tests inject faults this way). */
  wrapStore?: (store: ObjectStore) => ObjectStore;
  /**
   * Put something between the pipeline and the stand-ins: given each server's endpoint, return the
   * one the router and workers use (tests put a fault-injecting proxy there). S3's notifications to
   * the intake queue stay direct, as on AWS they are S3's own.
   */
  interpose?: { s3?: (endpoint: string) => Promise<string>; sqs?: (endpoint: string) => Promise<string> };
  /**
   * Where the stack records when it was last idle, and its journal of uploads since
   * (local/catch-up.ts). Default: beside the data directory, `<dataDir>.state.json` and
   * `<dataDir>.journal/` (a folder of segments).
   */
  statePath?: string;
  /** Catch up at start on the uploads accepted since the stack was last idle (default true). */
  catchUp?: boolean;
  /** How often the stack checks whether it is idle (default 2000 ms). */
  idleCheckMs?: number;
  /** A failed catch-up runs again after `firstMs`, doubling up to `maxMs` (default 1 s and 60 s). */
  catchUpRetry?: { firstMs?: number; maxMs?: number };
}

export interface EmbeddedStack {
  /** What `effitag` commands open: written to `handleFile` in the data directory at start, removed at stop. */
  handle: StackHandle;
  handleFile: string;
  endpoints: Endpoints;
  /** The key pair the stand-ins accept (also `endpoints.credentials`), and the file it is kept in. */
  credentials: EmbeddedCredentials;
  credentialsFile: string;
  bucket: string;
  s3: S3Client;
  sqs: SQSClient;
  store: ObjectStore;
  index: DynamoTagIndex;
  /** S3 Vectors stand-in (local/s3vectors-server.ts): its endpoint, port, vector bucket, and the VectorIndex on it. */
  s3vectors: { endpoint: string; port: number; vectorBucket: string; vectors: VectorIndex };
  intake: SqsQueue;
  tierQueues: Record<string, { queue: SqsQueue; dlq: SqsQueue }>;
  models: ModelCatalog;
  router: Router;
  workers: Record<string, Worker>;
  counters: Counters;
  /** Settles when the start-up catch-up is done (undefined if it was off or failed). */
  catchUp: Promise<CatchUpResult | undefined>;
  /** Resolves the next time the stack finds itself idle and records it. */
  settled(): Promise<Date>;
  /** The journal of uploads not yet settled (local/catch-up.ts); read-only use (its size). */
  journal: Pick<UploadJournal, 'stats'>;
  stop(): Promise<void>;
}

/**
 * Forwards S3 notifications to the intake queue, one message per event as S3 sends them, but with
 * the events of a burst (up to 10 within a few milliseconds) in one SendMessageBatch: the stand-ins
 * share the worker's cores, and every request they serve is CPU time the engine does not get.
 */
function coalescingSender(queue: SqsQueue, windowMs = 5) {
  interface Batch {
    bodies: { body: string }[];
    sent: Promise<void>;
    send(): void;
  }
  let open: Batch | undefined;
  const inFlight = new Set<Promise<void>>();
  function start(): Batch {
    const bodies: { body: string }[] = [];
    let release!: () => void;
    const sent = new Promise<void>((r) => {
      release = r;
    }).then(() => queue.send(bodies));
    const timer = setTimeout(close, windowMs);
    return {
      bodies,
      sent,
      send() {
        clearTimeout(timer);
        release();
      },
    };
  }
  function close(): void {
    if (!open) return;
    const b = open;
    open = undefined;
    b.send();
    inFlight.add(b.sent);
    b.sent.then(
      () => inFlight.delete(b.sent),
      () => inFlight.delete(b.sent),
    );
  }
  return {
    /** Settles when this body's batch is sent; the caller logs a failure. */
    add(body: string): Promise<void> {
      open ??= start();
      open.bodies.push({ body });
      const { sent } = open;
      if (open.bodies.length >= 10) close();
      return sent;
    },
    async flush(): Promise<void> {
      close();
      await Promise.allSettled([...inFlight]);
    },
    /** Bodies accepted but not yet sent. */
    pending(): number {
      return (open?.bodies.length ?? 0) + inFlight.size;
    },
  };
}

/** A proxy's endpoint in front of a stand-in, which then accepts the proxy's Host (what its clients sign). */
async function interposed(
  server: { trustProxyPort(port: number): void },
  endpoint: string,
  interpose: (endpoint: string) => Promise<string>,
): Promise<string> {
  const proxy = await interpose(endpoint);
  server.trustProxyPort(Number(new URL(proxy).port));
  return proxy;
}

/** The embedded stack's queues, as the CDK stack makes them: intake with its DLQ, a FIFO task queue and DLQ per tier. */
async function createQueues(
  server: Awaited<ReturnType<typeof startSqsServer>>,
  tiers: readonly string[],
  o: { visibility: number; maxReceiveCount: number },
): Promise<Pick<StackHandle, 'intake' | 'tierQueues'>> {
  const redrive = (arn: string) => JSON.stringify({ deadLetterTargetArn: arn, maxReceiveCount: String(o.maxReceiveCount) });
  const VisibilityTimeout = String(o.visibility);
  const intakeDlq = await server.createQueue(QUEUE_NAMES.intakeDeadLetters);
  const intakeQ = await server.createQueue(QUEUE_NAMES.intake, { VisibilityTimeout, RedrivePolicy: redrive(intakeDlq.arn) });
  const tierQueues: StackHandle['tierQueues'] = {};
  for (const tier of tiers) {
    const dlq = await server.createQueue(QUEUE_NAMES.tierDeadLetters(tier), { FifoQueue: 'true' });
    const q = await server.createQueue(QUEUE_NAMES.tier(tier), { FifoQueue: 'true', VisibilityTimeout, RedrivePolicy: redrive(dlq.arn) });
    tierQueues[tier] = { url: q.url, deadLetterUrl: dlq.url };
  }
  return { intake: { url: intakeQ.url, deadLetterUrl: intakeDlq.url }, tierQueues };
}

/**
 * The start-up catch-up (local/catch-up.ts), run again with backoff (`retry.firstMs` doubling up to
 * `maxMs`) while a pass fails (the stand-in answering errors, an object unreadable for now);
 * undefined once aborted.
 */
async function catchUpRetrying(
  deps: Parameters<typeof catchUpOnce>[0],
  retry: { firstMs: number; maxMs: number },
  o: { signal: AbortSignal; log: Logger; counters: Counters },
): Promise<CatchUpResult | undefined> {
  for (let attempt = 1, waitMs = retry.firstMs; ; attempt++, waitMs = Math.min(retry.maxMs, waitMs * 2)) {
    try {
      return await catchUpOnce(deps, o.signal);
    } catch (err) {
      if (o.signal.aborted) return undefined;
      o.counters.inc('catch-up.failed');
      o.log.log('error', 'catch-up failed; retrying', { error: messageOf(err), attempt, retryInMs: waitMs });
      await new Promise<void>((r) => {
        const timer = setTimeout(r, waitMs);
        o.signal.addEventListener(
          'abort',
          () => {
            clearTimeout(timer);
            r();
          },
          { once: true },
        );
      });
      if (o.signal.aborted) return undefined;
    }
  }
}

/**
 * Whether an object's task sits in one of the dead-letter queues `names` (read from the stand-in,
 * at most once a second): such an upload is settled, kept there with its reason.
 */
function deadLetteredLookup(
  server: Awaited<ReturnType<typeof startSqsServer>>,
  names: readonly string[],
): (o: { bucket: string; key: string; eTag?: string }) => boolean {
  let seen = { at: 0, ids: new Set<string>() };
  return (o) => {
    if (Date.now() - seen.at > 1000) {
      const ids = new Set<string>();
      for (const name of names)
        for (const body of server.peek(name)) {
          try {
            const t = JSON.parse(body) as { bucket?: string; key?: string; eTag?: string };
            ids.add(`${t.bucket}\0${t.key}\0${t.eTag}`);
          } catch {} // not a task (an S3 event in the intake DLQ): nothing to match
        }
      seen = { at: Date.now(), ids };
    }
    return seen.ids.has(`${o.bucket}\0${o.key}\0${o.eTag}`);
  };
}

/**
 * The router's event source, as the Lambda SQS event source runs it: poll the intake queue, route
 * the batch, delete what is done in one call, and retry the rest with backoff (the intake DLQ takes
 * them after maxReceiveCount receives).
 */
function pollIntake(intake: SqsQueue, router: Router, log: Logger): { stop(): Promise<void> } {
  let stopping = false;
  const abort = new AbortController();
  const loop = (async () => {
    while (!stopping) {
      const messages = await intake.receive({ max: 10, waitSeconds: 1, signal: abort.signal }).catch(() => []);
      if (!messages.length) continue;
      const retry = new Set(await routeBatch(router, messages, log));
      await intake
        .delete(messages.filter((m) => !retry.has(m.id)))
        .catch((err) => log.log('warn', 'intake delete failed', { error: messageOf(err) }));
      for (const m of messages.filter((x) => retry.has(x.id))) {
        await intake.setVisibility(m, Math.min(60, 2 ** m.receiveCount)).catch(() => {});
      }
    }
  })();
  return {
    async stop() {
      stopping = true;
      abort.abort();
      await loop;
    },
  };
}

export async function startEmbeddedStack(options: EmbeddedStackOptions): Promise<EmbeddedStack> {
  // Before anything listens or opens the folder: one stack per data directory.
  refuseSecondStack(options.dataDir);
  const host = options.host ?? '127.0.0.1';
  const log = options.log ?? jsonLogger();
  const counters = new Counters();
  const bucket = options.bucket ?? 'effitag-local';
  // One catalog per engine the tiers use; markers are the same in each.
  const engines = engineChooser({ override: options.engine, log: (m) => log.log('info', m) });
  const catalogs = new Map<EngineName, ModelCatalog>();
  const catalogFor = (name: EngineName) => {
    if (!catalogs.has(name)) catalogs.set(name, directoryCatalog(options.weightsDir, engines(name)));
    return catalogs.get(name)!;
  };
  const models = catalogFor(Object.values(options.tiers.tiers)[0]?.engine ?? 'ort');
  checkWeights(options.tiers, models, log);

  // The stack's own key pair, per data directory: the stand-ins accept nothing signed otherwise.
  const credentials = ensureEmbeddedCredentials(options.dataDir);
  const trustedOrigins = options.trustedOrigins;
  const sqsServer = await startSqsServer({ host, port: options.sqsPort, credentials, trustedOrigins });
  const sqsEndpoint = sqsServer.endpoint;
  const stops: (() => Promise<unknown>)[] = [() => sqsServer.close()];
  const maxReceiveCount = options.maxReceiveCount ?? 5;
  const visibility = options.visibilitySeconds ?? 60;
  const queueHandles = await createQueues(sqsServer, Object.keys(options.tiers.tiers), { visibility, maxReceiveCount });

  await mkdir(options.dataDir, { recursive: true });
  const indexDir = options.indexDir ?? `${options.dataDir.replace(/\/+$/, '')}.index`;
  await mkdir(indexDir, { recursive: true });
  const dynamoServer = await startDynamoServer({ host, port: options.dynamoPort, directory: indexDir, credentials, trustedOrigins });
  stops.push(() => dynamoServer.close());
  const statePath = options.statePath ?? `${options.dataDir.replace(/\/+$/, '')}.state.json`;
  // A folder of segments; the single-file journal of earlier versions is taken over.
  const journalDir = statePath.replace(/\.state\.json$|$/, '.journal');
  const journal = uploadJournal(journalDir, { legacyFile: `${journalDir}.jsonl` });
  stops.push(async () => journal.close());
  // Dead-letter queues and their reasons outlive a restart (local/sqs-server.ts), saved beside the data directory.
  const deadLetterNames = [QUEUE_NAMES.intakeDeadLetters, ...Object.keys(options.tiers.tiers).map(QUEUE_NAMES.tierDeadLetters)];
  const deadLettersPath = statePath.replace(/\.state\.json$|$/, '.dead-letters.json');
  await mkdir(dirname(deadLettersPath), { recursive: true });
  const restored = await sqsServer.persistDeadLetters(deadLettersPath, deadLetterNames);
  if (restored) log.log('info', 'dead letters restored', { messages: restored, from: deadLettersPath });
  // S3's notifications go straight to the intake queue, as on AWS they are S3's own.
  const notifier = sqsClient({ sqsEndpoint, credentials });
  const notifications = coalescingSender(new SqsQueue(notifier, queueHandles.intake!.url, QUEUE_NAMES.intake));
  const s3server = await startS3Server({
    host,
    port: options.s3Port,
    directory: options.dataDir,
    credentials,
    trustedOrigins,
    onObjectCreated: (body) => notifications.add(body),
    onObjectRemoved: (body) => notifications.add(body),
    onAccepted: (object) => journal.append(object),
    onError: (err) => log.log('error', 'event forwarding failed', { error: messageOf(err) }),
  });
  stops.unshift(async () => {
    await s3server.close();
    await notifications.flush();
  });
  void s3server.swept.then(
    (r) => {
      if (r.torn.length)
        log.log('warn', 'objects a crash left torn moved aside', { to: `${options.dataDir.replace(/\/+$/, '')}.torn`, keys: r.torn });
      if (r.partials) log.log('info', 'temporary files of interrupted writes removed', { files: r.partials });
    },
    (err) => log.log('warn', 'start-up sweep failed', { error: messageOf(err) }),
  );

  // What `effitag` commands open (pipeline/aws/stack-handle.ts): written once everything below is up.
  const handle: StackHandle = {
    name: EMBEDDED_STACK,
    kind: 'embedded',
    region: 'us-east-1',
    buckets: [bucket],
    tiers: { json: options.tiers.input },
    weightsLocation: resolve(options.weightsDir),
    ...queueHandles,
    indexTable: INDEX_TABLE,
    endpoints: { s3: s3server.endpoint, sqs: sqsEndpoint, dynamodb: dynamoServer.endpoint },
    credentials,
    dataDir: resolve(options.dataDir),
  };
  // --- S3 Vectors hook (issue 23, local/s3vectors-server.ts): embeddings for similar images, kept
  // beside the data directory (s3rver would take a folder inside it for a bucket).
  const s3vectorsServer = await startS3VectorsServer({
    host,
    port: options.s3vectorsPort,
    directory: `${options.dataDir.replace(/\/+$/, '')}.vectors`,
    credentials,
    trustedOrigins,
    buckets: [EMBEDDED_VECTOR_BUCKET],
  });
  stops.push(() => s3vectorsServer.close());
  const s3vectors = {
    endpoint: s3vectorsServer.endpoint,
    port: s3vectorsServer.port,
    vectorBucket: EMBEDDED_VECTOR_BUCKET,
    vectors: new S3VectorIndex({
      client: s3VectorsClient({ endpoint: s3vectorsServer.endpoint, credentials }),
      vectorBucket: EMBEDDED_VECTOR_BUCKET,
    }),
  };
  handle.endpoints.s3vectors = s3vectorsServer.endpoint;
  handle.vectorBucket = EMBEDDED_VECTOR_BUCKET;
  // --- end S3 Vectors hook

  // The operator's view of the stack (bucket, table), and the pipeline's: the same, or through the
  // proxies a test interposes in front of S3 and SQS.
  const own = openStack(handle);
  await ensureIndexTable(own.dynamo, INDEX_TABLE);
  await own.s3.send(new CreateBucketCommand({ Bucket: bucket })).catch((err) => {
    if (!/BucketAlreadyOwnedByYou|BucketAlreadyExists/.test(String(err?.name))) throw err;
  });
  const piped = options.interpose
    ? openStack({
        ...handle,
        endpoints: {
          ...handle.endpoints,
          ...(options.interpose.s3 ? { s3: await interposed(s3server, s3server.endpoint, options.interpose.s3) } : {}),
          ...(options.interpose.sqs ? { sqs: await interposed(sqsServer, sqsEndpoint, options.interpose.sqs) } : {}),
        },
      })
    : own;
  const { s3 } = own;
  const { sqs } = piped;
  const endpoints: Endpoints = own.endpoints;
  const store = options.wrapStore ? options.wrapStore(piped.store) : piped.store;
  const index = piped.requireIndex();
  const intake = piped.intake!;
  const tierQueues: EmbeddedStack['tierQueues'] = Object.fromEntries(
    Object.entries(piped.queues).map(([tier, queue]) => [tier, { queue, dlq: piped.deadLetters[tier] }]),
  );

  const queues = Object.fromEntries(Object.entries(tierQueues).map(([k, v]) => [k, v.queue]));
  const routerLog = log.child({ component: 'router' });
  const router = makeRouter({ store, queues, tiers: options.tiers, models, index, vectors: s3vectors.vectors, log: routerLog, counters });

  if (options.runRouter !== false) {
    const intakeLoop = pollIntake(intake, router, routerLog);
    stops.unshift(() => intakeLoop.stop());
  }

  const workers: Record<string, Worker> = {};
  for (const [tier, { queue }] of Object.entries(tierQueues)) {
    if (options.runWorkers && !options.runWorkers(tier)) continue;
    const t = options.tiers.tiers[tier];
    workers[tier] = makeWorker({
      store,
      queue,
      tiers: options.tiers,
      models: catalogFor(t.engine),
      index,
      vectors: s3vectors.vectors,
      counters,
      log: log.child({ component: 'worker', tier }),
      options: {
        batchSize: t.batchSize,
        waitSeconds: 1,
        visibilitySeconds: visibility,
        deadLetter: { queue: tierQueues[tier].dlq, maxReceives: maxReceiveCount },
        ...options.worker,
      },
    });
    void workers[tier].run();
  }
  stops.unshift(async () => {
    await Promise.all(Object.values(workers).map((w) => w.stop()));
  });
  stops.push(async () => {
    for (const c of catalogs.values()) await c.dispose();
  });

  // Nothing lost across a crash: catch up on what the last run left unsettled, and keep recording
  // when everything is settled (local/catch-up.ts).
  const state = settledState(statePath);
  const catchUpOn = options.catchUp !== false && options.runRouter !== false;
  // Without a router nothing gets settled; with a catch-up, nothing is until it is done.
  let holdWatermark = options.runRouter === false || catchUpOn;
  const catchUpAbort = new AbortController();
  // The watermark stays held while a failing pass is retried, so nothing is settled meanwhile.
  const catchUp = catchUpOn
    ? catchUpRetrying(
        { state, journal, store, queues, tiers: options.tiers, models, index, log: routerLog, counters, bucket },
        { firstMs: 1000, maxMs: 60_000, ...options.catchUpRetry },
        { signal: catchUpAbort.signal, log, counters },
      ).then((result) => {
        if (result) holdWatermark = false;
        return result;
      })
    : Promise.resolve(undefined);
  // Whether an upload the journal holds is settled: the router's own backfill decision, on a router
  // of its own (its counters are not the pipeline's), would not enqueue it again.
  const confirmRouter = makeRouter({ store, queues, tiers: options.tiers, models, index, log: routerLog, counters: new Counters() });
  // A task in a dead-letter queue is settled too: it is kept there (persisted), with its reason.
  const isDeadLettered = deadLetteredLookup(sqsServer, deadLetterNames);
  const confirm = async ({ object }: JournalEntry) =>
    isDeadLettered(object) || (await confirmRouter.decide({ ...object, kind: 'Put' }, 'backfill', { mode: 'stale' })).action !== 'enqueued';
  const allQueues = [intake, ...Object.values(tierQueues).map((q) => q.queue)];
  const idle = watchIdle({
    state,
    journal,
    confirm,
    log,
    intervalMs: options.idleCheckMs ?? 2000,
    paused: () => holdWatermark,
    // In pipeline order, so a task moving forward between two reads is still seen in the later one.
    isIdle: async () => {
      if (s3server.pendingEvents() > 0 || notifications.pending() > 0) return false;
      for (const q of allQueues) if ((await q.depth()).total > 0) return false;
      return true;
    },
  });
  stops.unshift(async () => {
    catchUpAbort.abort();
    await catchUp;
    await idle.stop();
  });

  const handleFile = writeStackFile(options.dataDir, handle);
  return {
    handle,
    handleFile,
    endpoints,
    credentials,
    credentialsFile: credentialsFile(options.dataDir),
    bucket,
    s3,
    sqs,
    store,
    index,
    s3vectors,
    intake,
    tierQueues,
    models,
    router,
    workers,
    counters,
    catchUp,
    settled: () => idle.settled(),
    journal,
    async stop() {
      // First: a command started now is told the stack is stopping, not left to time out on it.
      removeStackFile(options.dataDir);
      for (const s of stops) await s().catch((err) => log.log('warn', 'stop step failed', { error: messageOf(err) }));
      own.close();
      if (piped !== own) piped.close();
      notifier.destroy();
    },
  };
}

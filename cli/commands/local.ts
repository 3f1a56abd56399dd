import { parseS3Object } from '../../base/s3-url.ts';
import { ENV } from '../../base/runtime-names.ts';
import { messageOf } from '../../base/errors.ts';
import { readFile } from 'node:fs/promises';
import { join, relative, resolve } from 'node:path';
import type { Command } from 'commander';
import { HeadObjectCommand, PutObjectCommand } from '@aws-sdk/client-s3';
import { createEngine, ENGINE_NAMES } from '../../inference/engines.ts';
import { WORKER_ORT_OPTIONS } from '../../inference/ort-engine.ts';
import { defaultWeightsDir, EMBEDDED_PORTS, defaultDataDir, LOCAL_TIERS_FILE, QUEUE_NAMES } from '../../pipeline/aws/wiring.ts';
import { type OpenStack, requireStackBucket } from '../../pipeline/aws/stack-handle.ts';
import { jsonLogger, type Level } from '../../pipeline/log.ts';
import { decodeTags, KEYS } from '../../pipeline/marker.ts';
import { MissingWeightsError } from '../../pipeline/models.ts';
import type { IndexRecord } from '../../pipeline/tag-index.ts';
import { fetchWeights, WeightsFetchError } from '../../model/weights-fetch.ts';
import { startGallery } from '../../gallery/server.ts';
import { startEmbeddedStack } from '../../local/stack.ts';
import { loadTiers } from '../../tiers/load.ts';
import { parseNumber, printable } from '../format.ts';
import { expandPath, rethrowUnreadable } from '../local-files.ts';
import { openCommandStack } from '../stack.ts';
import { stackCalibrations } from './dupes.ts';

const env = (name: string, fallback: string) => process.env[name] ?? fallback;
/** A path as one shell word (quoted when it has anything but plain characters). */
const shellWord = (text: string) => (/^[\w@%+=:,./-]+$/.test(text) ? text : `'${text.replace(/'/g, `'\\''`)}'`);
const isLoopback = (address: string) => /^127\./.test(address) || address === '::1' || address === 'localhost';

interface LocalOptions {
  listen: string;
  s3Port: number;
  sqsPort: number;
  dynamodbPort: number;
  s3vectorsPort: number;
  galleryPort: number;
  gallery: boolean;
  data: string;
  tiers?: string;
  weights?: string;
  bucket: string;
  engine?: string;
  logLevel: string;
  router: boolean;
  workers: boolean;
}

export function registerLocalCommands(program: Command): void {
  registerLocal(program);
  registerTag(program);
  registerShow(program);
}

/** `effitag local`: the embedded stack (npm start). */
function registerLocal(program: Command): void {
  program
    .command('local')
    .description('run the embedded stack: local S3 + queues + tag index + router + CPU worker + gallery, on loopback (npm start)')
    .option(
      '--listen <address>',
      "address the S3, SQS and DynamoDB servers listen on (env EFFITAG_LISTEN); they answer only requests signed with the stack's credentials, over plain HTTP, so anything but loopback lets the network read what is sent",
      env('EFFITAG_LISTEN', '127.0.0.1'),
    )
    .option(
      '--s3-port <port>',
      'S3 port (env EFFITAG_S3_PORT)',
      parseNumber('--s3-port', 0, 65535, true),
      Number(env('EFFITAG_S3_PORT', String(EMBEDDED_PORTS.s3))),
    )
    .option(
      '--sqs-port <port>',
      'SQS port (env EFFITAG_SQS_PORT)',
      parseNumber('--sqs-port', 0, 65535, true),
      Number(env('EFFITAG_SQS_PORT', String(EMBEDDED_PORTS.sqs))),
    )
    .option(
      '--dynamodb-port <port>',
      'DynamoDB port, the tag index (env EFFITAG_DYNAMODB_PORT)',
      parseNumber('--dynamodb-port', 0, 65535, true),
      Number(env('EFFITAG_DYNAMODB_PORT', String(EMBEDDED_PORTS.dynamodb))),
    )
    .option(
      '--s3vectors-port <port>',
      'S3 Vectors port, the image embeddings of similar and dupes (env EFFITAG_S3VECTORS_PORT)',
      parseNumber('--s3vectors-port', 0, 65535, true),
      Number(env('EFFITAG_S3VECTORS_PORT', String(EMBEDDED_PORTS.s3vectors))),
    )
    .option(
      '--gallery-port <port>',
      'gallery port (env EFFITAG_GALLERY_PORT)',
      parseNumber('--gallery-port', 0, 65535, true),
      Number(env('EFFITAG_GALLERY_PORT', String(EMBEDDED_PORTS.gallery))),
    )
    .option('--no-gallery', 'do not serve the gallery')
    .option('--data <dir>', 'where objects are stored (env EFFITAG_DATA_DIR)', env('EFFITAG_DATA_DIR', '.effitag/data'))
    .option('--tiers <file>', 'tiers file (env EFFITAG_TIERS_FILE; default tiers/local.json: B0 on CPU)')
    .option('--weights <dir>', 'weights catalog, DIR/<variant>/ (env EFFITAG_WEIGHTS_DIR; default: the weights cache)')
    .option('--bucket <name>', 'bucket to create and watch', 'effitag-local')
    .option('--engine <engine>', `run every tier on this engine (${ENGINE_NAMES.join(' | ')}); default: each tier's own`)
    .option('--log-level <level>', 'debug | info | warn | error', env(ENV.logLevel, 'info'))
    .option('--no-router', 'do not route uploads (objects are stored, nothing is enqueued)')
    .option('--no-workers', 'do not run workers (tasks stay in the queues, e.g. to inspect a backfill)')
    .action(async (opts: LocalOptions) => {
      if (!isLoopback(opts.listen)) {
        process.stderr.write(
          `WARNING: --listen ${opts.listen}: the embedded S3, SQS and DynamoDB speak plain HTTP; requests are signed, not encrypted: anyone on the network path can read the objects and messages sent.\n`,
        );
      }
      const { path: tiersPath, config: tiers } = loadTiers(opts.tiers ?? process.env.EFFITAG_TIERS_FILE ?? LOCAL_TIERS_FILE);
      const weightsDir = resolve(opts.weights ?? process.env[ENV.weightsDir] ?? defaultWeightsDir());
      const log = jsonLogger({ level: opts.logLevel as Level });
      const engine = opts.engine
        ? createEngine(opts.engine, { ort: { ...WORKER_ORT_OPTIONS, log: (m) => log.log('info', m) } })
        : undefined;
      const start = () =>
        startEmbeddedStack({
          dataDir: resolve(opts.data),
          tiers,
          weightsDir,
          engine,
          host: opts.listen,
          // The gallery's page may call the stand-ins (its links are presigned); no other page may.
          trustedOrigins:
            opts.gallery && opts.galleryPort ? ['127.0.0.1', 'localhost', '[::1]'].map((h) => `http://${h}:${opts.galleryPort}`) : [],
          s3Port: opts.s3Port,
          sqsPort: opts.sqsPort,
          dynamoPort: opts.dynamodbPort,
          s3vectorsPort: opts.s3vectorsPort,
          bucket: opts.bucket,
          log,
          runRouter: opts.router,
          runWorkers: () => opts.workers,
        });
      let stack: Awaited<ReturnType<typeof start>>;
      try {
        stack = await start();
      } catch (err) {
        const busy = portProblem(err, opts);
        if (busy) throw busy;
        // Only B0 can be fetched for the user here; tiers without it (Lite: weights import --timm) get
        // the error as it is, which names each missing model's fix.
        if (!(err instanceof MissingWeightsError) || opts.weights || !tiers.models.includes('b0')) throw err;
        // First run: fetch the official B0 into the cache, then try again.
        process.stderr.write('No weights yet: fetching the official EfficientNet-B0 (MD5-checked, cached)…\n');
        try {
          await fetchWeights({ variant: 'b0', out: join(weightsDir, 'b0') });
        } catch (fetchErr) {
          if (fetchErr instanceof WeightsFetchError) {
            throw new Error(
              `${(err as Error).message}\n\nCould not fetch them: ${fetchErr.message}\n` +
                `Provide weights with: effitag weights import --keras efficientnetb0.h5 --variant b0 --out ${join(weightsDir, 'b0')}\n` +
                `(or point --weights / EFFITAG_WEIGHTS_DIR at a directory holding b0/)`,
            );
          }
          throw fetchErr;
        }
        stack = await start();
      }
      const { s3Endpoint, sqsEndpoint, dynamoEndpoint } = stack.endpoints;
      // The gallery always on loopback: it signs links with the stack's credentials.
      const gallery = opts.gallery
        ? await startGallery(
            {
              bucket: stack.bucket,
              index: stack.index,
              store: stack.store,
              s3: stack.s3,
              vectors: stack.s3vectors.vectors,
              // Where `effitag dupes` reads this stack's near thresholds (its weights folder), so the
              // gallery's Duplicates groups as the CLI does.
              calibrations: stackCalibrations(stack),
              queues: async () => [
                { name: 'intake', queue: stack.intake },
                ...Object.entries(stack.tierQueues).map(([name, q]) => ({ name, queue: q.queue })),
              ],
            },
            { port: opts.galleryPort },
          ).catch(async (err) => {
            // The gallery's port taken: the stack is up and its handle written, so it is stopped
            // properly (handle removed) before the one-line error, not left as a stale handle.
            await stack.stop();
            throw portProblem(err, opts) ?? err;
          })
        : undefined;
      process.stdout.write(
        [
          'EffiTag embedded stack is running.',
          `  S3 endpoint:  ${s3Endpoint}  (bucket ${stack.bucket}, data in ${resolve(opts.data)})`,
          `  SQS endpoint: ${sqsEndpoint}  (queues: ${[QUEUE_NAMES.intake, ...Object.keys(stack.tierQueues).map(QUEUE_NAMES.tier)].join(', ')})`,
          `  DynamoDB:     ${dynamoEndpoint}  (the tag index, in ${resolve(opts.data)}.index)`,
          `  S3 Vectors:   ${stack.s3vectors.endpoint}  (vector bucket ${stack.s3vectors.vectorBucket}: image embeddings for similar and dupes, in ${resolve(opts.data)}.vectors)`,
          ...(gallery ? [`  Gallery:      ${gallery.url}  (search and browse what is tagged)`] : []),
          `  tiers: ${tiersPath}; weights: ${weightsDir}; engine: ${
            opts.engine ??
            Object.entries(tiers.tiers)
              .map(([n, t]) => `${t.engine} (${n})`)
              .join(', ')
          }`,
          '',
          `Credentials: the stand-ins accept only requests signed with these (kept owner-only in ${stack.credentialsFile};`,
          `\`effitag\` commands read them, and the ports, from the stack's handle ${stack.handleFile}). For the AWS CLI or SDK, in your shell:`,
          `  export AWS_ACCESS_KEY_ID=${stack.credentials.accessKeyId} AWS_SECRET_ACCESS_KEY=${stack.credentials.secretAccessKey} AWS_REGION=us-east-1 AWS_DEFAULT_REGION=us-east-1${
            // What another shell needs for the `npx effitag` lines below: the data directory, unless it
            // is the default. Its handle file there gives them the ports and key pair (no port variables).
            resolve(opts.data) === defaultDataDir({}) ? '' : ` EFFITAG_DATA_DIR=${shellWord(resolve(opts.data))}`
          }`,
          '',
          'Upload an image and watch it get tagged:',
          `  aws --endpoint-url ${s3Endpoint} s3 cp photo.jpg s3://${stack.bucket}/photos/photo.jpg`,
          `  npx effitag tag photo.jpg        # uploads and prints the tags when they land`,
          `  npx effitag show s3://${stack.bucket}/photos/photo.jpg`,
          `  npx effitag search s3://${stack.bucket} --tag dog      # leaf or rolled-up tags (retriever, dog, animal)`,
          '',
          'Ctrl-C stops it (in-flight batches finish first). Uploads still queued then, or when the process',
          'dies, are caught up at the next start.',
          '',
        ].join('\n'),
      );
      void stack.catchUp.then((r) => {
        if (!r || r.report.listed === 0) return;
        const what = r.since
          ? `${r.report.listed} upload(s) accepted since the stack was last idle (${r.since.toISOString()})`
          : `${r.report.listed} object(s) in the bucket (no record of an idle moment yet)`;
        process.stderr.write(`caught up: ${what} checked in ${r.seconds.toFixed(1)} s, ${r.report.enqueued} enqueued again\n`);
      });
      await new Promise<void>((resolveStop) => {
        const stop = () => {
          process.stderr.write('\nstopping…\n');
          resolveStop();
        };
        process.once('SIGINT', stop);
        process.once('SIGTERM', stop);
      });
      await gallery?.close();
      await stack.stop();
    });
}

/** `effitag tag`: upload files and print their tags when they land. */
function registerTag(program: Command): void {
  program
    .command('tag')
    .description("upload images (files or directories) and print each object's tags when they land")
    .argument('<paths...>', 'image files or directories')
    .option('--bucket <name>', "bucket (default: the stack's)")
    .option('--prefix <prefix>', 'key prefix', 'uploads/')
    .option('--timeout <s>', 'seconds to wait for tags', parseNumber('--timeout', 1, 3600), 120)
    .option('--json', 'print one JSON object per image')
    .action(async (paths: string[], o: { bucket?: string; prefix: string; timeout: number; json?: boolean }, command: Command) => {
      // The files first (each one readable): a mistyped path is named before the stack is even looked for.
      const files = (await Promise.all(paths.map(expandPath))).flat();
      if (files.length === 0) throw new Error('no files to upload');
      const { s3, handle } = await openCommandStack(command);
      const bucket = o.bucket ?? handle.buckets[0];
      if (!bucket) throw new Error(`which bucket? stack ${handle.name} names none: pass --bucket`);
      const opts = { ...o, bucket };
      const uploads = await Promise.all(
        files.map(async ({ file, base }) => {
          const key = `${opts.prefix}${relative(base, file).split('\\').join('/')}`;
          const out = await s3.send(
            new PutObjectCommand({
              Bucket: opts.bucket,
              Key: key,
              Body: await readFile(file).catch(rethrowUnreadable(file)),
              ContentType: contentType(file),
            }),
          );
          return { file, key, eTag: (out.ETag ?? '').replace(/"/g, '') };
        }),
      );
      const deadline = Date.now() + opts.timeout * 1000;
      let pending = uploads;
      let failures = 0;
      while (pending.length && Date.now() < deadline) {
        const still: typeof pending = [];
        for (const u of pending) {
          const h = await s3.send(new HeadObjectCommand({ Bucket: opts.bucket, Key: u.key }));
          const m = h.Metadata ?? {};
          if (m[KEYS.etag] === u.eTag && m[KEYS.status]) {
            if (m[KEYS.status] !== 'tagged') failures++;
            print(opts.json, u.file, `s3://${opts.bucket}/${u.key}`, m);
          } else still.push(u);
        }
        pending = still;
        if (pending.length) await new Promise((r) => setTimeout(r, 500));
      }
      for (const u of pending)
        process.stderr.write(
          `${printable(`${u.file}: no tags after ${opts.timeout}s (is the stack running? see effitag show s3://${opts.bucket}/${u.key})`)}\n`,
        );
      if (pending.length || failures) process.exitCode = 1;
    });
}

/** `effitag show`: an object's tags and status. */
function registerShow(program: Command): void {
  program
    .command('show')
    .description("print an object's EffiTag tags and status")
    .argument('<url>', 's3://bucket/key')
    .option('--json', 'machine-readable output')
    .action(async (url: string, opts: { json?: boolean }, command: Command) => {
      const { bucket, key } = parseS3Object(url);
      const conn = await openCommandStack(command);
      requireStackBucket(conn.handle, bucket);
      const h = await conn.s3.send(new HeadObjectCommand({ Bucket: bucket, Key: key })).catch((err) => {
        // A HEAD's 404 has no body, so the SDK can only call it NotFound (AWS) or UnknownError.
        if (err?.$metadata?.httpStatusCode === 404) throw new Error(`no such object s3://${bucket}/${key}`);
        throw err;
      });
      const meta = h.Metadata ?? {};
      if (!meta[KEYS.status]) {
        // No marker on the object: with a full metadata budget the worker tags through the index
        // only (pipeline/worker-stages.ts), so "untagged" would be wrong. A record counts only if it
        // is of this very upload: these bytes, and not an earlier upload of them.
        const held = await indexedTagging(conn, bucket, key).catch((err) => {
          process.stderr.write(`${printable(`note: the tag index could not be read (${messageOf(err)})`)}\n`);
          return undefined;
        });
        const eTag = (h.ETag ?? '').replace(/"/g, '');
        const current = held && held.eTag === eTag && !(h.LastModified && held.lastModified < h.LastModified);
        if (held && current) return printIndexed(opts.json, url, held);
        process.exitCode = 1;
      }
      print(opts.json, undefined, url, meta);
    });
}

/** The index's record of an object; none where the stack has no index. */
async function indexedTagging(conn: OpenStack, bucket: string, key: string) {
  return conn.index?.get(bucket, key);
}

/** An object tagged (or failed) in the index only, printed as `print` prints a marker. */
function printIndexed(json: boolean | undefined, url: string, held: IndexRecord): void {
  const status = held.failed ? 'failed' : 'tagged';
  const tags = held.failed
    ? []
    : Object.entries(held.tags)
        .map(([label, probability]) => ({ label, probability }))
        .sort((a, b) => b.probability - a.probability);
  if (json) {
    process.stdout.write(`${JSON.stringify({ object: url, status, model: held.marker, at: held.at, in: 'index', tags })}\n`);
    return;
  }
  const head = `${url}: ${status} by ${held.marker} at ${held.at} (in the tag index only: no room in the object's metadata)`;
  process.stdout.write(`${printable(head)}\n`);
  for (const t of tags) process.stdout.write(`  ${(t.probability * 100).toFixed(1).padStart(5)}%  ${printable(t.label)}\n`);
}

function print(json: boolean | undefined, file: string | undefined, url: string, m: Record<string, string>): void {
  const tags = decodeTags(m[KEYS.tags]);
  // A tier tagging with ImageNet and a custom model: the custom model's labels, apart.
  const labels = m[KEYS.labels] !== undefined ? decodeTags(m[KEYS.labels]) : undefined;
  if (json) {
    process.stdout.write(
      `${JSON.stringify({ ...(file ? { file } : {}), object: url, status: m[KEYS.status] ?? 'untagged', model: m[KEYS.model], at: m[KEYS.at], reason: m[KEYS.reason], tags, ...(labels ? { labels } : {}) })}\n`,
    );
    return;
  }
  // Keys, metadata and labels are anyone's text: each line escaped, so none can steer the terminal.
  const head = `${file ? `${file} → ` : ''}${url}: ${m[KEYS.status] ?? 'untagged'}${m[KEYS.model] ? ` by ${m[KEYS.model]}` : ''}${m[KEYS.at] ? ` at ${m[KEYS.at]}` : ''}`;
  process.stdout.write(`${printable(head)}\n`);
  if (m[KEYS.reason]) process.stdout.write(`  reason: ${printable(m[KEYS.reason])}\n`);
  for (const t of tags) process.stdout.write(`  ${(t.probability * 100).toFixed(1).padStart(5)}%  ${printable(t.label)}\n`);
  if (labels) process.stdout.write('  custom model:\n');
  for (const t of labels ?? []) process.stdout.write(`  ${(t.probability * 100).toFixed(1).padStart(5)}%  ${printable(t.label)}\n`);
}

const TYPES: Record<string, string> = {
  jpg: 'image/jpeg',
  jpeg: 'image/jpeg',
  png: 'image/png',
  webp: 'image/webp',
  gif: 'image/gif',
  tif: 'image/tiff',
  tiff: 'image/tiff',
  avif: 'image/avif',
  heic: 'image/heic',
  heif: 'image/heif',
};
const contentType = (file: string) => TYPES[file.split('.').pop()?.toLowerCase() ?? ''] ?? 'application/octet-stream';

const PORT_FLAGS = [
  ['s3Port', '--s3-port'],
  ['sqsPort', '--sqs-port'],
  ['dynamodbPort', '--dynamodb-port'],
  ['s3vectorsPort', '--s3vectors-port'],
  ['galleryPort', '--gallery-port'],
] as const;

/**
 * A port of the stack that is taken (another `effitag local`, often on another data directory, or
 * another program), as one line naming its option and the way out, instead of Node's
 * "listen EADDRINUSE: address already in use 127.0.0.1:4568". Undefined for any other error.
 */
export function portProblem(err: unknown, opts: Pick<LocalOptions, (typeof PORT_FLAGS)[number][0] | 'listen'>): Error | undefined {
  const e = err as NodeJS.ErrnoException & { port?: number; address?: string };
  if (e?.code !== 'EADDRINUSE' && e?.code !== 'EACCES') return undefined;
  const flag = PORT_FLAGS.find(([key]) => opts[key] === e.port)?.[1];
  if (!flag || !e.port) return undefined;
  const where = `port ${e.port} on ${e.address ?? opts.listen}`;
  const fix = `pass ${flag} N (0: any free port)`;
  return new Error(
    e.code === 'EADDRINUSE'
      ? `${where} (${flag}) is in use, by another effitag local (each data directory runs its own stack) or another program: stop it, or ${fix}`
      : `${where} (${flag}) may not be opened by this user (below 1024?): ${fix}`,
    { cause: err },
  );
}

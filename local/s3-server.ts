/**
 * The embedded S3: s3rver (S3 REST over HTTP, objects on disk under the data directory) with two
 * additions that make it behave like S3 where EffiTag depends on it:
 * - If-Match on GET/HEAD and x-amz-copy-source-if-match on CopyObject are enforced (s3rver ignores
 *   them), so the guard against clobbering a newer upload is exercised for real;
 * - object-created events are forwarded as S3 → SQS notifications, keys URL-encoded the AWS way
 *   (`a+b%2Bc.jpg`) and the ETag filled in for Copy events, so the router's decoding is exercised;
 * - `x-amz-copy-source` is read as S3 reads it (each segment URI-component-encoded); s3rver would
 *   decode it with decodeURI and miss keys with `+`, `,` or `&`, so the deployed code's copies work
 *   here unchanged;
 * - objects uploaded with a customer-provided key (SSE-C) answer GET, HEAD and copy requests that
 *   do not send the key with S3's 400 InvalidRequest, so that failure path is exercised (the flag is
 *   kept in memory: such objects are a test fixture, not something the embedded stack stores).
 */
import { createHash } from 'node:crypto';
import { createReadStream, createWriteStream, renameSync } from 'node:fs';
import { mkdir, readdir, readFile, rename, stat as fsStat, unlink, writeFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { dirname, join, relative } from 'node:path';
import { Readable, Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import S3rver from 's3rver';
import type { EmbeddedCredentials } from '../pipeline/aws/local-credentials.ts';
import { encodeS3Key, type ObjectCreated } from '../pipeline/events.ts';
import { guardS3rver } from './request-guard.ts';

export interface S3ServerOptions {
  host?: string;
  port?: number;
  directory: string;
  /** The only credentials it accepts requests signed with (local/request-guard.ts). */
  credentials: EmbeddedCredentials;
  /** Pages that may call it from a browser (the stack's gallery); any other Origin is refused. */
  trustedOrigins?: readonly string[];
  /** Called with an S3 notification body for every object created. */
  onObjectCreated?: (notification: string) => void | Promise<void>;
  /** Called with an S3 notification body for every object deleted (the tag index drops it). */
  onObjectRemoved?: (notification: string) => void | Promise<void>;
  /** Called synchronously for each object created, just before it is put in place (the journal). */
  onAccepted?: (object: ObjectCreated) => void;
  onError?: (err: unknown) => void;
}

export interface RunningS3 {
  endpoint: string;
  port: number;
  /** Also accept requests relayed by a loopback proxy on this port (they carry, and signed, its Host). */
  trustProxyPort(port: number): void;
  /** Object-created events not yet handed to `onObjectCreated`. */
  pendingEvents(): number;
  /** The start-up sweep of what crashes left (`sweepTorn`). */
  swept: Promise<{ partials: number; torn: string[] }>;
  close(): Promise<void>;
}

interface Store {
  getMetadata(bucket: string, key: string): Promise<{ etag: string; 'content-length': number }>;
}
interface KoaCtx {
  method: string;
  path: string;
  query: Record<string, string | string[] | undefined>;
  status: number;
  body: unknown;
  type: string;
  request: { headers: Record<string, string | string[] | undefined> };
  get(name: string): string;
}
type Middleware = (ctx: KoaCtx, next: () => Promise<void>) => Promise<void>;

/** The part of s3rver's FilesystemStore replaced here (lib/stores/filesystem.js). */
interface FilesystemStore extends Store {
  rootDirectory: string;
  getResourcePath(bucket: string, key?: string, resource?: string): string;
  putObject(object: { bucket: string; key: string; content: Buffer | NodeJS.ReadableStream; metadata: Record<string, string> }): Promise<{
    size: number;
    md5: string;
  }>;
  putMetadata(bucket: string, key: string, metadata: Record<string, string>, md5?: string): Promise<void>;
  copyObject(
    srcBucket: string,
    srcKey: string,
    destBucket: string,
    destKey: string,
    replacement?: Record<string, string>,
  ): Promise<unknown>;
}

/** What s3rver keeps of an object's metadata (as its own putMetadata picks it). */
const ALLOWED_METADATA: readonly string[] = createRequire(import.meta.url)('s3rver/lib/models/object.js').ALLOWED_METADATA;
const storedMetadata = (metadata: Record<string, string>) =>
  Object.fromEntries(Object.entries(metadata).filter(([k]) => ALLOWED_METADATA.includes(k) || k.startsWith('x-amz-meta-')));

/** Temporary files sit beside their target (same file system, so the rename is atomic); listings skip them. */
export const PARTIAL_SUFFIX = '.partial';
let partials = 0;
const partialOf = (path: string) => `${path}.${process.pid}-${++partials}${PARTIAL_SUFFIX}`;

const notFound = (why: string) => Object.assign(new Error(why), { code: 'ENOENT' });
const MD5 = /^[0-9a-f]{32}$/;

/** Bytes into a temporary file, hashed on the way; settles once they are on disk (s3rver's own put answered before). */
async function writeHashed(content: Buffer | NodeJS.ReadableStream, path: string): Promise<{ size: number; md5: string }> {
  const hash = createHash('md5');
  let size = 0;
  const source = Buffer.isBuffer(content) ? Readable.from([content]) : content;
  await pipeline(
    source,
    new Transform({
      transform(chunk: Buffer, _encoding, callback) {
        hash.update(chunk);
        size += chunk.length;
        callback(null, chunk);
      },
    }),
    createWriteStream(path),
  );
  return { size, md5: hash.digest('hex') };
}

const hashFile = async (path: string) => {
  const hash = createHash('md5');
  for await (const chunk of createReadStream(path)) hash.update(chunk as Buffer);
  return hash.digest('hex');
};

/**
 * Writes that a crash cannot tear. s3rver writes an object's bytes, its `.md5` and its
 * `metadata.json` in place, one after the other: a `kill -9` mid-upload left objects of 0 bytes with
 * ETag `""`, or without metadata, in listings, and a reader racing a writer parsed half a
 * metadata.json ("Unexpected end of JSON input", or a LIST answered 500). Here each file is written
 * whole to a temporary file beside it, and the renames that put them in place run back to back in
 * one synchronous step (no request is served between them): `.md5` and metadata first, the bytes
 * last, so a new object appears in listings only complete. `beforeCommit` runs just before (the
 * journal: an object is never in place without its entry). Reads treat what only an older version
 * could leave torn (an unparseable metadata.json, an `.md5` that is not one, an `.md5` without
 * metadata) as absent: left out of listings, 404 on GET, never a 500; `sweepTorn` cleans them.
 */
export function atomicWrites(
  store: FilesystemStore,
  beforeCommit?: (o: { bucket: string; key: string; eTag: string; size: number; kind: ObjectCreated['kind'] }) => void,
): void {
  const paths = (bucket: string, key: string) => {
    const object = store.getResourcePath(bucket, key, 'object');
    return { object, md5: `${object}.md5`, metadata: store.getResourcePath(bucket, key, 'metadata.json') };
  };
  const commit = (moves: [from: string, to: string][]) => {
    for (const [from, to] of moves) renameSync(from, to);
  };
  const discard = (files: string[]) => Promise.all(files.map((f) => unlink(f).catch(() => {})));

  store.putMetadata = async (bucket, key, metadata, md5) => {
    const p = paths(bucket, key);
    const tmpMeta = partialOf(p.metadata);
    const tmpMd5 = md5 ? partialOf(p.md5) : undefined;
    try {
      await writeFile(tmpMeta, JSON.stringify(storedMetadata(metadata), null, 2));
      if (tmpMd5) await writeFile(tmpMd5, md5!);
      commit([...(tmpMd5 ? [[tmpMd5, p.md5] as [string, string]] : []), [tmpMeta, p.metadata]]);
    } catch (err) {
      await discard([tmpMeta, ...(tmpMd5 ? [tmpMd5] : [])]);
      throw err;
    }
  };

  /** Bytes already in `tmpObject`: write md5 and metadata beside them, journal, put all three in place. */
  const place = async (
    bucket: string,
    key: string,
    tmpObject: string,
    written: { size: number; md5: string },
    metadata: string,
    kind: ObjectCreated['kind'],
  ) => {
    const p = paths(bucket, key);
    const tmpMd5 = partialOf(p.md5);
    const tmpMeta = partialOf(p.metadata);
    try {
      await writeFile(tmpMd5, written.md5);
      await writeFile(tmpMeta, metadata);
      beforeCommit?.({ bucket, key, eTag: written.md5, size: written.size, kind });
      commit([
        [tmpMd5, p.md5],
        [tmpMeta, p.metadata],
        [tmpObject, p.object],
      ]);
    } catch (err) {
      await discard([tmpObject, tmpMd5, tmpMeta]);
      throw err;
    }
  };

  store.putObject = async (object) => {
    const target = paths(object.bucket, object.key).object;
    await mkdir(dirname(target), { recursive: true });
    const tmp = partialOf(target);
    let written: { size: number; md5: string };
    try {
      written = await writeHashed(object.content, tmp);
    } catch (err) {
      await discard([tmp]);
      throw err;
    }
    await place(object.bucket, object.key, tmp, written, JSON.stringify(storedMetadata(object.metadata), null, 2), 'Put');
    return written;
  };

  store.copyObject = async (srcBucket, srcKey, destBucket, destKey, replacement) => {
    const src = paths(srcBucket, srcKey);
    const dest = paths(destBucket, destKey);
    if (src.object === dest.object) {
      // The metadata write-back (a copy onto itself): only metadata.json changes.
      if (replacement) {
        const current = await store.getMetadata(destBucket, destKey);
        beforeCommit?.({ bucket: destBucket, key: destKey, eTag: etagOf(current.etag), size: current['content-length'], kind: 'Copy' });
        await store.putMetadata(destBucket, destKey, replacement);
      }
      return store.getMetadata(destBucket, destKey);
    }
    // The source's metadata as of before its bytes are read: a copy racing an overwrite of its
    // source may pair the older metadata with the newer bytes, never half of either.
    const metadata = replacement
      ? JSON.stringify(storedMetadata(replacement), null, 2)
      : await readFile(src.metadata, 'utf8').catch((err) => (err.code === 'ENOENT' ? '{}' : Promise.reject(err)));
    await mkdir(dirname(dest.object), { recursive: true });
    const tmp = partialOf(dest.object);
    let written: { size: number; md5: string };
    try {
      written = await writeHashed(createReadStream(src.object), tmp);
    } catch (err) {
      await discard([tmp]);
      throw err;
    }
    await place(destBucket, destKey, tmp, written, metadata, 'Copy');
    return store.getMetadata(destBucket, destKey);
  };

  store.getMetadata = async (bucket, key) => {
    const p = paths(bucket, key);
    // Expected to throw ENOENT if the object does not exist (s3rver's callers rely on it).
    const stat = await fsStat(p.object);
    const [metaText, md5Text] = await Promise.all([
      readFile(p.metadata, 'utf8').catch((err) => (err.code === 'ENOENT' ? undefined : Promise.reject(err))),
      readFile(p.md5, 'utf8').catch((err) => (err.code === 'ENOENT' ? undefined : Promise.reject(err))),
    ]);
    let meta: Record<string, string> = {};
    if (metaText !== undefined) {
      try {
        meta = JSON.parse(metaText);
      } catch {
        throw notFound(`torn object (unreadable metadata): ${bucket}/${key}`);
      }
    } else if (md5Text !== undefined) {
      throw notFound(`torn object (no metadata): ${bucket}/${key}`);
    }
    let md5 = md5Text;
    if (md5 === undefined) {
      // A file placed by hand: hashed once, its .md5 written whole.
      md5 = await hashFile(p.object);
      const tmp = partialOf(p.md5);
      await writeFile(tmp, md5);
      renameSync(tmp, p.md5);
    } else if (!MD5.test(md5)) {
      throw notFound(`torn object (bad .md5): ${bucket}/${key}`);
    }
    return { ...meta, etag: JSON.stringify(md5), 'last-modified': stat.mtime.toUTCString(), 'content-length': stat.size };
  };
}

/**
 * At start, beside the running server: removes temporary files a crash left (older than `before`),
 * and moves objects an older version left without their metadata (an `.md5` but no metadata.json)
 * to `<directory>.torn/`, so nothing is deleted that might be wanted. One readdir per folder; torn
 * files it cannot tell by name (an empty metadata.json or `.md5`) stay, and reads ignore them.
 */
export async function sweepTorn(directory: string, before: number): Promise<{ partials: number; torn: string[] }> {
  const out = { partials: 0, torn: [] as string[] };
  const root = directory.replace(/\/+$/, '');
  const walk = async (dir: string): Promise<void> => {
    const entries = await readdir(dir, { withFileTypes: true }).catch(() => []);
    const names = new Set(entries.map((e) => e.name));
    for (const e of entries) {
      const path = join(dir, e.name);
      if (e.isDirectory()) {
        await walk(path);
      } else if (e.name.endsWith(PARTIAL_SUFFIX)) {
        const s = await fsStat(path).catch(() => undefined);
        if (
          s &&
          s.mtimeMs < before &&
          (await unlink(path).then(
            () => true,
            () => false,
          ))
        )
          out.partials++;
      } else if (e.name.endsWith(OBJECT_SUFFIX)) {
        const base = e.name.slice(0, -'object'.length);
        if (names.has(`${base}metadata.json`) || !names.has(`${e.name}.md5`)) continue;
        // Written by this version, an object is renamed into place after its metadata: not torn.
        const s = await fsStat(path).catch(() => undefined);
        if (!s || s.mtimeMs >= before) continue;
        const aside = join(`${root}.torn`, relative(root, dir), base);
        await mkdir(dirname(aside), { recursive: true });
        for (const suffix of ['object.md5', 'object']) await rename(join(dir, `${base}${suffix}`), `${aside}${suffix}`).catch(() => {});
        out.torn.push(relative(root, path.slice(0, -OBJECT_SUFFIX.length)));
      }
    }
  };
  await walk(root);
  return out;
}
const OBJECT_SUFFIX = '._S3rver_object';

const etagOf = (quoted: string) => quoted.replace(/^"|"$/g, '');
const matches = (etag: string, header: string) =>
  header
    .split(',')
    .map((h) => etagOf(h.trim()))
    .some((h) => h === '*' || h === etag);

function preconditionFailed(ctx: KoaCtx, condition: string): void {
  ctx.status = 412;
  if (ctx.method === 'HEAD') return;
  ctx.type = 'application/xml';
  ctx.body = `<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>PreconditionFailed</Code><Message>At least one of the pre-conditions you specified did not hold</Message><Condition>${condition}</Condition></Error>`;
}

/** `bucket/key[?versionId=…]` as S3 parses x-amz-copy-source: each path segment URI-component-decoded. */
export function parseCopySource(header: string): { bucket: string; key: string; query: string; versionId?: string } {
  const [path, query = ''] = header.replace(/^\//, '').split('?');
  const [bucket, ...key] = path.split('/').map(decodeURIComponent);
  return { bucket, key: key.join('/'), query, versionId: new URLSearchParams(query).get('versionId') ?? undefined };
}

/** The endpoint clients on this machine use for a server listening on `host` (loopback for "every address"). */
export function clientEndpoint(host: string, port: number): string {
  const reachable = host === '0.0.0.0' || host === '::' ? '127.0.0.1' : host;
  return `http://${reachable.includes(':') ? `[${reachable}]` : reachable}:${port}`;
}

const SSE_C_HEADER = 'x-amz-server-side-encryption-customer-algorithm';
const SSE_C_REFUSAL =
  'The object was stored using a form of Server Side Encryption. The correct parameters must be provided to retrieve the object.';

function invalidRequest(ctx: KoaCtx, message: string): void {
  ctx.status = 400;
  if (ctx.method === 'HEAD') return; // S3 answers HEAD errors without a body
  ctx.type = 'application/xml';
  ctx.body = `<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>InvalidRequest</Code><Message>${message}</Message></Error>`;
}

/** S3's conditional requests and copy-source parsing, and SSE-C refusals (see the module comment). */
function s3SemanticsMiddleware(store: Store, sseC: Set<string>): Middleware {
  return async (ctx, next) => {
    const [, pathBucket, ...pathKey] = ctx.path.split('/');
    const objectId = pathBucket && pathKey.length ? `${pathBucket}/${pathKey.map(decodeURIComponent).join('/')}` : undefined;
    const copySource = ctx.get('x-amz-copy-source');
    const source = ctx.method === 'PUT' && copySource ? parseCopySource(copySource) : undefined;
    if (source) {
      if (sseC.has(`${source.bucket}/${source.key}`) && !ctx.get('x-amz-copy-source-server-side-encryption-customer-algorithm')) {
        return invalidRequest(ctx, SSE_C_REFUSAL);
      }
      // Re-encoded the way s3rver decodes it (decodeURI), so it finds the key S3 would.
      ctx.request.headers['x-amz-copy-source'] = `${source.bucket}/${encodeURI(source.key)}${source.query ? `?${source.query}` : ''}`;
      const copyIfMatch = ctx.get('x-amz-copy-source-if-match');
      if (copyIfMatch) {
        const meta = await store.getMetadata(source.bucket, source.key).catch(() => undefined);
        if (!meta || !matches(etagOf(meta.etag), copyIfMatch)) return preconditionFailed(ctx, 'x-amz-copy-source-If-Match');
      }
    }
    if ((ctx.method === 'GET' || ctx.method === 'HEAD') && objectId) {
      if (sseC.has(objectId) && !ctx.get(SSE_C_HEADER)) return invalidRequest(ctx, SSE_C_REFUSAL);
      const ifMatch = ctx.get('if-match');
      if (ifMatch) {
        const meta = await store.getMetadata(pathBucket, objectId.slice(pathBucket.length + 1)).catch(() => undefined);
        if (meta && !matches(etagOf(meta.etag), ifMatch)) return preconditionFailed(ctx, 'If-Match');
      }
    }
    await next();
    if (ctx.method === 'PUT' && objectId && !source && ctx.status === 200) {
      if (ctx.get(SSE_C_HEADER)) sseC.add(objectId);
      else sseC.delete(objectId);
    }
  };
}

/**
 * `encoding-type=url` on ListObjects (V1 and V2), which s3rver accepts and ignores. Keys may hold any
 * character, and XML 1.0 cannot carry most control characters (ESC, BEL) at all, nor a `\r` that
 * survives a parser's line-end normalisation: s3rver answered 200 with them raw, botocore (the AWS
 * CLI) failed the whole listing with a 500-like retry loop and the JS SDK turned `\r` into `\n`.
 * Here, as S3 does, the key-valued elements (Key, Prefix, Delimiter, StartAfter, Marker, NextMarker,
 * CommonPrefixes/Prefix) are encoded the way S3 encodes them (space as `+`, `/` kept, the rest
 * percent-encoded UTF-8: what botocore's unquote_plus and decodeS3Key undo) and the response says
 * `<EncodingType>url</EncodingType>`; any other encoding type is S3's 400 InvalidArgument.
 * s3rver has no ListObjectVersions (`?versions` answers NotImplemented), so there is nothing to encode.
 * It sits after s3rver's XML encoder, so it sees the listing as the object s3rver built.
 */
function listEncodingMiddleware(): Middleware {
  const LIST_FIELDS = ['Prefix', 'Delimiter', 'StartAfter', 'Marker', 'NextMarker'] as const;
  return async (ctx, next) => {
    const encoding = ctx.query['encoding-type'];
    const isList = ctx.method === 'GET' && /^\/[^/]+\/?$/.test(ctx.path) && !Object.keys(ctx.query).some((q) => SUBRESOURCES.has(q));
    if (isList && encoding !== undefined && encoding !== 'url') {
      ctx.status = 400;
      ctx.type = 'application/xml';
      ctx.body = `<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>InvalidArgument</Code><Message>Invalid Encoding Method specified in Request</Message><ArgumentName>encoding-type</ArgumentName></Error>`;
      return;
    }
    await next();
    const result =
      isList && encoding === 'url' ? (ctx.body as { ListBucketResult?: Record<string, unknown> } | undefined)?.ListBucketResult : undefined;
    if (!result) return;
    for (const field of LIST_FIELDS) if (typeof result[field] === 'string') result[field] = encodeS3Key(result[field] as string);
    for (const o of (result.Contents ?? []) as { Key: string }[]) o.Key = encodeS3Key(o.Key);
    for (const p of (result.CommonPrefixes ?? []) as { Prefix: string }[]) p.Prefix = encodeS3Key(p.Prefix);
    result.EncodingType = 'url';
  };
}
/** Bucket subresources that are not a listing (`?cors`, `?versions`, …), as s3rver's router tells them apart. */
const SUBRESOURCES: ReadonlySet<string> = new Set(createRequire(import.meta.url)('s3rver/lib/controllers/bucket.js').METHODS);

let lastSequencer = 0n;
/** Hex, strictly increasing within the process, and past any earlier run's (microseconds since 1970). */
export function nextSequencer(): string {
  const now = BigInt(Date.now()) * 1000n;
  lastSequencer = now > lastSequencer ? now : lastSequencer + 1n;
  return lastSequencer.toString(16).toUpperCase().padStart(16, '0');
}

export async function startS3Server(options: S3ServerOptions): Promise<RunningS3> {
  const server = new S3rver({
    address: options.host ?? '127.0.0.1',
    port: options.port ?? 0,
    silent: true,
    directory: options.directory,
  }) as S3rver & { middleware: Middleware[]; store: FilesystemStore };
  const startedAt = Date.now();
  // Each created object is journalled (onAccepted) as it is put in place, before the request is answered.
  atomicWrites(server.store, options.onAccepted);
  // Before s3rver's router (Koa composes `middleware` when the server starts listening).
  server.middleware.splice(1, 0, s3SemanticsMiddleware(server.store, new Set()));
  // Just before s3rver's router (its last middleware), after its XML encoder: sees listings as objects.
  server.middleware.splice(server.middleware.length - 1, 0, listEncodingMiddleware());
  // First of all: Host, Origin, signature and on-disk paths (local/request-guard.ts).
  const guard = guardS3rver(server, { credentials: options.credentials, listenHost: options.host, trustedOrigins: options.trustedOrigins });

  // Events accepted but not yet handed on: the stack is not idle while any are.
  let pending = 0;
  // biome-ignore lint/suspicious/noExplicitAny: s3rver's event records are untyped; the fields read are checked below
  server.on('event', (event: { Records: any[] }) => {
    // S3's sequencer grows with every event of a key; s3rver's counts milliseconds, so two uploads
    // in one millisecond would share one (and the tier queue would take the second for a duplicate).
    if (event.Records[0]?.s3?.object) event.Records[0].s3.object.sequencer = nextSequencer();
    pending++;
    void (async () => {
      const record = event.Records[0];
      const key: string = record.s3.object.key;
      if (String(record.eventName).startsWith('ObjectRemoved:')) {
        record.s3.object.key = encodeS3Key(key);
        await options.onObjectRemoved?.(JSON.stringify({ Records: [record] }));
        return;
      }
      if (!String(record.eventName).startsWith('ObjectCreated:')) return;
      if (!record.s3.object.eTag || record.s3.object.size === undefined) {
        const meta = await server.store.getMetadata(record.s3.bucket.name, key);
        record.s3.object.eTag = etagOf(meta.etag);
        record.s3.object.size = Number(meta['content-length']);
      }
      record.s3.object.key = encodeS3Key(key);
      await options.onObjectCreated?.(JSON.stringify({ Records: [record] }));
    })()
      .catch((err) => options.onError?.(err))
      .finally(() => {
        pending--;
      });
  });

  // s3rver passes net's listen a callback, which is a 'listening' listener: a port in use was an
  // unhandled 'error' event (a stack trace, the process gone). Given a callback it returns the server,
  // so its bind error can reject here and reach the CLI's one line, as SQS's and DynamoDB's do.
  type HttpServer = import('node:http').Server;
  const listening = server as unknown as { listen: (...args: unknown[]) => unknown };
  const listen = listening.listen.bind(server) as (...args: unknown[]) => HttpServer;
  listening.listen = (...args) =>
    new Promise<HttpServer>((resolveListen, rejectListen) => {
      const http = listen(...args, () => {
        http.off('error', rejectListen);
        resolveListen(http);
      });
      http.once('error', rejectListen);
    });
  const address = await server.run();
  const port = (address as { port: number }).port;
  guard.ports.add(port);
  const host = options.host ?? '127.0.0.1';
  return {
    endpoint: clientEndpoint(host, port),
    port,
    trustProxyPort: (p) => guard.trustProxyPort(p),
    pendingEvents: () => pending,
    swept: sweepTorn(options.directory, startedAt),
    close: () => server.close(),
  };
}

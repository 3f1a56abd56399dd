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
import S3rver from 's3rver';
import type { LocalCredentials } from '../pipeline/aws/local-credentials.ts';
import { encodeS3Key, type ObjectCreated } from '../pipeline/events.ts';
import { guardS3rver } from './request-guard.ts';

export interface S3ServerOptions {
  host?: string;
  port?: number;
  directory: string;
  /** The only credentials it accepts requests signed with (local/request-guard.ts). */
  credentials: LocalCredentials;
  /** Pages that may call it from a browser (the stack's gallery); any other Origin is refused. */
  trustedOrigins?: readonly string[];
  /** Called with an S3 notification body for every object created. */
  onObjectCreated?: (notification: string) => void | Promise<void>;
  /** Called with an S3 notification body for every object deleted (the tag index drops it). */
  onObjectRemoved?: (notification: string) => void | Promise<void>;
  /** Called synchronously for each object created, before the request is answered (the journal). */
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
  close(): Promise<void>;
}

interface Store {
  getMetadata(bucket: string, key: string): Promise<{ etag: string; 'content-length': number }>;
}
interface KoaCtx {
  method: string;
  path: string;
  status: number;
  body: unknown;
  type: string;
  request: { headers: Record<string, string | string[] | undefined> };
  get(name: string): string;
}
type Middleware = (ctx: KoaCtx, next: () => Promise<void>) => Promise<void>;

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

export async function startS3Server(options: S3ServerOptions): Promise<RunningS3> {
  const server = new S3rver({
    address: options.host ?? '127.0.0.1',
    port: options.port ?? 0,
    silent: true,
    directory: options.directory,
  }) as S3rver & { middleware: Middleware[]; store: Store };
  // Before s3rver's router (Koa composes `middleware` when the server starts listening).
  server.middleware.splice(1, 0, s3SemanticsMiddleware(server.store, new Set()));
  // First of all: Host, Origin, signature and on-disk paths (local/request-guard.ts).
  const guard = guardS3rver(server, { credentials: options.credentials, listenHost: options.host, trustedOrigins: options.trustedOrigins });

  // Events accepted but not yet handed on: the stack is not idle while any are.
  let pending = 0;
  // biome-ignore lint/suspicious/noExplicitAny: s3rver's event records are untyped; the fields read are checked below
  server.on('event', (event: { Records: any[] }) => {
    const first = event.Records[0];
    if (String(first.eventName).startsWith('ObjectCreated:')) {
      options.onAccepted?.({
        bucket: first.s3.bucket.name,
        key: first.s3.object.key,
        eTag: first.s3.object.eTag || undefined,
        size: first.s3.object.size,
        kind: (String(first.eventName).split(':')[1] as ObjectCreated['kind']) ?? 'Other',
      });
    }
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

  const address = await server.run();
  const port = (address as { port: number }).port;
  guard.ports.add(port);
  const host = options.host ?? '127.0.0.1';
  return {
    endpoint: clientEndpoint(host, port),
    port,
    trustProxyPort: (p) => guard.trustProxyPort(p),
    pendingEvents: () => pending,
    close: () => server.close(),
  };
}

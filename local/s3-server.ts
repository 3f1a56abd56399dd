/**
 * The embedded S3: s3rver (S3 REST over HTTP, objects on disk under the data directory) with two
 * additions that make it behave like S3 where EffiTag depends on it:
 * - If-Match on GET/HEAD and x-amz-copy-source-if-match on CopyObject are enforced (s3rver ignores
 *   them), so the guard against clobbering a newer upload is exercised for real;
 * - object-created events are forwarded as S3 → SQS notifications, keys URL-encoded the AWS way
 *   (`a+b%2Bc.jpg`) and the ETag filled in for Copy events, so the router's decoding is exercised.
 */
import S3rver from 's3rver';
import { encodeS3Key } from '../pipeline/events.ts';

export interface S3ServerOptions {
  host?: string;
  port?: number;
  directory: string;
  /** Called with an S3 notification body for every object created. */
  onObjectCreated?: (notification: string) => void | Promise<void>;
  onError?: (err: unknown) => void;
}

export interface RunningS3 {
  endpoint: string;
  port: number;
  close(): Promise<void>;
}

interface Store { getMetadata(bucket: string, key: string): Promise<{ etag: string; 'content-length': number }> }
interface KoaCtx {
  method: string; path: string; status: number; body: unknown; type: string;
  get(name: string): string;
}
type Middleware = (ctx: KoaCtx, next: () => Promise<void>) => Promise<void>;

const etagOf = (quoted: string) => quoted.replace(/^"|"$/g, '');
const matches = (etag: string, header: string) => header.split(',').map((h) => etagOf(h.trim())).some((h) => h === '*' || h === etag);

function preconditionFailed(ctx: KoaCtx, condition: string): void {
  ctx.status = 412;
  if (ctx.method === 'HEAD') return;
  ctx.type = 'application/xml';
  ctx.body = `<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>PreconditionFailed</Code><Message>At least one of the pre-conditions you specified did not hold</Message><Condition>${condition}</Condition></Error>`;
}

function ifMatchMiddleware(store: Store): Middleware {
  return async (ctx, next) => {
    const copySource = ctx.get('x-amz-copy-source');
    const copyIfMatch = ctx.get('x-amz-copy-source-if-match');
    if (ctx.method === 'PUT' && copySource && copyIfMatch) {
      // Parsed as s3rver parses it (decodeURI), so both sides agree on the key.
      const [path] = decodeURI(copySource).replace(/^\//, '').split('?');
      const [bucket, ...key] = path.split('/');
      const meta = await store.getMetadata(bucket, key.join('/')).catch(() => undefined);
      if (!meta || !matches(etagOf(meta.etag), copyIfMatch)) return preconditionFailed(ctx, 'x-amz-copy-source-If-Match');
    }
    const ifMatch = ctx.get('if-match');
    if ((ctx.method === 'GET' || ctx.method === 'HEAD') && ifMatch) {
      const [, bucket, ...key] = ctx.path.split('/');
      if (bucket && key.length) {
        const meta = await store.getMetadata(bucket, key.map(decodeURIComponent).join('/')).catch(() => undefined);
        if (meta && !matches(etagOf(meta.etag), ifMatch)) return preconditionFailed(ctx, 'If-Match');
      }
    }
    await next();
  };
}

export async function startS3Server(options: S3ServerOptions): Promise<RunningS3> {
  const server = new S3rver({
    address: options.host ?? '127.0.0.1', port: options.port ?? 0, silent: true, directory: options.directory,
  }) as S3rver & { middleware: Middleware[]; store: Store };
  // Before s3rver's router (Koa composes `middleware` when the server starts listening).
  server.middleware.splice(1, 0, ifMatchMiddleware(server.store));

  server.on('event', (event: { Records: any[] }) => {
    void (async () => {
      const record = event.Records[0];
      if (!String(record.eventName).startsWith('ObjectCreated:')) return;
      const key: string = record.s3.object.key;
      if (!record.s3.object.eTag || record.s3.object.size === undefined) {
        const meta = await server.store.getMetadata(record.s3.bucket.name, key);
        record.s3.object.eTag = etagOf(meta.etag);
        record.s3.object.size = Number(meta['content-length']);
      }
      record.s3.object.key = encodeS3Key(key);
      await options.onObjectCreated?.(JSON.stringify({ Records: [record] }));
    })().catch((err) => options.onError?.(err));
  });

  const address = await server.run();
  const port = (address as { port: number }).port;
  const host = options.host ?? '127.0.0.1';
  return {
    endpoint: `http://${host}:${port}`,
    port,
    close: () => server.close(),
  };
}

/**
 * The embedded stack's front door: every request to the S3, SQS and DynamoDB stand-ins passes here
 * before the stand-in sees it, and is answered with its service's own error unless
 * - its Host is this machine's loopback name on the server's port (a page using DNS rebinding sends
 *   its own name; an IP-literal Host cannot be rebound), and
 * - it carries no Origin, or the stack's own gallery's (a browser names the page behind every
 *   cross-origin call and every form post; the SDK and the AWS CLI send none), and
 * - it is signed (AWS Signature V4, local/sigv4.ts) with the stack's own credentials.
 * Listening on loopback keeps other machines out, not the pages of the browser on this machine:
 * with these checks a hostile page can neither write (it cannot sign) nor read (no CORS grant).
 *
 * For S3 it also refuses what would reach outside the bucket's folder on disk: a bucket name or a key
 * with a `.` or `..` path segment, a copy source with one, or a multipart id that is not s3rver's
 * (s3rver joins them into file paths as they are; S3 itself would store such keys verbatim).
 *
 * `foreignRequestRefusal` is the Host/Origin part alone, for any loopback server (the gallery).
 */
import { messageOf } from '../base/errors.ts';
import type { IncomingHttpHeaders, IncomingMessage, Server, ServerResponse } from 'node:http';
import { createRequire } from 'node:module';
import { isIP } from 'node:net';
import { Readable } from 'node:stream';
import type { EmbeddedCredentials } from '../pipeline/aws/local-credentials.ts';
import { checkSignature, type ReceivedRequest, type Service, type SignatureFailure } from './sigv4.ts';

/** Who may talk to a loopback server from where. */
export interface LocalOriginPolicy {
  /** Ports the server is reached on: its own, and any loopback proxy relaying to it (tests' fault proxies). */
  ports: Iterable<number>;
  /** The address it listens on: a specific IP is also accepted as Host; 0.0.0.0 or :: accept any IP literal. */
  listenHost?: string;
  /** Origins whose pages may call it (e.g. `http://127.0.0.1:4570`, the gallery); any other Origin is refused. */
  trustedOrigins?: Iterable<string>;
}

const LOOPBACK_NAMES = new Set(['127.0.0.1', 'localhost', '[::1]']);

/** `name` and port of a Host header (`[::1]:4568` → `[::1]`, 4568); port 80 when none is given. */
function splitHost(host: string): { name: string; port: number } | undefined {
  const m = /^(\[[0-9a-f:.]+\]|[^:[\]]+)(?::(\d{1,5}))?$/.exec(host.trim().toLowerCase());
  return m ? { name: m[1], port: m[2] === undefined ? 80 : Number(m[2]) } : undefined;
}

const bracketed = (address: string) => (address.includes(':') ? `[${address}]` : address);

/**
 * Why a request to a loopback server must be refused because of where it comes from, or undefined:
 * its Host is not a loopback name (or the listen address) with one of the server's ports, or it
 * carries an Origin other than a trusted one.
 */
export function foreignRequestRefusal(headers: IncomingHttpHeaders, policy: LocalOriginPolicy): string | undefined {
  const host = headers.host ?? '';
  const parsed = splitHost(host);
  const listen = policy.listenHost?.toLowerCase();
  const wildcard = listen === '0.0.0.0' || listen === '::';
  const nameOk =
    parsed !== undefined &&
    (LOOPBACK_NAMES.has(parsed.name) ||
      // fauxqs' queue URLs (`sqs.<region>.localhost`): *.localhost is loopback by RFC 6761, no DNS can rebind it.
      parsed.name.endsWith('.localhost') ||
      (listen !== undefined && !wildcard && parsed.name === bracketed(listen)) ||
      (wildcard && isIP(parsed.name.replace(/^\[|\]$/g, '')) !== 0));
  if (!nameOk || !new Set(policy.ports).has(parsed.port))
    return `Host "${host}" is not this server's address: use http://127.0.0.1:${[...policy.ports][0]}`;
  const origin = headers.origin;
  if (origin !== undefined && !new Set([...(policy.trustedOrigins ?? [])].map((o) => o.toLowerCase())).has(origin.toLowerCase()))
    return `requests from pages of ${origin} are refused`;
  return undefined;
}

/** A refusal in the words of the service that gives it. */
export interface Refusal {
  status: number;
  code: string;
  message: string;
}

const S3_CODES: Record<SignatureFailure['kind'], [number, string]> = {
  missing: [403, 'AccessDenied'],
  malformed: [400, 'AuthorizationHeaderMalformed'],
  'unknown-key': [403, 'InvalidAccessKeyId'],
  mismatch: [403, 'SignatureDoesNotMatch'],
  skewed: [403, 'RequestTimeTooSkewed'],
  expired: [403, 'AccessDenied'],
};
/** The JSON-protocol services' codes (DynamoDB's and SQS's names for the same failures). */
const JSON_CODES: Record<SignatureFailure['kind'], [number, string]> = {
  missing: [403, 'MissingAuthenticationTokenException'],
  malformed: [400, 'IncompleteSignatureException'],
  'unknown-key': [403, 'UnrecognizedClientException'],
  mismatch: [403, 'InvalidSignatureException'],
  skewed: [403, 'InvalidSignatureException'],
  expired: [403, 'InvalidSignatureException'],
};

/** The key id of an S3 Signature V2 request (`Authorization: AWS id:sig`, or `?AWSAccessKeyId=…&Signature=…`), else undefined. */
function sigV2AccessKeyId(req: ReceivedRequest): string | undefined {
  const auth = req.headers.authorization;
  if (typeof auth === 'string' && /^AWS\s/.test(auth)) return /^AWS\s+([^:]*):/.exec(auth)?.[1] ?? '';
  const query = new URLSearchParams(req.url.split('?')[1] ?? '');
  return query.has('Signature') ? (query.get('AWSAccessKeyId') ?? '') : undefined;
}

/** The checks of one stand-in; the stack makes one per server. */
export class RequestGuard {
  readonly ports = new Set<number>();
  constructor(
    readonly options: {
      service: Service;
      credentials: EmbeddedCredentials;
      listenHost?: string;
      trustedOrigins?: readonly string[];
    },
  ) {
    if (!options.credentials?.accessKeyId || !options.credentials.secretAccessKey)
      throw new Error(`the ${options.service} stand-in needs the credentials it is to accept`);
  }

  /** Requests relayed by a proxy on this loopback port carry its Host, which they signed: accept it. */
  trustProxyPort(port: number): void {
    this.ports.add(port);
  }

  /** Where a request comes from (Host, Origin): checked before its body is read. */
  originRefusal(headers: IncomingHttpHeaders): Refusal | undefined {
    const reason = foreignRequestRefusal(headers, {
      ports: this.ports,
      listenHost: this.options.listenHost,
      trustedOrigins: this.options.trustedOrigins,
    });
    if (!reason) return undefined;
    return { status: 403, code: this.options.service === 's3' ? 'AccessDenied' : 'AccessDeniedException', message: reason };
  }

  /** Host, Origin and signature; `req.body` must be the whole body for SQS and DynamoDB. */
  async refusal(req: ReceivedRequest): Promise<Refusal | undefined> {
    const foreign = this.originRefusal(req.headers);
    if (foreign) return foreign;
    if (this.options.service === 's3') {
      // Signature V2 (AWS CLI v1's `s3 presign` links): the key id is checked here; the signature and
      // expiry by s3rver's own V2 check, which runs next (V4 it does not check, hence checkSignature).
      const v2 = sigV2AccessKeyId(req);
      if (v2 !== undefined)
        return v2 === this.options.credentials.accessKeyId
          ? undefined
          : { status: 403, code: 'InvalidAccessKeyId', message: `the access key id ${v2} is not this embedded stack's` };
    }
    const failure = await checkSignature(req, { credentials: this.options.credentials, service: this.options.service });
    if (!failure) return undefined;
    const [status, code] = (this.options.service === 's3' ? S3_CODES : JSON_CODES)[failure.kind];
    return { status, code, message: failure.message };
  }

  /** A cheap look before buffering a body: does the request at least name this stack's access key? */
  namesOurKey(headers: IncomingHttpHeaders): boolean {
    return (headers.authorization ?? '').includes(`Credential=${this.options.credentials.accessKeyId}/`);
  }
}

// ---------------------------------------------------------------------------------------------
// S3 (s3rver, a Koa app)

type S3ErrorClass = new (code: string, message: string, detail?: Record<string, string>) => Error & { status: number };
/** s3rver's error: rendered by its error handler as S3's XML, with S3's status for the code. */
const S3Error = createRequire(import.meta.url)('s3rver/lib/models/error') as S3ErrorClass;

const BUCKET_NAME = /^[a-z0-9][a-z0-9._-]{1,254}$/i;

/** Why an S3 key cannot be stored under its bucket's folder, or undefined. */
export function unsafeKey(key: string): string | undefined {
  if (key.includes('\0')) return 'Object keys with a NUL character are not supported by the embedded S3';
  if (key.split('/').some((segment) => segment === '.' || segment === '..'))
    return `The embedded S3 does not store keys with a "." or ".." path segment ("${key}"): it keeps objects as files under the bucket's folder`;
  return undefined;
}

export function unsafeBucket(bucket: string): string | undefined {
  return BUCKET_NAME.test(bucket) && !bucket.includes('..') ? undefined : `The specified bucket is not valid: "${bucket}"`;
}

/** Why this S3 request names a path outside its bucket's folder (bucket, key, copy source, multipart ids), or undefined. */
export function s3PathRefusal(url: string, headers: IncomingHttpHeaders): Refusal | undefined {
  const q = url.indexOf('?');
  const [, bucketPart = '', ...keyParts] = (q < 0 ? url : url.slice(0, q)).split('/');
  const decode = (s: string) => {
    try {
      return decodeURIComponent(s);
    } catch {
      return undefined;
    }
  };
  const bucket = decode(bucketPart);
  const key = decode(keyParts.join('/'));
  if (bucket === undefined || key === undefined) return { status: 400, code: 'InvalidURI', message: "Couldn't parse the specified URI." };
  if (bucket) {
    const bad = unsafeBucket(bucket);
    if (bad) return { status: 400, code: 'InvalidBucketName', message: bad };
  }
  const badKey = key ? unsafeKey(key) : undefined;
  if (badKey) return { status: 400, code: 'InvalidArgument', message: badKey };
  const copySource = headers['x-amz-copy-source'];
  if (typeof copySource === 'string') {
    const [sourceBucket = '', ...sourceKey] = copySource.replace(/^\//, '').split('?')[0].split('/').map(decode);
    if (sourceBucket === undefined || sourceKey.some((s) => s === undefined))
      return { status: 400, code: 'InvalidArgument', message: 'x-amz-copy-source is not valid percent-encoding' };
    const bad = unsafeBucket(sourceBucket) ?? unsafeKey(sourceKey.join('/'));
    if (bad) return { status: 400, code: 'InvalidArgument', message: `x-amz-copy-source: ${bad}` };
  }
  const params = new URLSearchParams(q < 0 ? '' : url.slice(q + 1));
  const uploadId = params.get('uploadId');
  if (uploadId !== null && !/^[A-Za-z0-9]{1,128}$/.test(uploadId))
    return { status: 404, code: 'NoSuchUpload', message: 'The specified upload does not exist.' };
  const part = params.get('partNumber');
  if (part !== null && !/^\d{1,5}$/.test(part)) return { status: 400, code: 'InvalidArgument', message: 'Part number must be an integer' };
  return undefined;
}

interface KoaContext {
  method: string;
  req: IncomingMessage;
}

/** The guard as Koa middleware, first in s3rver's chain. */
export function s3GuardMiddleware(guard: RequestGuard): (ctx: KoaContext, next: () => Promise<void>) => Promise<void> {
  return async (ctx, next) => {
    const req = ctx.req;
    const refused =
      (await guard.refusal({ method: req.method ?? 'GET', url: req.url ?? '/', headers: req.headers })) ??
      s3PathRefusal(req.url ?? '/', req.headers);
    if (refused) throw new S3Error(refused.code, refused.message);
    await next();
  };
}

/** s3rver's accounts: it refuses a signed request whose key id is not one of them (V4 signatures it takes on trust). */
const s3rverAccounts = createRequire(import.meta.url)('s3rver/lib/models/account') as {
  DUMMY_ACCOUNT: { createKeyPair(accessKeyId: string, secret: string): void };
};

/**
 * Puts the guard first in s3rver's Koa chain and confines its store; returns the guard (its ports
 * grow as the server learns its own and any proxy's).
 */
export function guardS3rver(
  server: { middleware: unknown[]; store: unknown },
  o: { credentials: EmbeddedCredentials; listenHost?: string; trustedOrigins?: readonly string[] },
): RequestGuard {
  const guard = new RequestGuard({ service: 's3', ...o });
  server.middleware.unshift(s3GuardMiddleware(guard));
  confineStore(server.store as FilesystemStore);
  s3rverAccounts.DUMMY_ACCOUNT.createKeyPair(o.credentials.accessKeyId, o.credentials.secretAccessKey);
  return guard;
}

interface FilesystemStore {
  getBucketPath(bucket: string): string;
  getResourcePath(bucket: string, key?: string, resource?: string): string;
}

/**
 * The last line: s3rver's store refuses to make a path from an unsafe bucket or key, wherever it
 * came from (a DeleteObjects body lists keys the URL checks never see).
 */
export function confineStore(store: FilesystemStore): void {
  const bucketPath = store.getBucketPath.bind(store);
  const resourcePath = store.getResourcePath.bind(store);
  store.getBucketPath = (bucket) => {
    const bad = unsafeBucket(bucket);
    if (bad) throw new S3Error('InvalidBucketName', bad);
    return bucketPath(bucket);
  };
  store.getResourcePath = (bucket, key, resource) => {
    const bad = unsafeBucket(bucket) ?? (key ? unsafeKey(key) : undefined);
    if (bad) throw new S3Error('InvalidArgument', bad);
    return resourcePath(bucket, key, resource);
  };
}

// ---------------------------------------------------------------------------------------------
// SQS (fauxqs, a Fastify app) and DynamoDB (dynalite, a plain http handler): JSON protocols, whose
// signatures cover the body, so it is read (up to a bound) and checked before the stand-in parses it.

const MAX_BODY_BYTES = 16 * 1024 * 1024;

function jsonError(refusal: Refusal): string {
  return JSON.stringify({ __type: `com.amazon.coral.service#${refusal.code}`, message: refusal.message });
}

async function readBody(stream: NodeJS.ReadableStream, limit = MAX_BODY_BYTES): Promise<Buffer | undefined> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of stream) {
    size += (chunk as Buffer).length;
    if (size > limit) return undefined;
    chunks.push(chunk as Buffer);
  }
  return Buffer.concat(chunks);
}

const TOO_LARGE: Refusal = { status: 413, code: 'RequestEntityTooLarge', message: `request bodies are limited to ${MAX_BODY_BYTES} bytes` };

interface FastifyLike {
  addHook(
    name: 'preParsing',
    hook: (
      request: { raw: IncomingMessage },
      reply: { code(n: number): unknown; header(k: string, v: string): unknown; send(b: string): unknown; sent: boolean },
      payload: NodeJS.ReadableStream,
    ) => Promise<NodeJS.ReadableStream | undefined>,
  ): unknown;
}

/** The guard as a Fastify preParsing hook (fauxqs): the payload is read, checked, then handed on. */
export function guardFastify(app: FastifyLike, guard: RequestGuard): void {
  app.addHook('preParsing', async (request, reply, payload) => {
    const req = request.raw;
    let refused = guard.originRefusal(req.headers);
    let body: Buffer | undefined;
    if (!refused) {
      body = guard.namesOurKey(req.headers) ? await readBody(payload) : Buffer.alloc(0);
      refused = body ? await guard.refusal({ method: req.method ?? 'POST', url: req.url ?? '/', headers: req.headers, body }) : TOO_LARGE;
    }
    if (refused) {
      reply.code(refused.status);
      reply.header('content-type', 'application/x-amz-json-1.0');
      reply.header('x-amzn-query-error', `${refused.code};Sender`);
      reply.send(jsonError(refused));
      return undefined;
    }
    return Object.assign(Readable.from(body!.length ? [body!] : []), { receivedEncodedLength: body!.length });
  });
}

/**
 * A plain Node server behind its guard (guardHttpServer), listening: on `options.port` (0: any free
 * one) of `options.host` (default 127.0.0.1). The guard accepts its own port once it is known.
 */
export async function listenGuarded(
  server: Server,
  service: Service,
  options: { host?: string; port?: number; credentials: EmbeddedCredentials; trustedOrigins?: readonly string[] },
): Promise<{ guard: RequestGuard; port: number }> {
  const guard = new RequestGuard({
    service,
    credentials: options.credentials,
    listenHost: options.host,
    trustedOrigins: options.trustedOrigins,
  });
  guardHttpServer(server, guard);
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(options.port ?? 0, options.host ?? '127.0.0.1', () => resolve());
  });
  const port = (server.address() as { port: number }).port;
  guard.ports.add(port);
  return { guard, port };
}

/**
 * The guard in front of a plain Node request handler (dynalite): the body is read and checked, then
 * replayed to the handler. A trusted page's Origin is named in Access-Control-Allow-Origin instead
 * of dynalite's `*`.
 */
export function guardHttpServer(server: Server, guard: RequestGuard): void {
  const handlers = server.listeners('request') as ((req: IncomingMessage, res: ServerResponse) => void)[];
  server.removeAllListeners('request');
  server.on('request', (req: IncomingMessage, res: ServerResponse) => {
    void (async () => {
      let refused = guard.originRefusal(req.headers);
      let body: Buffer | undefined;
      if (!refused) {
        body = guard.namesOurKey(req.headers) ? await readBody(req) : Buffer.alloc(0);
        refused = body ? await guard.refusal({ method: req.method ?? 'POST', url: req.url ?? '/', headers: req.headers, body }) : TOO_LARGE;
      }
      if (refused) {
        req.resume();
        const text = jsonError(refused);
        res.writeHead(refused.status, { 'content-type': 'application/x-amz-json-1.0', 'content-length': Buffer.byteLength(text) });
        res.end(text);
        return;
      }
      const origin = req.headers.origin;
      if (origin) {
        const setHeader = res.setHeader.bind(res);
        res.setHeader = (name, value) => setHeader(name, name.toLowerCase() === 'access-control-allow-origin' ? origin : value);
      }
      const replay = Object.assign(Readable.from(body!.length ? [body!] : []), {
        headers: req.headers,
        method: req.method,
        url: req.url,
        httpVersion: req.httpVersion,
        socket: req.socket,
      }) as unknown as IncomingMessage;
      for (const handler of handlers) handler.call(server, replay, res);
    })().catch((err) => {
      if (!res.headersSent) res.writeHead(500, { 'content-type': 'application/x-amz-json-1.0' });
      res.end(jsonError({ status: 500, code: 'InternalFailure', message: messageOf(err) }));
    });
  });
}

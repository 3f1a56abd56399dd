/**
 * Checks an AWS Signature Version 4 the way AWS does, for the embedded stand-ins: parse what the
 * client says it signed (the Authorization header, or a presigned URL's X-Amz-* query), rebuild that
 * request and sign it again with the stack's own credentials using the SDK's signer
 * (@smithy/signature-v4, the code the AWS SDK signs with: its canonical request, header and query
 * encoding and key derivation are the reference, not a copy), then compare the signatures in
 * constant time. Pure: no I/O; the servers' guards (local/request-guard.ts) turn a failure into
 * their service's error.
 */
import { createHash, createHmac, type Hash, type Hmac, timingSafeEqual } from 'node:crypto';
import type { IncomingHttpHeaders } from 'node:http';
import { SignatureV4 } from '@smithy/signature-v4';
import type { EmbeddedCredentials } from '../pipeline/aws/local-credentials.ts';

export type Service = 's3' | 'sqs' | 'dynamodb' | 's3vectors';

/** A request as received: nothing decoded or normalised, since the signature covers the bytes sent. */
export interface ReceivedRequest {
  method: string;
  /** The request target as sent (`/bucket/a%20b?x=1`). */
  url: string;
  /** Header names in lower case (Node's `req.headers`). */
  headers: IncomingHttpHeaders;
  /** The body, for services whose signature covers it (SQS, DynamoDB); S3 signs its x-amz-content-sha256 header instead. */
  body?: Uint8Array;
}

export type SignatureFailure =
  | { kind: 'missing'; message: string }
  | { kind: 'malformed'; message: string }
  | { kind: 'unknown-key'; message: string; accessKeyId: string }
  | { kind: 'mismatch'; message: string }
  | { kind: 'skewed'; message: string }
  | { kind: 'expired'; message: string };

export interface SignatureCheck {
  credentials: EmbeddedCredentials;
  service: Service;
  /** Default: the clock. */
  now?: Date;
  /** How far a signed request's time may be from now (AWS: 15 minutes). */
  maxSkewMs?: number;
}

/** The longest validity a presigned URL may claim (AWS: 7 days). */
const MAX_EXPIRES_S = 7 * 24 * 3600;
const ALGORITHM = 'AWS4-HMAC-SHA256';

/** node:crypto in the shape the signer takes (SHA-256, or HMAC-SHA-256 when given a key). */
export class NodeSha256 {
  private readonly hash: Hash | Hmac;
  constructor(secret?: string | ArrayBuffer | ArrayBufferView) {
    this.hash =
      secret === undefined
        ? createHash('sha256')
        : createHmac('sha256', typeof secret === 'string' ? secret : Buffer.from(secret as ArrayBuffer));
  }
  update(data: string | ArrayBuffer | ArrayBufferView): void {
    this.hash.update(typeof data === 'string' ? data : Buffer.from(data as ArrayBuffer));
  }
  async digest(): Promise<Uint8Array> {
    return new Uint8Array(this.hash.digest());
  }
}

/** `20250102T030405Z` → a Date, or undefined if it is not one. */
function amzDate(value: string | undefined): Date | undefined {
  const m = /^(\d{4})(\d{2})(\d{2})T(\d{2})(\d{2})(\d{2})Z$/.exec(value ?? '');
  if (!m) return undefined;
  const [, y, mo, d, h, mi, s] = m.map(Number);
  const date = new Date(Date.UTC(y, mo - 1, d, h, mi, s));
  return Number.isNaN(date.getTime()) ? undefined : date;
}

/** The query's parameters decoded (each value a string, repeated ones a list), as the signer encodes them again. */
function parseQuery(query: string): Record<string, string | string[]> | undefined {
  const out: Record<string, string | string[]> = {};
  for (const part of query.split('&')) {
    if (!part) continue;
    const eq = part.indexOf('=');
    let key: string;
    let value: string;
    try {
      key = decodeURIComponent(eq < 0 ? part : part.slice(0, eq));
      value = eq < 0 ? '' : decodeURIComponent(part.slice(eq + 1));
    } catch {
      return undefined;
    }
    const had = out[key];
    out[key] = had === undefined ? value : [...(Array.isArray(had) ? had : [had]), value];
  }
  return out;
}

const single = (v: string | string[] | undefined) => (Array.isArray(v) ? undefined : v);

interface Claim {
  accessKeyId: string;
  date: string;
  region: string;
  service: string;
  signedHeaders: string[];
  signature: string;
}

/** `AKID/20250102/us-east-1/s3/aws4_request` and the rest of a claim, checked for shape. */
function claim(credential: string, signedHeaders: string, signature: string): Claim | string {
  const parts = credential.split('/');
  if (parts.length !== 5 || parts[4] !== 'aws4_request' || !/^\d{8}$/.test(parts[1]) || !parts[2] || !parts[0])
    return `the credential "${credential}" is not ACCESS_KEY_ID/YYYYMMDD/REGION/SERVICE/aws4_request`;
  if (!/^[0-9a-f]{64}$/.test(signature)) return 'the signature is not 64 hexadecimal digits';
  const names = signedHeaders.split(';');
  if (!names.every((n) => /^[a-z0-9!#$%&'*+.^_`|~-]+$/.test(n)))
    return `SignedHeaders "${signedHeaders}" is not a list of lower-case header names`;
  return { accessKeyId: parts[0], date: parts[1], region: parts[2], service: parts[3], signedHeaders: names, signature };
}

/** Header auth: `AWS4-HMAC-SHA256 Credential=…, SignedHeaders=…, Signature=…`. */
function headerClaim(authorization: string): Claim | string {
  const m = /^AWS4-HMAC-SHA256\s+(.+)$/.exec(authorization.trim());
  if (!m) return `only ${ALGORITHM} signatures are accepted`;
  const fields = new Map<string, string>();
  for (const item of m[1].split(',')) {
    const eq = item.indexOf('=');
    if (eq > 0) fields.set(item.slice(0, eq).trim(), item.slice(eq + 1).trim());
  }
  const [credential, signedHeaders, signature] = ['Credential', 'SignedHeaders', 'Signature'].map((k) => fields.get(k));
  if (!credential || !signedHeaders || !signature) return 'the Authorization header needs Credential, SignedHeaders and Signature';
  return claim(credential, signedHeaders, signature);
}

const sameHex = (a: string, b: string) => a.length === b.length && timingSafeEqual(Buffer.from(a), Buffer.from(b));

/**
 * Why `req` is not signed by `check.credentials` for `check.service`, or undefined when it is.
 * Header auth (what the SDK and the AWS CLI send) for every service; presigned URLs (query auth,
 * the gallery's and `effitag`'s links) for S3 only. For S3 the payload hash is the signed
 * x-amz-content-sha256 header (a digest, UNSIGNED-PAYLOAD, or a STREAMING-… mode, whose seed
 * signature this checks; chunk signatures are not); for SQS and DynamoDB it is the body's.
 */
export async function checkSignature(req: ReceivedRequest, check: SignatureCheck): Promise<SignatureFailure | undefined> {
  const q = req.url.indexOf('?');
  const path = q < 0 ? req.url : req.url.slice(0, q);
  const query = parseQuery(q < 0 ? '' : req.url.slice(q + 1));
  if (!query) return { kind: 'malformed', message: 'the query string is not valid percent-encoding' };
  const authorization = single(req.headers.authorization);
  const presigned = 'X-Amz-Algorithm' in query || 'X-Amz-Signature' in query;
  if (!authorization && !presigned)
    return { kind: 'missing', message: "the request is not signed: sign it with the embedded stack's credentials (printed at its start)" };
  if (authorization && presigned)
    return { kind: 'malformed', message: 'a request is signed either by its Authorization header or its query, not both' };
  if (presigned && check.service !== 's3') return { kind: 'malformed', message: 'presigned requests are accepted by S3 only' };

  const q1 = (name: string) => single(query[name]);
  const parsed = authorization
    ? headerClaim(authorization)
    : q1('X-Amz-Algorithm') !== ALGORITHM
      ? `only ${ALGORITHM} presigned URLs are accepted`
      : claim(q1('X-Amz-Credential') ?? '', q1('X-Amz-SignedHeaders') ?? '', q1('X-Amz-Signature') ?? '');
  if (typeof parsed === 'string') return { kind: 'malformed', message: parsed };
  if (parsed.accessKeyId !== check.credentials.accessKeyId)
    return {
      kind: 'unknown-key',
      accessKeyId: parsed.accessKeyId,
      message: `the access key id ${parsed.accessKeyId} is not this embedded stack's (its credentials are printed at its start)`,
    };
  if (parsed.service !== check.service)
    return { kind: 'malformed', message: `the credential is scoped to the service "${parsed.service}"; this server is ${check.service}` };
  if (!parsed.signedHeaders.includes('host')) return { kind: 'malformed', message: 'the Host header must be signed' };

  const dateText = authorization ? single(req.headers['x-amz-date']) : q1('X-Amz-Date');
  const signedAt = amzDate(dateText);
  if (!signedAt) return { kind: 'malformed', message: 'X-Amz-Date must be given as YYYYMMDDTHHMMSSZ' };
  if (dateText!.slice(0, 8) !== parsed.date) return { kind: 'malformed', message: "the credential's date is not X-Amz-Date's" };
  const now = (check.now ?? new Date()).getTime();
  const skew = check.maxSkewMs ?? 15 * 60_000;
  let expiresIn = 0;
  if (authorization) {
    if (Math.abs(now - signedAt.getTime()) > skew)
      return {
        kind: 'skewed',
        message: `the request was signed at ${signedAt.toISOString()}, more than ${skew / 60_000} minutes from the server's time`,
      };
  } else {
    expiresIn = Number(q1('X-Amz-Expires'));
    if (!Number.isInteger(expiresIn) || expiresIn < 1 || expiresIn > MAX_EXPIRES_S)
      return { kind: 'malformed', message: `X-Amz-Expires must be a whole number of seconds from 1 to ${MAX_EXPIRES_S}` };
    if (signedAt.getTime() - skew > now) return { kind: 'skewed', message: 'the presigned URL is not valid yet' };
    if (signedAt.getTime() + expiresIn * 1000 < now) return { kind: 'expired', message: 'the presigned URL has expired' };
  }

  // What the client signed: the signed headers as received, and for S3 the payload mode it declared.
  const headers: Record<string, string> = {};
  for (const name of parsed.signedHeaders) {
    const value = req.headers[name];
    if (value === undefined) return { kind: 'malformed', message: `the signed header ${name} is missing` };
    headers[name] = Array.isArray(value) ? value.join(',') : value;
  }
  if (check.service === 's3' && authorization && !headers['x-amz-content-sha256'])
    return { kind: 'malformed', message: 'S3 requests must sign an x-amz-content-sha256 header' };
  const signer = new SignatureV4({
    credentials: check.credentials,
    region: parsed.region,
    service: parsed.service,
    sha256: NodeSha256,
    uriEscapePath: check.service !== 's3',
    applyChecksum: false,
  });
  const host = headers.host ?? '';
  const request = {
    method: req.method,
    protocol: 'http:',
    hostname: host,
    path,
    query,
    headers,
    body: check.service === 's3' ? undefined : req.body,
  };
  const signedNames = new Set(parsed.signedHeaders);
  let expected: string;
  if (authorization) {
    const signed = await signer.sign(request, { signingDate: signedAt, signableHeaders: signedNames });
    expected = /Signature=([0-9a-f]+)/.exec(signed.headers.authorization)?.[1] ?? '';
  } else {
    const rest = Object.fromEntries(Object.entries(query).filter(([k]) => k !== 'X-Amz-Signature'));
    // A presigned S3 URL's payload is always unsigned; the header only feeds the signer's payload hash.
    const presignedRequest = { ...request, query: rest, headers: { ...headers, 'x-amz-content-sha256': 'UNSIGNED-PAYLOAD' } };
    const signedHeaderSet = new Set([...signedNames].filter((n) => n !== 'x-amz-content-sha256'));
    const signed = await signer.presign(presignedRequest, {
      signingDate: signedAt,
      expiresIn,
      signableHeaders: signedNames,
      unsignableHeaders: signedNames.has('x-amz-content-sha256') ? undefined : new Set(['x-amz-content-sha256']),
      unhoistableHeaders: new Set([...signedHeaderSet, 'x-amz-content-sha256']),
    });
    expected = String(signed.query?.['X-Amz-Signature'] ?? '');
  }
  if (!sameHex(expected, parsed.signature))
    return { kind: 'mismatch', message: 'the request signature we calculated does not match the signature you provided' };
  return undefined;
}

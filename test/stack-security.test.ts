/**
 * The embedded stack answers only its owner: requests signed with the stack's own credentials
 * (random, per data directory, kept owner-only in it), from a loopback Host, without another page's
 * Origin; and no S3 key, whatever its dots, is stored outside the bucket's folder.
 * - a hostile page in Chromium (another loopback origin) tries a form upload, a no-cors DeleteObjects,
 *   a DynamoDB Scan with a made-up signature and an SQS call: each refused, nothing changed;
 * - raw HTTP: a foreign Host, no signature, a wrong signature, another stack's credentials, an
 *   expired presigned URL: refused with the service's error (S3's XML, the JSON services' __type);
 * - raw signed requests with `..` in keys, bucket names, copy sources, DeleteObjects bodies and
 *   multipart ids: refused, and the file system checked (the SDK would normalise such paths);
 * - the credentials file: 0600, reused at the next start, read by `effitag` commands.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { createHmac } from 'node:crypto';
import { existsSync, readdirSync, statSync } from 'node:fs';
import { createServer, request, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { promisify } from 'node:util';
import { GetObjectCommand, ListObjectsV2Command, S3Client } from '@aws-sdk/client-s3';
import { ListQueuesCommand } from '@aws-sdk/client-sqs';
import { getSignedUrl } from '@aws-sdk/s3-request-presigner';
import { SignatureV4 } from '@smithy/signature-v4';
import { chromium, type Browser } from 'playwright-core';
import { NodeSha256 } from '../local/sigv4.ts';
import type { EmbeddedStack } from '../local/stack.ts';
import { s3Client } from '../pipeline/aws/clients.ts';
import {
  credentialsFile,
  ensureEmbeddedCredentials,
  generateCredentials,
  type EmbeddedCredentials,
} from '../pipeline/aws/local-credentials.ts';
import { INDEX_TABLE } from '../pipeline/aws/wiring.ts';
import { CHROMIUM, CHROMIUM_ARGS } from './support/chromium.ts';
import { tempDir } from './support/fixtures.ts';
import { head, put, startTestStack } from './support/local-stack.ts';

const TIERS = {
  version: 1,
  tiers: { main: { variants: ['b0'], compute: { target: 'lambda-cpu', memoryMb: 2048 }, engine: 'ort', batchSize: 4 } },
  routing: { default: { tier: 'main' } },
};

interface Answer {
  status: number;
  text: string;
  headers: Record<string, string | string[] | undefined>;
}

/** One HTTP request exactly as given (path unnormalised), signed with SigV4 unless `credentials` is null. */
async function raw(
  endpoint: string,
  o: {
    method: string;
    path: string;
    service: 's3' | 'sqs' | 'dynamodb';
    credentials: EmbeddedCredentials | null;
    headers?: Record<string, string>;
    body?: string;
    host?: string;
    signedAt?: Date;
  },
): Promise<Answer> {
  const url = new URL(endpoint);
  const [path, query = ''] = o.path.split('?');
  const headers: Record<string, string> = { host: o.host ?? url.host, ...o.headers };
  if (o.service === 's3') headers['x-amz-content-sha256'] = 'UNSIGNED-PAYLOAD';
  if (o.credentials) {
    const signer = new SignatureV4({
      credentials: o.credentials,
      region: 'us-east-1',
      service: o.service,
      sha256: NodeSha256,
      uriEscapePath: o.service !== 's3',
      applyChecksum: false,
    });
    const q: Record<string, string> = {};
    for (const part of query.split('&').filter(Boolean)) {
      const [k, v = ''] = part.split('=');
      q[decodeURIComponent(k)] = decodeURIComponent(v);
    }
    const signed = await signer.sign(
      {
        method: o.method,
        protocol: 'http:',
        hostname: url.hostname,
        path,
        query: q,
        headers,
        body: o.body,
      },
      { signingDate: o.signedAt },
    );
    Object.assign(headers, signed.headers);
  }
  return new Promise((resolve, reject) => {
    const req = request({ host: url.hostname, port: url.port, method: o.method, path: o.path, headers }, (res) => {
      let text = '';
      res.on('data', (d) => {
        text += d;
      });
      res.on('end', () => resolve({ status: res.statusCode!, text, headers: res.headers }));
    });
    req.on('error', reject);
    req.end(o.body);
  });
}

const s3Code = (a: Answer) => /<Code>([^<]+)<\/Code>/.exec(a.text)?.[1];
const jsonCode = (a: Answer) =>
  String(JSON.parse(a.text).__type ?? '')
    .split('#')
    .pop();

/** Every file under `dir`, recursively (relative paths). */
function filesUnder(dir: string, base = dir): string[] {
  if (!existsSync(dir)) return [];
  return readdirSync(dir).flatMap((name) => {
    const p = join(dir, name);
    return statSync(p).isDirectory() ? filesUnder(p, base) : [p.slice(base.length + 1)];
  });
}

/** The one page the stand-ins take calls from (the stack's gallery, as `effitag local` passes it). */
const GALLERY = 'http://127.0.0.1:4570';

describe('the embedded stack answers only its owner', () => {
  let stack: EmbeddedStack;
  let root: string; // the folder holding the data directory (and, beside it, the index and journal)
  let dataDir: string;

  before(async () => {
    root = await tempDir('effitag-security-');
    dataDir = join(root, 'data');
    ({ stack } = await startTestStack(TIERS, { dataDir, runRouter: false, runWorkers: () => false, trustedOrigins: [GALLERY] }));
  });
  after(async () => {
    await stack?.stop();
  });

  it('keeps its credentials owner-only in the data directory, and reuses them at the next start', async () => {
    const file = credentialsFile(dataDir);
    assert.equal(statSync(file).mode & 0o777, 0o600);
    const { accessKeyId, secretAccessKey } = stack.endpoints.credentials!;
    assert.match(accessKeyId, /^[A-Z0-9]{20}$/);
    assert.ok(secretAccessKey.length >= 40);
    assert.notEqual(accessKeyId, 'S3RVER');
    const same = (a: EmbeddedCredentials, b: EmbeddedCredentials) =>
      a.accessKeyId === b.accessKeyId && a.secretAccessKey === b.secretAccessKey;
    assert.ok(same(ensureEmbeddedCredentials(dataDir), stack.credentials), 'read back, not remade');
    // Another data directory, another pair; that directory's stack restarted, the same pair again.
    const otherDir = join(await tempDir('effitag-security-other-'), 'data');
    const first = (await startTestStack(TIERS, { dataDir: otherDir, runRouter: false, runWorkers: () => false })).stack;
    await first.stop();
    const second = (await startTestStack(TIERS, { dataDir: otherDir, runRouter: false, runWorkers: () => false })).stack;
    await second.stop();
    process.env.EFFITAG_DATA_DIR = dataDir;
    assert.notEqual(first.credentials.accessKeyId, accessKeyId);
    assert.ok(same(second.credentials, first.credentials));
  });

  it('`effitag` commands find the stack (its handle: ports, credentials) through EFFITAG_DATA_DIR, and say where to look when there is none', async () => {
    const run = (env: NodeJS.ProcessEnv) =>
      promisify(execFile)(process.execPath, ['bin/effitag.js', 'dlq', 'list', '--json'], {
        env: { ...process.env, ...env },
      }).then(
        (r) => ({ code: 0, ...r }),
        (e: { code: number; stdout: string; stderr: string }) => e,
      );
    const ok = await run({ EFFITAG_DATA_DIR: dataDir });
    assert.equal(ok.code, 0, ok.stderr);
    const none = await run({ EFFITAG_DATA_DIR: join(root, 'elsewhere') });
    assert.notEqual(none.code, 0);
    assert.match(none.stderr, /no embedded stack is running for .*elsewhere.*start it \(npm start\)/s);
  });

  it('the SDK works unchanged with the credentials: signed requests and presigned links', async () => {
    const eTag = await put(stack, 'plain/a b+c.txt', 'hello');
    assert.equal((await head(stack, 'plain/a b+c.txt')).ETag?.replace(/"/g, ''), eTag);
    const link = await getSignedUrl(stack.s3, new GetObjectCommand({ Bucket: stack.bucket, Key: 'plain/a b+c.txt' }), { expiresIn: 60 });
    const r = await fetch(link);
    assert.equal(r.status, 200);
    assert.equal(await r.text(), 'hello');
    assert.ok((await stack.sqs.send(new ListQueuesCommand({}))).QueueUrls?.length);
  });

  it('refuses unsigned, badly signed and other-credential requests, with S3-shaped errors', async () => {
    const s3 = stack.endpoints.s3Endpoint!;
    const mine = stack.endpoints.credentials!;
    await put(stack, 'plain/a b+c.txt', 'hello');
    const path = `/${stack.bucket}/plain/a%20b%2Bc.txt`;
    const unsigned = await raw(s3, { method: 'GET', path, service: 's3', credentials: null });
    assert.equal(unsigned.status, 403);
    assert.equal(s3Code(unsigned), 'AccessDenied');
    const other = await raw(s3, { method: 'GET', path, service: 's3', credentials: generateCredentials() });
    assert.equal(other.status, 403);
    assert.equal(s3Code(other), 'InvalidAccessKeyId');
    const wrongSecret = await raw(s3, { method: 'GET', path, service: 's3', credentials: { ...mine, secretAccessKey: 'x'.repeat(40) } });
    assert.equal(wrongSecret.status, 403);
    assert.equal(s3Code(wrongSecret), 'SignatureDoesNotMatch');
    const s3rverDefault = await raw(s3, {
      method: 'GET',
      path,
      service: 's3',
      credentials: { accessKeyId: 'S3RVER', secretAccessKey: 'S3RVER' },
    });
    assert.equal(s3rverDefault.status, 403, "s3rver's built-in account is not accepted");
    // The same request, signed right, passes: the refusals were the signatures'.
    const good = await raw(s3, { method: 'GET', path, service: 's3', credentials: mine });
    assert.equal(good.status, 200, good.text);
    assert.equal(good.text, 'hello');

    // A presigned link made with another pair, or expired, is refused.
    const foreign = s3Client({ s3Endpoint: s3, credentials: generateCredentials() });
    const cmd = new GetObjectCommand({ Bucket: stack.bucket, Key: 'plain/a b+c.txt' });
    const foreignLink = await fetch(await getSignedUrl(foreign, cmd, { expiresIn: 60 }));
    assert.equal(foreignLink.status, 403);
    const old = await getSignedUrl(stack.s3, cmd, { expiresIn: 1, signingDate: new Date(Date.now() - 3_600_000) });
    const expired = await fetch(old);
    assert.equal(expired.status, 403);
    assert.match(await expired.text(), /<Code>AccessDenied<\/Code><Message>the presigned URL has expired/);
    foreign.destroy();

    // Signature V2 links (what AWS CLI v1's `s3 presign` makes): ours pass, a wrong secret or s3rver's built-in pair do not.
    const v2 = (c: EmbeddedCredentials) => {
      const expires = Math.floor(Date.now() / 1000) + 60;
      const signature = createHmac('sha1', c.secretAccessKey).update(`GET\n\n\n${expires}\n${path}`).digest('base64');
      return `${s3}${path}?AWSAccessKeyId=${c.accessKeyId}&Expires=${expires}&Signature=${encodeURIComponent(signature)}`;
    };
    const v2Good = await fetch(v2(mine));
    assert.equal(v2Good.status, 200, await v2Good.clone().text());
    assert.equal(await v2Good.text(), 'hello');
    const v2Wrong = await fetch(v2({ ...mine, secretAccessKey: 'z'.repeat(40) }));
    assert.equal(v2Wrong.status, 403);
    assert.match(await v2Wrong.text(), /<Code>SignatureDoesNotMatch<\/Code>/);
    const v2Builtin = await fetch(v2({ accessKeyId: 'S3RVER', secretAccessKey: 'S3RVER' }));
    assert.equal(v2Builtin.status, 403, "s3rver's built-in account is not accepted in V2 either");

    // A request signed an hour ago (a replay) is refused.
    const skewClient = new S3Client({
      endpoint: s3,
      forcePathStyle: true,
      region: 'us-east-1',
      credentials: mine,
      systemClockOffset: -3_600_000,
      maxAttempts: 1,
    });
    await assert.rejects(skewClient.send(cmd), (e: Error) => e.name === 'RequestTimeTooSkewed');
    skewClient.destroy();

    // The JSON services: their own error names.
    const target = (t: string) => ({ 'content-type': 'application/x-amz-json-1.0', 'x-amz-target': t });
    const ddb = stack.endpoints.dynamoEndpoint!;
    const scan = {
      method: 'POST',
      path: '/',
      service: 'dynamodb' as const,
      headers: target('DynamoDB_20120810.Scan'),
      body: JSON.stringify({ TableName: INDEX_TABLE }),
    };
    assert.equal(jsonCode(await raw(ddb, { ...scan, credentials: null })), 'MissingAuthenticationTokenException');
    assert.equal(jsonCode(await raw(ddb, { ...scan, credentials: generateCredentials() })), 'UnrecognizedClientException');
    const badDdb = await raw(ddb, { ...scan, credentials: { ...mine, secretAccessKey: 'y'.repeat(40) } });
    assert.equal(badDdb.status, 403);
    assert.equal(jsonCode(badDdb), 'InvalidSignatureException');
    assert.equal((await raw(ddb, { ...scan, credentials: mine })).status, 200);
    const replayed = await raw(ddb, { ...scan, credentials: mine, signedAt: new Date(Date.now() - 3_600_000) });
    assert.equal(replayed.status, 403, 'a request signed an hour ago');
    assert.match(replayed.text, /more than 15 minutes/);
    const sqs = stack.endpoints.sqsEndpoint!;
    const list = { method: 'POST', path: '/', service: 'sqs' as const, headers: target('AmazonSQS.ListQueues'), body: '{}' };
    const unsignedSqs = await raw(sqs, { ...list, credentials: null });
    assert.equal(unsignedSqs.status, 403);
    assert.equal(jsonCode(unsignedSqs), 'MissingAuthenticationTokenException');
    assert.equal(jsonCode(await raw(sqs, { ...list, credentials: generateCredentials() })), 'UnrecognizedClientException');
    // fauxqs' queue inspector reads every message: unsigned, it answers nothing either.
    assert.equal((await raw(sqs, { method: 'GET', path: '/_fauxqs/queues', service: 'sqs', credentials: null })).status, 403);
    assert.equal((await raw(sqs, { ...list, credentials: mine })).status, 200);
  });

  it('refuses a foreign Host (DNS rebinding) or Origin, even when the request is signed', async () => {
    const mine = stack.endpoints.credentials!;
    for (const [name, endpoint, o] of [
      ['s3', stack.endpoints.s3Endpoint!, { method: 'GET', path: `/${stack.bucket}`, service: 's3' as const }],
      ['sqs', stack.endpoints.sqsEndpoint!, { method: 'POST', path: '/', service: 'sqs' as const, body: '{}' }],
      ['dynamodb', stack.endpoints.dynamoEndpoint!, { method: 'POST', path: '/', service: 'dynamodb' as const, body: '{}' }],
    ] as const) {
      const port = new URL(endpoint).port;
      const target: Record<string, string> =
        name === 's3'
          ? {}
          : {
              'content-type': 'application/x-amz-json-1.0',
              'x-amz-target': name === 'sqs' ? 'AmazonSQS.ListQueues' : 'DynamoDB_20120810.ListTables',
            };
      const rebound = await raw(endpoint, { ...o, headers: target, credentials: mine, host: `attacker.example:${port}` });
      assert.equal(rebound.status, 403, `${name}: ${rebound.text}`);
      assert.match(rebound.text, /attacker\.example/);
      const otherPort = await raw(endpoint, { ...o, headers: target, credentials: mine, host: '127.0.0.1:1' });
      assert.equal(otherPort.status, 403, `${name}: another port`);
      for (const host of [`localhost:${port}`, `127.0.0.1:${port}`]) {
        const local = await raw(endpoint, { ...o, headers: target, credentials: mine, host });
        assert.equal(local.status, 200, `${name} as ${host}: ${local.text}`);
      }
      const page = await raw(endpoint, { ...o, headers: { ...target, origin: 'http://127.0.0.1:8080' }, credentials: mine });
      assert.equal(page.status, 403, `${name}: another page's Origin`);
      assert.match(page.text, /127\.0\.0\.1:8080/);
      const gallery = await raw(endpoint, { ...o, headers: { ...target, origin: GALLERY }, credentials: mine });
      assert.equal(gallery.status, 200, `${name}: the gallery's Origin`);
      assert.notEqual(gallery.headers['access-control-allow-origin'], '*', `${name}: no CORS grant to every page`);
    }
  });

  it('stores no key outside the bucket: `..` in keys, buckets, copy sources, DeleteObjects and upload ids are refused', async () => {
    const s3 = stack.endpoints.s3Endpoint!;
    const mine = stack.endpoints.credentials!;
    await put(stack, 'victim.txt', 'keep me');
    // A file where `../../outside.txt` of the bucket would be kept: a DeleteObjects naming it must not remove it.
    await writeFile(join(root, 'outside.txt._S3rver_object'), 'not an object of the bucket');
    const before = filesUnder(root).sort();
    const attempts: [string, string, Record<string, string>?, string?][] = [
      ['PUT', `/${stack.bucket}/../../x.txt`],
      ['PUT', `/${stack.bucket}/a/%2E%2E/%2E%2E/%2E%2E/y.txt`],
      ['PUT', `/${stack.bucket}/a%2F..%2F..%2F..%2Fz.txt`],
      ['PUT', `/${stack.bucket}/./dot.txt`],
      ['PUT', `/%2E%2E/escaped-bucket.txt`],
      ['PUT', `/${stack.bucket}/copy.txt`, { 'x-amz-copy-source': `${stack.bucket}/../../etc/passwd` }],
      ['PUT', `/${stack.bucket}/part?partNumber=1&uploadId=..%2F..%2F..%2Fpwn`],
      ['PUT', `/${stack.bucket}/part?partNumber=..%2F..%2Fpwn&uploadId=abc`],
      [
        'POST',
        `/${stack.bucket}?delete`,
        { 'content-type': 'application/xml' },
        '<Delete><Object><Key>../data/effitag-local/victim.txt</Key></Object><Object><Key>../../outside.txt</Key></Object></Delete>',
      ],
    ];
    for (const [method, path, headers, body] of attempts) {
      const a = await raw(s3, {
        method,
        path,
        service: 's3',
        credentials: mine,
        headers,
        body: body ?? (method === 'PUT' ? 'payload' : undefined),
      });
      assert.ok(a.status >= 400 && a.status < 500, `${method} ${path}: ${a.status} ${a.text}`);
      assert.match(a.text, /<Error><Code>(InvalidArgument|InvalidBucketName|NoSuchUpload|InvalidURI)<\/Code>/, `${method} ${path}`);
    }
    assert.deepEqual(filesUnder(root).sort(), before, 'no file was written or removed anywhere under the test folder');
    assert.ok(!existsSync(join(dirname(root), 'x.txt._S3rver_object')));
    assert.ok(existsSync(join(root, 'outside.txt._S3rver_object')));
    assert.equal((await head(stack, 'victim.txt')).ContentLength, 7);
  });
});

const missing = !existsSync(CHROMIUM);
if (missing && process.env.CI === 'true') throw new Error(`CI=true and no Chromium at ${CHROMIUM}: .ci/run installs Debian's chromium`);
const skip = missing ? `no Chromium at ${CHROMIUM} (apt install chromium, or set EFFITAG_CHROMIUM): browser part skipped` : false;
if (skip) process.stdout.write(`# ${skip}\n`);

describe('a hostile page in Chromium cannot reach the embedded stack', { skip }, () => {
  let stack: EmbeddedStack;
  let browser: Browser;
  let hostile: Server;
  let origin: string;

  before(async () => {
    ({ stack } = await startTestStack(TIERS, { runRouter: false, runWorkers: () => false }));
    // The attacker's page: any origin other than the stack's, here another loopback port.
    hostile = createServer((_req, res) => {
      res.writeHead(200, { 'content-type': 'text/html' });
      res.end('<!doctype html><title>cute cats</title><iframe name="sink"></iframe>');
    });
    await new Promise<void>((r) => hostile.listen(0, '127.0.0.1', r));
    origin = `http://127.0.0.1:${(hostile.address() as AddressInfo).port}`;
    browser = await chromium.launch({ executablePath: CHROMIUM, args: CHROMIUM_ARGS });
  });
  after(async () => {
    await browser?.close();
    hostile?.close();
    await stack?.stop();
  });

  it('a form upload, a no-cors DeleteObjects, a made-up DynamoDB signature and an SQS call are all refused; nothing changes', async () => {
    await put(stack, 'victim.jpg', 'precious');
    const keysBefore = ((await stack.s3.send(new ListObjectsV2Command({ Bucket: stack.bucket }))).Contents ?? []).map((o) => o.Key);
    const page = await browser.newPage();
    await page.goto(`${origin}/`);
    const s3 = stack.endpoints.s3Endpoint!;
    // What the servers answered, as the browser saw it on the wire (the page itself may not read it).
    const statuses = new Map<string, number>();
    page.on('response', (r) => {
      if (!r.url().startsWith(origin)) statuses.set(`${r.request().method()} ${r.url()}`, r.status());
    });

    // 1. A form posting a file into the bucket (S3's browser upload), into a hidden frame.
    const formAnswer = page.waitForResponse((r) => r.url() === `${s3}/${stack.bucket}` && r.request().method() === 'POST');
    await page.evaluate(
      ({ action }) => {
        const form = document.createElement('form');
        form.method = 'POST';
        form.action = action;
        form.enctype = 'multipart/form-data';
        form.target = 'sink';
        const key = Object.assign(document.createElement('input'), { name: 'key', value: 'evil/form.jpg' });
        const file = Object.assign(document.createElement('textarea'), { name: 'file', value: 'not a cat' });
        form.append(key, file);
        document.body.append(form);
        form.submit();
      },
      { action: `${s3}/${stack.bucket}` },
    );
    assert.equal((await formAnswer).status(), 403);

    // 2-4. Fetches the page makes, reporting what it could read.
    const attempt = (url: string, init: RequestInit) =>
      page.evaluate(
        async ({ url, init }) => {
          try {
            const r = await fetch(url, init);
            return r.type === 'opaque' ? 'opaque' : `${r.status} ${await r.text()}`;
          } catch (e) {
            return `blocked: ${(e as Error).message}`;
          }
        },
        { url, init },
      );
    const ddb = stack.endpoints.dynamoEndpoint!;
    const sqs = stack.endpoints.sqsEndpoint!;
    const results = {
      deleted: await attempt(`${s3}/${stack.bucket}?delete`, {
        method: 'POST',
        mode: 'no-cors',
        body: '<Delete><Object><Key>victim.jpg</Key></Object></Delete>',
      }),
      scan: await attempt(ddb, {
        method: 'POST',
        headers: {
          'content-type': 'application/x-amz-json-1.0',
          'x-amz-target': 'DynamoDB_20120810.Scan',
          'x-amz-date': '20250101T000000Z',
          authorization: `AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20250101/us-east-1/dynamodb/aws4_request, SignedHeaders=host;x-amz-date, Signature=${'0'.repeat(64)}`,
        },
        body: JSON.stringify({ TableName: INDEX_TABLE }),
      }),
      scanNoCors: await attempt(ddb, { method: 'POST', mode: 'no-cors', body: JSON.stringify({ TableName: INDEX_TABLE }) }),
      send: await attempt(sqs, {
        method: 'POST',
        headers: { 'content-type': 'application/x-amz-json-1.0', 'x-amz-target': 'AmazonSQS.ListQueues' },
        body: '{}',
      }),
      sendNoCors: await attempt(sqs, { method: 'POST', mode: 'no-cors', body: '{}' }),
    };
    assert.equal(results.deleted, 'opaque', 'a no-cors answer is unreadable');
    assert.equal(statuses.get(`POST ${s3}/${stack.bucket}?delete`), 403, 'the DeleteObjects was refused');
    assert.match(results.scan, /^blocked/, `the page read the index: ${results.scan}`);
    assert.match(results.send, /^blocked/, `the page read a queue answer: ${results.send}`);
    for (const [what, url] of [
      ['DynamoDB', stack.endpoints.dynamoEndpoint!],
      ['SQS', stack.endpoints.sqsEndpoint!],
    ]) {
      const seen = [...statuses].filter(([k]) => k.startsWith(`OPTIONS ${url}`) || k.startsWith(`POST ${url}`));
      assert.ok(seen.length > 0, `${what}: the browser made its calls`);
      for (const [k, status] of seen) assert.equal(status, 403, `${what}: ${k}`);
    }

    // Nothing changed: no new object, the victim still there, no message sent.
    const keysAfter = ((await stack.s3.send(new ListObjectsV2Command({ Bucket: stack.bucket }))).Contents ?? []).map((o) => o.Key);
    assert.deepEqual(keysAfter, keysBefore);
    assert.equal((await head(stack, 'victim.jpg')).ContentLength, 8);
    assert.equal((await stack.intake.depth()).total, 1, 'only the victim upload was announced');
    await page.close();
  });
});

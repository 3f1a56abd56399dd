/**
 * Durability of the embedded stack (local/catch-up.ts, local/s3-server.ts, local/sqs-server.ts):
 * recovery from the journal after a SIGKILL, a journal a crash cut mid-line, no torn object in
 * listings after a kill mid-upload (nor from older versions' leftovers), a catch-up that retries a
 * failed LIST, dead letters that outlive a restart, and concurrent overwrites forwarded cleanly.
 * Every wait is on a condition, with a deadline.
 */
import assert from 'node:assert/strict';
import type { ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { appendFile, mkdir, writeFile } from 'node:fs/promises';
import { request } from 'node:http';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import {
  CopyObjectCommand,
  GetObjectCommand,
  HeadObjectCommand,
  ListObjectsCommand,
  PutObjectCommand,
  type S3Client,
} from '@aws-sdk/client-s3';
import { SendMessageCommand } from '@aws-sdk/client-sqs';
import { getSignedUrl } from '@aws-sdk/s3-request-presigner';
import type { EmbeddedStack } from '../local/stack.ts';
import { s3Client } from '../pipeline/aws/clients.ts';
import { EMBEDDED_CREDENTIALS } from '../pipeline/aws/wiring.ts';
import type { Logger } from '../pipeline/log.ts';
import type { ListPage, ObjectStore } from '../pipeline/ports.ts';
import { gradientImage, randomArtifact, tempDir } from './support/fixtures.ts';
import { freePort, startLocal } from './support/effitag-local.ts';
import { head, put, startTestStack, waitFor } from './support/local-stack.ts';

const TIERS = {
  version: 1,
  tiers: {
    main: { variants: ['b0'], compute: { target: 'lambda-cpu', memoryMb: 3538 }, engine: 'ort', batchSize: 8, topK: 3, minConfidence: 0 },
  },
  routing: { default: { tier: 'main' } },
};
const BUCKET = 'effitag-local';
/** The started stack's key pair, as a plain object (the SDK annotates the credentials it is given). */
const credentialsOf = () => ({ accessKeyId: EMBEDDED_CREDENTIALS.accessKeyId, secretAccessKey: EMBEDDED_CREDENTIALS.secretAccessKey });
const md5 = (b: Uint8Array) => createHash('md5').update(b).digest('hex');

async function kill9(child: ChildProcess) {
  const exited = new Promise((r) => child.once('exit', r));
  child.kill('SIGKILL');
  await exited;
}

/** What the stand-in stored for a key, read from its files (the process is dead). */
const storedMeta = (dir: string, key: string) => {
  const path = join(dir, 'data', BUCKET, `${key}._S3rver_metadata.json`);
  return existsSync(path) ? JSON.parse(readFileSync(path, 'utf8')) : {};
};

const allTagged = (s3: S3Client, keys: string[], timeoutMs: number) =>
  waitFor(
    `all ${keys.length} tagged`,
    async () => {
      const heads = await Promise.all(keys.map((Key) => s3.send(new HeadObjectCommand({ Bucket: BUCKET, Key }))));
      return heads.every((h) => h.Metadata?.['effitag-status'] === 'tagged') ? heads : undefined;
    },
    timeoutMs,
  );

/** Every listed object whole: a real ETag, its bytes hashing to it, its content type kept. */
async function assertNoTornObjects(s3: S3Client) {
  const listed = (await s3.send(new ListObjectsCommand({ Bucket: BUCKET }))).Contents ?? [];
  for (const o of listed) {
    const eTag = (o.ETag ?? '').replace(/"/g, '');
    assert.match(eTag, /^[0-9a-f]{32}$/, `${o.Key}: ETag ${o.ETag}`);
    const got = await s3.send(new GetObjectCommand({ Bucket: BUCKET, Key: o.Key }));
    assert.equal(md5(await got.Body!.transformToByteArray()), eTag, `${o.Key}: bytes match the ETag`);
    assert.equal(got.ContentType, 'image/jpeg', `${o.Key}: metadata kept`);
  }
  return listed.map((o) => o.Key!);
}

describe('durability: the embedded stack killed (SIGKILL) and restarted', () => {
  const children: ChildProcess[] = [];
  after(() => {
    for (const c of children) c.kill('SIGKILL');
  });

  it('killed after an idle moment, uploads still queued: the restart recovers them from the journal, not a listing', async () => {
    const dir = await tempDir();
    await randomArtifact(join(dir, 'weights', 'b0'), 'b0');
    const ports = { s3: await freePort(), sqs: await freePort() };
    const first = await startLocal(dir, ports, {}, children);
    // The record that the journal covers everything since: the restart must then read the journal only.
    await waitFor('the settled record', async () => (existsSync(join(dir, 'data.state.json')) ? true : undefined), 30_000);
    const s3 = s3Client({ s3Endpoint: `http://127.0.0.1:${ports.s3}`, credentials: credentialsOf() });
    try {
      const keys = Array.from({ length: 40 }, (_, i) => `journal/photo ${i}.jpg`);
      const images = await Promise.all(keys.map((_, i) => gradientImage(320, 240, 'jpeg', 300 + i)));
      await Promise.all(
        keys.map((Key, i) => s3.send(new PutObjectCommand({ Bucket: BUCKET, Key, Body: images[i], ContentType: 'image/jpeg' }))),
      );
      await kill9(first);
      const taggedBefore = keys.filter((k) => storedMeta(dir, k)['x-amz-meta-effitag-status']).length;
      assert.ok(taggedBefore < keys.length, `the kill must leave work behind (${taggedBefore} of ${keys.length} tagged)`);

      const second = await startLocal(dir, ports, {}, children);
      await allTagged(s3, keys, 120_000);
      await waitFor('the catch-up report', async () => (/caught up: /.test(second.output()) ? true : undefined));
      assert.match(second.output(), /caught up: \d+ upload\(s\) accepted since the stack was last idle/, 'from the journal');
      assert.doesNotMatch(second.output(), /no record of an idle moment/);
      process.stderr.write(`# journal recovery: ${taggedBefore}/${keys.length} tagged before the kill, all after the restart\n`);
    } finally {
      s3.destroy();
    }
  });

  it('killed mid-upload: no torn object in listings; every acknowledged upload ends tagged', async () => {
    const dir = await tempDir();
    await randomArtifact(join(dir, 'weights', 'b0'), 'b0');
    const ports = { s3: await freePort(), sqs: await freePort() };
    const first = await startLocal(dir, ports, {}, children);
    const s3 = s3Client({ s3Endpoint: `http://127.0.0.1:${ports.s3}`, credentials: credentialsOf() });
    const requests: ReturnType<typeof request>[] = [];
    try {
      const acked = Array.from({ length: 16 }, (_, i) => `kill/done ${i}.jpg`);
      const images = await Promise.all(acked.map((_, i) => gradientImage(320, 240, 'jpeg', 400 + i)));
      await Promise.all(
        acked.map((Key, i) => s3.send(new PutObjectCommand({ Bucket: BUCKET, Key, Body: images[i], ContentType: 'image/jpeg' }))),
      );
      // Three uploads the kill interrupts: half their bytes sent, the rest held back (a presigned PUT,
      // so the body can be paused), until the stand-in has started writing them to disk.
      const body = await gradientImage(1600, 1200, 'jpeg', 7);
      const halfSent = ['kill/half 0.jpg', 'kill/half 1.jpg', 'kill/half 2.jpg'];
      for (const Key of halfSent) {
        const url = new URL(
          await getSignedUrl(s3, new PutObjectCommand({ Bucket: BUCKET, Key, ContentType: 'image/jpeg' }), { expiresIn: 300 }),
        );
        const req = request(url, { method: 'PUT', headers: { 'content-type': 'image/jpeg', 'content-length': body.length } });
        req.on('error', () => {}); // the server dies mid-request
        req.write(body.subarray(0, body.length >> 1));
        requests.push(req);
      }
      const folder = join(dir, 'data', BUCKET, 'kill');
      await waitFor('the interrupted uploads on disk', async () => {
        const files = readdirSync(folder);
        return halfSent.every((k) => files.some((f) => f.startsWith(k.slice('kill/'.length)) && !f.endsWith('.md5'))) ? true : undefined;
      });
      await kill9(first);

      const second = await startLocal(dir, ports, {}, children);
      const listed = await assertNoTornObjects(s3);
      assert.deepEqual(listed.sort(), [...acked].sort(), 'exactly the acknowledged uploads are listed');
      await allTagged(s3, acked, 120_000);
      assert.doesNotMatch(second.output(), /catch-up failed|event forwarding failed/);
    } finally {
      for (const r of requests) r.destroy();
      s3.destroy();
    }
  });
});

/** Append a line cut short, as a crash mid-append leaves it, to the journal as it lies on disk. */
async function tearJournal(dataDir: string) {
  const segments = `${dataDir}.journal`;
  const torn = '{"t":1765000000000,"object":{"bucket":"effitag-local","key":"torn/pho';
  if (existsSync(segments)) {
    const last = readdirSync(segments).sort().at(-1);
    assert.ok(last, 'a journal segment to tear');
    await appendFile(join(segments, last), torn);
  } else {
    await appendFile(`${dataDir}.journal.jsonl`, torn);
  }
}

describe('durability: a journal a crash cut mid-line', () => {
  let stack: EmbeddedStack | undefined;
  after(async () => {
    await stack?.stop();
  });

  it('the torn last line is skipped, not fatal; uploads journalled after it are caught up', async () => {
    const dataDir = join(await tempDir('effitag-data-'), 's3');
    const noWorkers = { dataDir, runWorkers: () => false, idleCheckMs: 200 };
    // First run: no worker, so nothing gets tagged; stopped with its uploads still in the journal.
    ({ stack } = await startTestStack(TIERS, noWorkers));
    await stack.settled();
    const images = await Promise.all(Array.from({ length: 10 }, (_, i) => gradientImage(160, 120, 'jpeg', 500 + i)));
    const keys = images.map((_, i) => `torn/photo ${i}.jpg`);
    for (let i = 0; i < 5; i++) await put(stack, keys[i], images[i], { ContentType: 'image/jpeg' });
    await stack.stop();
    stack = undefined;
    await tearJournal(dataDir);
    // Second run: more uploads after the torn line.
    ({ stack } = await startTestStack(TIERS, noWorkers));
    assert.ok(await stack.catchUp, 'the catch-up reads past the torn line');
    for (let i = 5; i < 10; i++) await put(stack, keys[i], images[i], { ContentType: 'image/jpeg' });
    await stack.stop();
    stack = undefined;
    // Third run, with its worker: every upload of both runs caught up and tagged.
    ({ stack } = await startTestStack(TIERS, { dataDir }));
    const result = await stack.catchUp;
    assert.ok(result, 'caught up');
    const s = stack;
    await waitFor(
      'every upload tagged',
      async () =>
        (await Promise.all(keys.map((k) => head(s, k)))).every((h) => h.Metadata?.['effitag-status'] === 'tagged') ? true : undefined,
      60_000,
    );
  });
});

/** Bytes the journal holds on disk: its segments, or the single file of earlier versions. */
const journalBytes = (dataDir: string) => {
  const dir = `${dataDir}.journal`;
  const segments = existsSync(dir) ? readdirSync(dir).reduce((n, f) => n + statSync(join(dir, f)).size, 0) : 0;
  return segments + (existsSync(`${dataDir}.journal.jsonl`) ? statSync(`${dataDir}.journal.jsonl`).size : 0);
};

describe('durability: the journal under steady load', () => {
  let stack: EmbeddedStack | undefined;
  after(async () => {
    await stack?.stop();
  });

  it('a stack that is never idle still drops the journal of uploads once they are tagged', async () => {
    const dataDir = join(await tempDir('effitag-data-'), 's3');
    ({ stack } = await startTestStack(TIERS, { dataDir, idleCheckMs: 300 }));
    const s = stack;
    await s.catchUp;
    // Never idle: a message delayed 15 minutes sits in the intake queue (as steady uploads would keep it busy).
    await s.sqs.send(new SendMessageCommand({ QueueUrl: s.intake.url, DelaySeconds: 900, MessageBody: '{"Records":[]}' }));
    const keys = Array.from({ length: 12 }, (_, i) => `steady/photo ${i}.jpg`);
    for (const [i, key] of keys.entries()) await put(s, key, await gradientImage(160, 120, 'jpeg', 900 + i), { ContentType: 'image/jpeg' });
    assert.ok(journalBytes(dataDir) > 0, 'the uploads are journalled');
    await waitFor(
      'every upload tagged',
      async () =>
        (await Promise.all(keys.map((k) => head(s, k)))).every((h) => h.Metadata?.['effitag-status'] === 'tagged') ? true : undefined,
      60_000,
    );
    // Segments are sealed after 10 s and checked once 5 s old: the journal empties within a minute.
    await waitFor('the journal emptied', async () => (journalBytes(dataDir) === 0 ? true : undefined), 60_000);
    assert.ok((await s.intake.depth()).total >= 1, 'the stack was busy throughout');
  });
});

describe('durability: upgrading a folder with the single-file journal of earlier versions', () => {
  let stack: EmbeddedStack | undefined;
  after(async () => {
    await stack?.stop();
  });

  it('its entries are taken over as the oldest segment and caught up', async () => {
    const dataDir = join(await tempDir('effitag-data-'), 's3');
    const key = 'legacy/photo.jpg';
    const body = await gradientImage(160, 120, 'jpeg', 950);
    const base = join(dataDir, BUCKET, `${key}._S3rver_`);
    await mkdir(join(dataDir, BUCKET, 'legacy'), { recursive: true });
    await writeFile(`${base}object`, body);
    await writeFile(`${base}object.md5`, md5(body));
    await writeFile(`${base}metadata.json`, JSON.stringify({ 'content-type': 'image/jpeg' }));
    // As an earlier version left it: settled an hour ago, one upload journalled since.
    await writeFile(`${dataDir}.state.json`, JSON.stringify({ settledBefore: new Date(Date.now() - 3600_000).toISOString() }));
    const entry = { t: Date.now(), object: { bucket: BUCKET, key, eTag: md5(body), size: body.length, kind: 'Put' } };
    await writeFile(`${dataDir}.journal.jsonl`, `${JSON.stringify(entry)}\n`);
    ({ stack } = await startTestStack(TIERS, { dataDir }));
    const s = stack;
    const result = await s.catchUp;
    assert.equal(result?.report.enqueued, 1, 'the journalled upload, not a listing');
    assert.ok(result?.since, 'from the journal');
    assert.ok(!existsSync(`${dataDir}.journal.jsonl`), 'the old file is taken over');
    await waitFor('tagged', async () => ((await head(s, key)).Metadata?.['effitag-status'] === 'tagged' ? true : undefined), 60_000);
  });
});

describe('durability: torn objects an older version left, and a failing LIST at catch-up', () => {
  let stack: EmbeddedStack | undefined;
  after(async () => {
    await stack?.stop();
  });

  it('torn leftovers are never listed nor a LIST 500; a failed catch-up is retried until it succeeds', async () => {
    const dataDir = join(await tempDir('effitag-data-'), 's3');
    const folder = join(dataDir, BUCKET, 'old');
    await mkdir(folder, { recursive: true });
    // Two whole objects placed in the folder (no record yet: the catch-up lists the bucket)...
    const whole = ['old/whole 0.jpg', 'old/whole 1.jpg'];
    for (const [i, key] of whole.entries()) {
      const body = await gradientImage(160, 120, 'jpeg', 600 + i);
      const base = join(dataDir, BUCKET, `${key}._S3rver_`);
      await writeFile(`${base}object`, body);
      await writeFile(`${base}object.md5`, md5(body));
      await writeFile(`${base}metadata.json`, JSON.stringify({ 'content-type': 'image/jpeg' }));
    }
    // ...and what older versions left after a kill mid-write: a metadata.json of 0 bytes, an empty
    // .md5 (ETag ""), an object with its .md5 but no metadata.
    const junk = await gradientImage(160, 120, 'jpeg', 9);
    await writeFile(join(folder, 'empty-meta.jpg._S3rver_object'), junk);
    await writeFile(join(folder, 'empty-meta.jpg._S3rver_object.md5'), md5(junk));
    await writeFile(join(folder, 'empty-meta.jpg._S3rver_metadata.json'), '');
    await writeFile(join(folder, 'empty-md5.jpg._S3rver_object'), '');
    await writeFile(join(folder, 'empty-md5.jpg._S3rver_object.md5'), '');
    await writeFile(join(folder, 'empty-md5.jpg._S3rver_metadata.json'), '{}');
    await writeFile(join(folder, 'no-meta.jpg._S3rver_object'), junk.subarray(0, 100));
    await writeFile(join(folder, 'no-meta.jpg._S3rver_object.md5'), md5(junk.subarray(0, 100)));

    // The pipeline's LIST fails three times (as the stand-in answered 500): the catch-up must retry.
    let listFailures = 0;
    const failingList = (store: ObjectStore): ObjectStore =>
      new Proxy(store, {
        get(target, prop, receiver) {
          if (prop === 'list')
            return (...args: Parameters<ObjectStore['list']>): Promise<ListPage> => {
              if (listFailures < 3) {
                listFailures++;
                return Promise.reject(Object.assign(new Error('We encountered an internal error.'), { name: 'InternalError' }));
              }
              return target.list(...args);
            };
          return Reflect.get(target, prop, receiver);
        },
      });
    ({ stack } = await startTestStack(TIERS, { dataDir, wrapStore: failingList, catchUpRetry: { firstMs: 100, maxMs: 400 } }));
    const s = stack;
    const listed = (await s.s3.send(new ListObjectsCommand({ Bucket: BUCKET }))).Contents ?? [];
    assert.deepEqual(listed.map((o) => o.Key).sort(), whole, 'only whole objects are listed');
    await assert.rejects(head(s, 'old/empty-meta.jpg'), /NotFound|404/, 'a torn object reads as absent');
    const result = await waitFor('the catch-up, retried', async () => (await s.catchUp) ?? undefined, 60_000);
    assert.equal(listFailures, 3);
    assert.equal(result.report.enqueued, 2);
    await waitFor(
      'both whole objects tagged',
      async () =>
        (await Promise.all(whole.map((k) => head(s, k)))).every((h) => h.Metadata?.['effitag-status'] === 'tagged') ? true : undefined,
      60_000,
    );
    // The object left without metadata is moved aside, not deleted.
    await waitFor('the sweep', async () =>
      existsSync(join(`${dataDir}.torn`, BUCKET, 'old', 'no-meta.jpg._S3rver_object')) ? true : undefined,
    );
  });
});

describe('durability: dead letters across a restart', () => {
  let stack: EmbeddedStack | undefined;
  after(async () => {
    await stack?.stop();
  });

  it('messages in a dead-letter queue, and their reasons, are there after a restart', async () => {
    const dataDir = join(await tempDir('effitag-data-'), 's3');
    const started = await startTestStack(TIERS, { dataDir });
    stack = started.stack;
    started.probe.beforeClassify = () => {
      throw new Error('the engine broke');
    };
    const keys = ['dead/a.jpg', 'dead/b.jpg', 'dead/c.jpg'];
    for (const [i, key] of keys.entries())
      await put(stack, key, await gradientImage(160, 120, 'jpeg', 700 + i), { ContentType: 'image/jpeg' });
    const dlq = stack.tierQueues.main.dlq;
    await waitFor('three dead letters', async () => ((await dlq.depth()).total === 3 ? true : undefined), 60_000);
    await stack.stop();
    stack = undefined;

    ({ stack } = await startTestStack(TIERS, { dataDir, catchUp: false }));
    const after = stack.tierQueues.main.dlq;
    assert.equal((await after.depth()).total, 3, 'the dead letters are back');
    const messages = await after.receive({ max: 10, waitSeconds: 0 });
    assert.deepEqual(messages.map((m) => JSON.parse(m.body).key).sort(), keys);
    for (const m of messages) assert.match(m.attributes?.['effitag-reason'] ?? '', /the engine broke/, 'with its reason');
  });
});

describe('durability: concurrent overwrites of one key', () => {
  let stack: EmbeddedStack | undefined;
  after(async () => {
    await stack?.stop();
  });

  it('PUTs and metadata copies racing on one key: every event forwarded, none failing', async () => {
    const errors: string[] = [];
    const log: Logger = {
      log(level, msg, fields) {
        if (level === 'error' || msg === 'event forwarding failed') errors.push(`${msg}: ${JSON.stringify(fields)}`);
      },
      child: () => log,
    };
    // No router: the race is in the stand-in, between a write and the read of the next event.
    ({ stack } = await startTestStack(TIERS, { log, runRouter: false, runWorkers: () => false }));
    const s = stack;
    const bodies = await Promise.all(Array.from({ length: 4 }, (_, i) => gradientImage(640, 480, 'jpeg', 800 + i)));
    const key = 'race/photo.jpg';
    await put(s, key, bodies[0], { ContentType: 'image/jpeg' });
    let created = 1;
    await Promise.all(
      Array.from({ length: 6 }, async (_, w) => {
        for (let i = 0; i < 30; i++) {
          if ((w + i) % 2) {
            await put(s, key, bodies[(w + i) % bodies.length], { ContentType: 'image/jpeg', Metadata: { n: String(i) } });
            created++;
          } else
            await s.s3
              .send(
                new CopyObjectCommand({
                  Bucket: BUCKET,
                  Key: key,
                  CopySource: `${BUCKET}/${key}`,
                  MetadataDirective: 'REPLACE',
                  ContentType: 'image/jpeg',
                  Metadata: { copy: String(i) },
                }),
              )
              .then(
                () => created++,
                () => {}, // a copy may lose its race with a PUT; not what is tested
              );
        }
      }),
    );
    // Each object created is one event on the intake queue (no router drains it).
    await waitFor('every event handed on', async () => ((await s.intake.depth()).total >= created ? true : undefined), 30_000).catch(
      () => {},
    );
    assert.deepEqual(errors, []);
    assert.equal((await s.intake.depth()).total, created, 'one event per object created');
  });
});

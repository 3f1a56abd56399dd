/**
 * `effitag show` as a user meets it on objects whose tagging is not in their metadata: an image that
 * already carries ~1,900 bytes of user metadata is tagged in the index only (no room on the object),
 * and `show` must say so rather than "untagged" (exit 1); a record of another upload (other bytes,
 * or an older upload of the same bytes) is not this object's tagging. Keys with a carriage return or
 * a line feed (S3 takes any UTF-8) must be shown too, escaped. Runs bin/effitag.js against the stand-ins.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { CreateBucketCommand, HeadObjectCommand, PutObjectCommand, type S3Client } from '@aws-sdk/client-s3';
import { startDynamoServer } from '../local/dynamo-server.ts';
import { startS3Server } from '../local/s3-server.ts';
import { dynamoClient, s3Client } from '../pipeline/aws/clients.ts';
import { DynamoTagIndex, ensureIndexTable } from '../pipeline/aws/dynamo-index.ts';
import { ensureEmbeddedCredentials } from '../pipeline/aws/local-credentials.ts';
import { INDEX_TABLE } from '../pipeline/aws/wiring.ts';
import { runEffitag } from './support/effitag-local.ts';
import { tempDir } from './support/fixtures.ts';
import { standInHandle } from './support/local-stack.ts';

const BUCKET = 'show';
const FULL = { note: 'x'.repeat(1_900) };

let dataDir: string;
let flags: string[];
let s3: S3Client;
let index: DynamoTagIndex;
const stops: (() => Promise<unknown>)[] = [];

const cli = (args: string[]) => runEffitag(args, { EFFITAG_DATA_DIR: dataDir });

/** Puts an object with a full metadata budget and, as the worker does, indexes that very upload. */
async function putIndexed(key: string, opts: { indexedETag?: string; indexedEarlier?: boolean } = {}) {
  const put = await s3.send(new PutObjectCommand({ Bucket: BUCKET, Key: key, Body: `bytes of ${key}`, Metadata: FULL }));
  const head = await s3.send(new HeadObjectCommand({ Bucket: BUCKET, Key: key }));
  const eTag = (put.ETag ?? '').replace(/"/g, '');
  const uploaded = head.LastModified ?? new Date();
  await index.put({
    bucket: BUCKET,
    key,
    eTag: opts.indexedETag ?? eTag,
    lastModified: opts.indexedEarlier ? new Date(uploaded.getTime() - 60_000) : uploaded,
    size: 10,
    variant: 'b0',
    marker: 'b0@test',
    at: '2026-12-07T01:32:10.161Z',
    tags: [
      { tag: 'american chameleon', probability: 0.61, leaf: true },
      { tag: 'lizard', probability: 0.61, leaf: false },
    ],
  });
}

describe('effitag show: tagging held in the index', () => {
  before(async () => {
    const dir = await tempDir('effitag-show-index-');
    dataDir = join(dir, 'data');
    const credentials = ensureEmbeddedCredentials(dataDir);
    const s3server = await startS3Server({ directory: join(dir, 's3'), credentials });
    const dynamo = await startDynamoServer({ credentials });
    stops.push(
      () => s3server.close(),
      () => dynamo.close(),
    );
    // The CLI finds the stand-ins as it finds `npm start`'s stack: through a handle in its data directory.
    standInHandle(dataDir, { credentials, s3: s3server.endpoint, dynamodb: dynamo.endpoint, buckets: [BUCKET] });
    flags = [];
    s3 = s3Client({ s3Endpoint: s3server.endpoint, credentials });
    await s3.send(new CreateBucketCommand({ Bucket: BUCKET }));
    const ddb = dynamoClient({ dynamoEndpoint: dynamo.endpoint, credentials });
    await ensureIndexTable(ddb, INDEX_TABLE);
    index = new DynamoTagIndex(ddb, INDEX_TABLE);
  });
  after(async () => {
    for (const s of stops) await s().catch(() => {});
  });

  it('an object tagged in the index only (full metadata budget) is shown tagged, with its tags, exit 0', async () => {
    await putIndexed('meta/full.jpg');
    const r = await cli(['show', `s3://${BUCKET}/meta/full.jpg`, ...flags]);
    assert.equal(r.code, 0, r.stdout + r.stderr);
    assert.equal(
      r.stdout,
      `s3://${BUCKET}/meta/full.jpg: tagged by b0@test at 2026-12-07T01:32:10.161Z (in the tag index only: no room in the object's metadata)\n` +
        '   61.0%  american chameleon\n   61.0%  lizard\n',
    );
    const json = JSON.parse((await cli(['show', `s3://${BUCKET}/meta/full.jpg`, '--json', ...flags])).stdout);
    assert.equal(json.status, 'tagged');
    assert.equal(json.in, 'index');
    assert.deepEqual(
      json.tags.map((t: { label: string }) => t.label),
      ['american chameleon', 'lizard'],
    );
  });

  it("another upload's record (other bytes, or an earlier upload of these bytes) is not this object's tagging", async () => {
    await putIndexed('meta/other.jpg', { indexedETag: '0123456789abcdef0123456789abcdef' });
    const other = await cli(['show', `s3://${BUCKET}/meta/other.jpg`, ...flags]);
    assert.equal(other.code, 1);
    assert.equal(other.stdout, `s3://${BUCKET}/meta/other.jpg: untagged\n`);
    await putIndexed('meta/earlier.jpg', { indexedEarlier: true });
    const earlier = await cli(['show', `s3://${BUCKET}/meta/earlier.jpg`, ...flags]);
    assert.equal(earlier.code, 1);
    assert.equal(earlier.stdout, `s3://${BUCKET}/meta/earlier.jpg: untagged\n`);
  });

  it('a key with a carriage return or a line feed is shown, escaped', async () => {
    const key = 'ctl/bad\r\ntext.jpg';
    await s3.send(
      new PutObjectCommand({
        Bucket: BUCKET,
        Key: key,
        Body: 'x',
        Metadata: { 'effitag-status': 'tagged', 'effitag-model': 'b0@test', 'effitag-tags': 'tabby=0.810' },
      }),
    );
    const r = await cli(['show', `s3://${BUCKET}/${key}`, ...flags]);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout, `s3://${BUCKET}/ctl/bad\\r\\ntext.jpg: tagged by b0@test\n   81.0%  tabby\n`);
  });
});

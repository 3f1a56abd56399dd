/**
 * What the CLI prints for people: `show` of a missing object says so; keys, labels, reasons and
 * message bodies with control characters (a key that retitles the terminal: ESC ] 0 ; … BEL) are
 * printed escaped by `show`, `search` and `dlq list`, and in error messages; `--json` stays JSON
 * with the text as it is. Runs bin/effitag.js against the stand-ins.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { CreateBucketCommand, PutObjectCommand } from '@aws-sdk/client-s3';
import { printable, table } from '../cli/format.ts';
import { startDynamoServer } from '../local/dynamo-server.ts';
import { startS3Server } from '../local/s3-server.ts';
import { startSqsServer } from '../local/sqs-server.ts';
import { dynamoClient, s3Client, sqsClient } from '../pipeline/aws/clients.ts';
import { DynamoTagIndex, ensureIndexTable } from '../pipeline/aws/dynamo-index.ts';
import { SqsQueue } from '../pipeline/aws/sqs-queue.ts';
import { ensureEmbeddedCredentials, type EmbeddedCredentials } from '../pipeline/aws/local-credentials.ts';
import { DEAD_LETTER_ATTRIBUTES } from '../pipeline/worker-stages.ts';
import { runEffitag } from './support/effitag-local.ts';
import { tempDir } from './support/fixtures.ts';
import { standInHandle } from './support/local-stack.ts';

const BUCKET = 'out';
/** Retitles an xterm; then clears the screen and moves the cursor home. */
const TITLE = '\x1b]0;pwned\x07';
const CLEAR = '\x1b[2J\x1b[H';
const EVIL_KEY = `pics/${TITLE}cat${CLEAR}.jpg`;
const SHOWN_KEY = 'pics/\\x1b]0;pwned\\x07cat\\x1b[2J\\x1b[H.jpg';
/** Any control character but the line feed that ends a line, or a bidi override. */
// biome-ignore lint/suspicious/noControlCharactersInRegex: finding control characters is the point
const RAW = /[\x00-\x09\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]/;

let flags: { s3: string[]; dynamo: string[]; sqs: string[] };
/** The stand-ins' credentials, in a data directory where the CLI finds them (EFFITAG_DATA_DIR), as it finds `npm start`'s. */
let dataDir: string;
let CREDENTIALS: EmbeddedCredentials;
const stops: (() => Promise<unknown>)[] = [];

const cli = (args: string[]) => runEffitag(args, { EFFITAG_DATA_DIR: dataDir });

describe('format: printable', () => {
  it('escapes C0, DEL, C1 and bidi controls, and leaves other text alone', () => {
    assert.equal(printable(`a${TITLE}b\r\n\tc\u202ed\u0085`), 'a\\x1b]0;pwned\\x07b\\r\\n\\tc\\u202ed\\x85');
    assert.equal(printable('photos/été/漢字 ok.jpg'), 'photos/été/漢字 ok.jpg');
    assert.equal(printable('one\ntwo', { keepNewlines: true }), 'one\ntwo');
    assert.equal(table([[`k${CLEAR}`, 1]], ['key', 'n']), 'key             n\n--------------  -\nk\\x1b[2J\\x1b[H  1\n');
  });
});

describe('CLI output for people', () => {
  before(async () => {
    const dir = await tempDir('effitag-cli-out-');
    dataDir = join(dir, 'data');
    CREDENTIALS = ensureEmbeddedCredentials(dataDir);
    const s3server = await startS3Server({ directory: join(dir, 's3'), credentials: CREDENTIALS });
    const dynamo = await startDynamoServer({ credentials: CREDENTIALS });
    const sqsServer = await startSqsServer({ credentials: CREDENTIALS });
    stops.push(
      () => s3server.close(),
      () => dynamo.close(),
      () => sqsServer.close(),
    );
    // No stack flags: the CLI finds the stand-ins through a handle in the data directory, as it finds `npm start`'s.
    flags = { s3: [], dynamo: [], sqs: [] };
    const s3 = s3Client({ s3Endpoint: s3server.endpoint, credentials: CREDENTIALS });
    await s3.send(new CreateBucketCommand({ Bucket: BUCKET }));
    // A tagged object whose key and label (percent-encoded in the metadata) carry escapes.
    await s3.send(
      new PutObjectCommand({
        Bucket: BUCKET,
        Key: EVIL_KEY,
        Body: 'x',
        Metadata: {
          'effitag-status': 'tagged',
          'effitag-model': 'b0@test',
          'effitag-tags': `tabby=0.810;${encodeURIComponent(`evil${TITLE}`)}=0.100`,
        },
      }),
    );

    const ddb = dynamoClient({ dynamoEndpoint: dynamo.endpoint, credentials: CREDENTIALS });
    await ensureIndexTable(ddb, 'effitag-index');
    const index = new DynamoTagIndex(ddb, 'effitag-index');
    const base = { bucket: BUCKET, eTag: 'e', size: 1, variant: 'b0', marker: 'b0@test', at: new Date().toISOString() };
    await index.put({
      ...base,
      key: EVIL_KEY,
      lastModified: new Date(Date.UTC(2026, 0, 2)),
      tags: [{ tag: 'tabby', probability: 0.81, leaf: true }],
    });
    await index.put({
      ...base,
      key: `notes/${TITLE}.txt`,
      lastModified: new Date(Date.UTC(2026, 0, 1)),
      tags: [],
      failure: `not-an-image: ${CLEAR}unsupported`,
    });

    const sqs = sqsClient({ sqsEndpoint: sqsServer.endpoint, credentials: CREDENTIALS });
    const dlq = await sqsServer.createQueue('effitag-main-dlq.fifo', { FifoQueue: 'true' });
    const main = await sqsServer.createQueue('effitag-main.fifo', {
      FifoQueue: 'true',
      RedrivePolicy: JSON.stringify({ deadLetterTargetArn: dlq.arn, maxReceiveCount: '3' }),
    });
    standInHandle(dataDir, {
      credentials: CREDENTIALS,
      s3: s3server.endpoint,
      sqs: sqsServer.endpoint,
      dynamodb: dynamo.endpoint,
      buckets: [BUCKET],
      tierQueues: { main: { url: main.url, deadLetterUrl: dlq.url } },
    });
    await new SqsQueue(sqs, dlq.url).send([
      {
        body: JSON.stringify({
          v: 1,
          bucket: BUCKET,
          key: EVIL_KEY,
          eTag: 'e',
          size: 1,
          tier: 'main',
          variant: 'b0',
          source: 'upload',
          enqueuedAt: new Date().toISOString(),
        }),
        groupId: 'g',
        deduplicationId: 'd1',
        attributes: { [DEAD_LETTER_ATTRIBUTES.reason]: `retry: ${TITLE}timeout` },
      },
    ]);
  });
  after(async () => {
    for (const s of stops) await s().catch(() => {});
  });

  it('show of a missing object says which, in one line', async () => {
    const r = await cli(['show', `s3://${BUCKET}/pics/none.jpg`, ...flags.s3]);
    assert.equal(r.code, 1);
    assert.equal(r.stderr, `effitag: no such object s3://${BUCKET}/pics/none.jpg\n`);
    assert.equal(r.stdout, '');
    // The message names the key it was given, escaped.
    const evil = await cli(['show', `s3://${BUCKET}/pics/none${CLEAR}.jpg`, ...flags.s3]);
    assert.equal(evil.stderr, `effitag: no such object s3://${BUCKET}/pics/none\\x1b[2J\\x1b[H.jpg\n`);
  });

  it('show escapes control characters in the key and labels; --json keeps them as JSON', async () => {
    const r = await cli(['show', `s3://${BUCKET}/${EVIL_KEY}`, ...flags.s3]);
    assert.equal(r.code, 0, r.stderr);
    assert.doesNotMatch(r.stdout, RAW);
    assert.equal(r.stdout, `s3://${BUCKET}/${SHOWN_KEY}: tagged by b0@test\n   81.0%  tabby\n   10.0%  evil\\x1b]0;pwned\\x07\n`);
    const json = JSON.parse((await cli(['show', `s3://${BUCKET}/${EVIL_KEY}`, '--json', ...flags.s3])).stdout);
    assert.equal(json.object, `s3://${BUCKET}/${EVIL_KEY}`);
    assert.equal(json.tags[1].label, `evil${TITLE}`);
  });

  it('search escapes keys, tags and failure reasons; --json keeps them as they are', async () => {
    const r = await cli(['search', `s3://${BUCKET}`, '--tag', 'tabby', ...flags.dynamo]);
    assert.equal(r.code, 0, r.stderr);
    assert.doesNotMatch(r.stdout, RAW);
    assert.ok(r.stdout.includes(`s3://${BUCKET}/${SHOWN_KEY}  `), r.stdout);
    const failed = await cli(['search', `s3://${BUCKET}`, '--failed', ...flags.dynamo]);
    assert.doesNotMatch(failed.stdout, RAW);
    assert.match(failed.stdout, /notes\/\\x1b\]0;pwned\\x07\.txt +not-an-image: \\x1b\[2J\\x1b\[Hunsupported/);
    const json = JSON.parse((await cli(['search', `s3://${BUCKET}`, '--tag', 'tabby', '--json', ...flags.dynamo])).stdout);
    assert.deepEqual(
      json.hits.map((h: { key: string }) => h.key),
      [EVIL_KEY],
    );
  });

  it('dlq list escapes reasons and sample keys', async () => {
    const r = await cli(['dlq', 'list', ...flags.sqs]);
    assert.equal(r.code, 0, r.stderr);
    assert.doesNotMatch(r.stdout, RAW);
    assert.match(r.stdout, /1 {2}retry: \\x1b\]0;pwned\\x07timeout\n/);
    assert.ok(r.stdout.includes(`e.g. s3://${BUCKET}/${SHOWN_KEY}\n`), r.stdout);
  });
});

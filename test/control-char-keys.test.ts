/**
 * Keys holding characters XML 1.0 cannot carry (ESC, BEL) or that an XML parser rewrites (`\r` and
 * `\r\n` read as `\n`), and the characters URL encoding is easy to get wrong with (`+`, space, `%`,
 * non-ASCII), on the embedded stack (issue 21). The stand-in answered listings with such keys raw,
 * ignoring `encoding-type=url`: botocore (the AWS CLI) failed the whole bucket listing, and the JS SDK
 * read `\r` as `\n`, so a backfill took the object for gone. Real S3 needs the same care: S3Store
 * asks for url encoding and decodes what S3 sends.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { ListObjectsCommand, ListObjectsV2Command } from '@aws-sdk/client-s3';
import { getSignedUrl } from '@aws-sdk/s3-request-presigner';
import { parseXML } from '@aws-sdk/xml-builder';
import xmlParser from 'fast-xml-parser';
import type { EmbeddedStack } from '../local/stack.ts';
import { S3Store } from '../pipeline/aws/s3-store.ts';
import { decodeS3Key } from '../pipeline/events.ts';
import { backfillDryRun } from './support/effitag-local.ts';
import { gradientImage, randomArtifact, tempDir } from './support/fixtures.ts';
import { put, startTestStack, waitForStatus } from './support/local-stack.ts';

const PREFIX = 'ctl/';
const KEYS = [
  'ctl/cr\rhere.jpg',
  'ctl/crlf\r\nhere.jpg',
  'ctl/lf\nhere.jpg',
  'ctl/a\x1b]0;pwned\x07b.jpg',
  'ctl/tab\there.jpg',
  'ctl/plus+sign.jpg',
  'ctl/space here.jpg',
  'ctl/pct%41%zz%.jpg',
  'ctl/ünïcødé 画像.jpg',
  // Astral characters: the SQS stand-in (fauxqs) refuses them in a message body, which SQS accepts;
  // task bodies escape every non-ASCII character, so such an object is tagged like any other.
  'ctl/emoji 📷🐈.jpg',
  'ctl/sub dir+x/inner.jpg',
].sort();

/** XML 1.0's Char production: a document holding anything else is not well-formed. */
const XML_CHARS = /^[\t\n\r\x20-\uD7FF\uE000-\uFFFD\u{10000}-\u{10FFFF}]*$/u;

describe('keys with control characters and URL-special characters on the embedded stack', () => {
  let stack: EmbeddedStack;
  let weights: string;
  before(async () => {
    weights = await tempDir('effitag-weights-');
    await randomArtifact(join(weights, 'b0'), 'b0');
    ({ stack } = await startTestStack(JSON.parse(readFileSync('tiers/local.json', 'utf8')), { weightsDir: weights }));
    let seed = 60;
    for (const key of KEYS) {
      const eTag = await put(stack, key, await gradientImage(96, 64, 'jpeg', seed++), { ContentType: 'image/jpeg' });
      await waitForStatus(stack, key, eTag, 60_000);
    }
  });
  after(async () => {
    await stack?.stop();
  });

  it('S3Store lists every key exactly, page by page (V1 with the stand-in quirk, and V2)', async () => {
    for (const [store, maxKeys] of [
      // Pages of 3 with V1 (the Marker is a decoded key, sent back encoded); V2 in one page, as the
      // stand-in's V2 continuation tokens fail (see S3StoreOptions.quirks).
      [new S3Store(stack.s3, { quirks: 's3rver' }), 3],
      [new S3Store(stack.s3), undefined],
    ] as const) {
      const listed: string[] = [];
      let token: string | undefined;
      do {
        const page = await store.list(stack.bucket, { prefix: PREFIX, continuationToken: token, maxKeys });
        listed.push(...page.objects.map((o) => o.key));
        token = page.nextContinuationToken;
      } while (token);
      assert.deepEqual(listed, KEYS);
    }
    // A prefix that itself needs encoding.
    const page = await new S3Store(stack.s3, { quirks: 's3rver' }).list(stack.bucket, { prefix: 'ctl/a\x1b]0;' });
    assert.deepEqual(
      page.objects.map((o) => o.key),
      ['ctl/a\x1b]0;pwned\x07b.jpg'],
    );
  });

  it('effitag backfill --dry-run finds every object current: none gone, none missed', async () => {
    const report = await backfillDryRun(`s3://${stack.bucket}/${PREFIX}`);
    assert.deepEqual(
      [report.listed, report.enqueued, report.skipped.current, report.skipped.gone ?? 0, report.errors],
      [KEYS.length, 0, KEYS.length, 0, 0],
      `every key listed and current: ${JSON.stringify(report)}`,
    );
  });

  it('a raw list request with encoding-type=url answers well-formed XML with the keys percent-encoded', async () => {
    for (const command of [
      new ListObjectsV2Command({ Bucket: stack.bucket, Prefix: PREFIX, EncodingType: 'url' }),
      new ListObjectsCommand({ Bucket: stack.bucket, Prefix: PREFIX, EncodingType: 'url', Delimiter: '/' }),
    ]) {
      const url = await getSignedUrl(stack.s3, command as ListObjectsV2Command, { expiresIn: 60 });
      const res = await fetch(url);
      const xml = await res.text();
      assert.equal(res.status, 200, xml);
      assert.match(xml, XML_CHARS, 'only XML 1.0 characters');
      assert.equal(xmlParser.validate(xml), true, 'well-formed');
      // The SDK's own parser (line-end normalisation and all) reads back exactly what was encoded.
      const result = parseXML(xml).ListBucketResult;
      assert.equal(result.EncodingType, 'url');
      assert.equal(result.Prefix, 'ctl/');
      const keys: string[] = [result.Contents ?? []].flat().map((c: { Key: string }) => c.Key);
      for (const k of keys) assert.match(k, /^[A-Za-z0-9/+%._~!*'()-]*$/, `encoded: ${k}`);
      if (command instanceof ListObjectsV2Command) {
        assert.deepEqual(keys.map(decodeS3Key), KEYS);
        assert.ok(
          keys.includes('ctl/cr%0Dhere.jpg') && keys.includes('ctl/space+here.jpg') && keys.includes('ctl/plus%2Bsign.jpg'),
          keys.join(' '),
        );
        assert.ok(keys.includes('ctl/a%1B%5D0%3Bpwned%07b.jpg') && keys.includes('ctl/pct%2541%25zz%25.jpg'), keys.join(' '));
      } else {
        // Delimiter '/': the key in a "folder" rolls up into a common prefix, encoded too.
        assert.equal(result.Delimiter, '/');
        const prefixes = [result.CommonPrefixes ?? []].flat().map((p: { Prefix: string }) => p.Prefix);
        assert.deepEqual(prefixes, ['ctl/sub+dir%2Bx/']);
        assert.deepEqual(
          keys.map(decodeS3Key),
          KEYS.filter((k) => !k.slice(PREFIX.length).includes('/')),
        );
      }
    }
    // A delimiter that needs encoding is echoed encoded. (Not across "folders": s3rver skips those
    // whose name holds a delimiter other than '/'.)
    const spaced = await fetch(
      await getSignedUrl(
        stack.s3,
        new ListObjectsCommand({ Bucket: stack.bucket, Prefix: 'ctl/sp', EncodingType: 'url', Delimiter: ' ' }),
        {
          expiresIn: 60,
        },
      ),
    );
    const spacedResult = parseXML(await spaced.text()).ListBucketResult;
    assert.deepEqual([spacedResult.Delimiter, spacedResult.Prefix, spacedResult.CommonPrefixes?.Prefix], ['+', 'ctl/sp', 'ctl/space+']);
    // Any other encoding type is S3's 400, not a listing that silently ignores it.
    const bad = await getSignedUrl(stack.s3, new ListObjectsV2Command({ Bucket: stack.bucket, EncodingType: 'base64' as 'url' }), {
      expiresIn: 60,
    });
    const res = await fetch(bad);
    assert.equal(res.status, 400);
    assert.match(await res.text(), /<Code>InvalidArgument<\/Code>/);
  });
});

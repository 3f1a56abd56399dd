import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { decodeS3Key, encodeS3Key, parseEventBody } from '../pipeline/events.ts';
import { asciiLabel, decodeTags, encodeFailed, encodeTagged, METADATA_BUDGET } from '../pipeline/marker.ts';
import { mergeTags } from '../pipeline/writeback.ts';
import { runtimeConfig, variantsOf } from '../pipeline/runtime-config.ts';
import { claimsToBeImage } from '../pipeline/router.ts';
import { readFileSync } from 'node:fs';

const record = (eventName: string, key: string, extra: object = {}) => ({
  eventVersion: '2.1',
  eventSource: 'aws:s3',
  eventName,
  eventTime: '2026-11-26T10:00:00.000Z',
  s3: { bucket: { name: 'photos' }, object: { key, size: 10, eTag: 'abc', sequencer: '0055AED6DCD90281E5', ...extra } },
});

describe('S3 events', () => {
  it('decodes notification keys (+ is a space, the rest percent-encoded) and round-trips the encoder', () => {
    assert.equal(decodeS3Key('a+b%2Bc.jpg'), 'a b+c.jpg');
    assert.equal(decodeS3Key('%E5%86%99%E7%9C%9F/1.jpg'), '写真/1.jpg');
    for (const key of ['a b+c.jpg', 'ünï/写真 (1)!*.jpg', "x'y~z/%41.png"]) assert.equal(decodeS3Key(encodeS3Key(key)), key);
    assert.equal(encodeS3Key('a b+c.jpg'), 'a+b%2Bc.jpg');
  });

  it('parses S3 → SQS notifications: created objects to route, removed ones to unindex, others skipped', () => {
    const body = JSON.stringify({
      Records: [
        record('ObjectCreated:Put', 'dir/a+b%2Bc.jpg', { versionId: 'v1' }),
        record('ObjectRemoved:Delete', 'x+y.jpg'),
        record('ObjectRestore:Completed', 'z.jpg'),
        record('ObjectCreated:Copy', 'y.jpg'),
      ],
    });
    const parsed = parseEventBody(body);
    assert.equal(parsed.type, 'objects');
    if (parsed.type !== 'objects') return;
    assert.equal(parsed.ignored, 1);
    assert.deepEqual(
      parsed.removed?.map((r) => r.key),
      ['x y.jpg'],
    );
    assert.deepEqual(
      parsed.objects.map((o) => [o.key, o.kind, o.versionId]),
      [
        ['dir/a b+c.jpg', 'Put', 'v1'],
        ['y.jpg', 'Copy', undefined],
      ],
    );
  });

  it('ignores s3:TestEvent and parses EventBridge Object Created (keys not encoded) and SNS-wrapped bodies', () => {
    assert.deepEqual(parseEventBody(JSON.stringify({ Service: 'Amazon S3', Event: 's3:TestEvent', Bucket: 'photos' })), { type: 'test' });
    const eb = {
      version: '0',
      'detail-type': 'Object Created',
      source: 'aws.s3',
      time: 't',
      detail: {
        bucket: { name: 'photos' },
        object: { key: 'a b+c.jpg', size: 5, etag: 'e1', 'version-id': 'v9', sequencer: '1' },
        reason: 'CopyObject',
      },
    };
    const p = parseEventBody(JSON.stringify(eb));
    assert.ok(p.type === 'objects' && p.objects[0].key === 'a b+c.jpg' && p.objects[0].kind === 'Copy' && p.objects[0].versionId === 'v9');
    const sns = parseEventBody(
      JSON.stringify({ Type: 'Notification', Message: JSON.stringify({ Records: [record('ObjectCreated:Post', 'k.jpg')] }) }),
    );
    assert.ok(sns.type === 'objects' && sns.objects[0].kind === 'Post');
    assert.equal(parseEventBody('not json').type, 'unrecognised');
    assert.equal(parseEventBody('{"hello":1}').type, 'unrecognised');
  });
});

describe('metadata marker', () => {
  const predictions = Array.from({ length: 200 }, (_, i) => ({ index: i, label: `label number ${i}, synonym`, probability: 1 / (i + 2) }));
  const fixed = { model: 'b0@0123456789ab', at: '2026-11-26T10:00:00.000Z', etag: 'd41d8cd98f00b204e9800998ecf8427e' };

  it('keeps every user key and truncates the tag list to the 2 KB budget', () => {
    const user = { owner: 'alice', note: 'x'.repeat(1200) };
    const enc = encodeTagged(user, predictions, fixed)!;
    assert.equal(enc.metadata.owner, 'alice');
    assert.equal(enc.metadata.note, user.note);
    // S3's rule, counted here rather than with the code's own metadataBytes: the UTF-8 bytes of every key and value, at most 2 KB.
    const bytes = Object.entries(enc.metadata).reduce(
      (n, [k, v]) => n + new TextEncoder().encode(k).length + new TextEncoder().encode(v).length,
      0,
    );
    assert.ok(bytes <= 2048, `${bytes} bytes`);
    assert.ok(bytes > 2048 - 30, `${bytes} bytes: the budget is used, not left half empty`);
    assert.equal(METADATA_BUDGET, 2048);
    assert.ok(enc.tagsWritten > 0 && enc.tagsDropped > 0 && enc.tagsWritten + enc.tagsDropped === 200);
    assert.deepEqual(decodeTags(enc.metadata['effitag-tags'])[0], { label: 'label number 0', probability: 0.5 });
    // Earlier EffiTag keys are replaced, not kept twice.
    const again = encodeTagged({ ...enc.metadata }, predictions.slice(0, 2), fixed)!;
    assert.equal(decodeTags(again.metadata['effitag-tags']).length, 2);
  });

  it('writes nothing rather than drop a user key when the user already uses the budget', () => {
    assert.equal(encodeTagged({ big: 'y'.repeat(2000) }, predictions, fixed), undefined);
    assert.equal(encodeFailed({ big: 'y'.repeat(2040) }, { ...fixed, reason: 'undecodable' }), undefined);
  });

  it('values are ASCII: non-ASCII labels are percent-encoded and decode back', () => {
    assert.equal(asciiLabel('café crème, coffee'), 'caf%C3%A9_cr%C3%A8me');
    const enc = encodeTagged({}, [{ index: 0, label: 'café', probability: 0.9 }], fixed)!;
    assert.match(enc.metadata['effitag-tags'], /^[\x20-\x7e]+$/);
    assert.equal(decodeTags(enc.metadata['effitag-tags'])[0].label, 'café');
  });

  it('object tags: merged under the 10-tag limit, never dropping user tags', () => {
    const p = [{ index: 1, label: "carpenter's kit, tool kit", probability: 0.7 }];
    const eight = Object.fromEntries(Array.from({ length: 8 }, (_, i) => [`k${i}`, 'v']));
    assert.deepEqual(
      Object.keys(mergeTags({ ...eight, 'effitag-tags': 'old' }, p, 'b0@x')!.tags).sort(),
      [...Object.keys(eight), 'effitag-model', 'effitag-tags'].sort(),
    );
    const ten = Object.fromEntries(Array.from({ length: 10 }, (_, i) => [`k${i}`, 'v']));
    assert.equal(mergeTags(ten, p, 'b0@x'), undefined);
    assert.match(mergeTags({}, p, 'b0@x')!.tags['effitag-tags'], /^carpenter s kit:0\.70$/);
  });
});

describe('which objects claim to be images', () => {
  it('by extension or Content-Type', () => {
    assert.ok(claimsToBeImage('a/b.JPG'));
    assert.ok(claimsToBeImage('x.jpeg') && claimsToBeImage('x.webp') && claimsToBeImage('scan.TIFF') && claimsToBeImage('p.heic'));
    assert.ok(claimsToBeImage('no-extension', 'image/png'));
    assert.ok(!claimsToBeImage('report.pdf', 'application/pdf'));
    assert.ok(!claimsToBeImage('data.json'));
    assert.ok(!claimsToBeImage('jpg.txt', 'text/plain'));
  });
});

describe('deployed runtime configuration', () => {
  it('reads tiers, queue URLs and weights location from the environment, with clear errors', () => {
    const tiers = readFileSync('tiers/defaults.json', 'utf8');
    const queueUrls = JSON.stringify({ economy: 'q1', standard: 'q2', premium: 'q3' });
    const c = runtimeConfig({ EFFITAG_TIERS: tiers, EFFITAG_QUEUE_URLS: queueUrls, EFFITAG_WEIGHTS: 's3://w/p', EFFITAG_TIER: 'standard' });
    assert.equal(c.tier, 'standard');
    assert.deepEqual(variantsOf(c.tiers, 'standard'), ['b0', 'b1', 'b2', 'b3']);
    assert.throws(
      () => runtimeConfig({ EFFITAG_TIERS: tiers, EFFITAG_QUEUE_URLS: '{}', EFFITAG_WEIGHTS: 's3://w' }),
      /no queue for tier economy/,
    );
    assert.throws(() => runtimeConfig({}), /EFFITAG_TIERS is not set/);
  });
});

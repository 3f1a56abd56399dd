import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { encodeS3Key, parseEventBody, type ParsedBody } from '../pipeline/events.ts';
import { makeRouter } from '../pipeline/router.ts';
import { parseTiers } from '../tiers/schema.ts';
import { gradientImage } from './support/fixtures.ts';
import { fixedCatalog, MemoryIndex, MemoryQueue, MemoryStore } from './support/memory-ports.ts';
import { eventBridgeBody, eventBridgeFromS3Record } from './rehearsal/eventbridge.ts';

/** The S3 user guide's examples ("EventBridge event message structure"), as an SQS rule target receives them. */
const DOC_CREATED = {
  version: '0',
  id: '17793124-05d4-b198-2fde-7ededc63b103',
  'detail-type': 'Object Created',
  source: 'aws.s3',
  account: '111122223333',
  time: '2021-11-12T00:00:00Z',
  region: 'ca-central-1',
  resources: ['arn:aws:s3:::DOC-EXAMPLE-BUCKET1'],
  detail: {
    version: '0',
    bucket: { name: 'DOC-EXAMPLE-BUCKET1' },
    object: {
      key: 'example-key',
      size: 5,
      etag: 'b1946ac92492d2347c6235b4d2611184',
      'version-id': 'IYV3p45BT0ac8hjHg1houSdS1a.Mro8e',
      sequencer: '617f08299329d189',
    },
    'request-id': 'N4N7GDK58NMKJ12R',
    requester: '123456789012',
    'source-ip-address': '1.2.3.4',
    reason: 'PutObject',
  },
};
const DOC_DELETED = {
  ...DOC_CREATED,
  'detail-type': 'Object Deleted',
  detail: {
    version: '0',
    bucket: { name: 'DOC-EXAMPLE-BUCKET1' },
    object: { key: 'example-key', 'version-id': '1QW9g1Z99LUNbvaaYVpW9xDlOLU.qxgF', sequencer: '617f0837b476e463' },
    'request-id': '0BH729840619AG5K',
    requester: '123456789012',
    'source-ip-address': '1.2.3.4',
    reason: 'DeleteObject',
    'deletion-type': 'Delete Marker Created',
  },
};

const objects = (p: ParsedBody) => {
  assert.equal(p.type, 'objects', JSON.stringify(p));
  return p as Extract<ParsedBody, { type: 'objects' }>;
};

describe('EventBridge S3 events (effitag:events=eventbridge)', () => {
  it('parses the documented Object Created event: bucket, key, size, etag, version, sequencer, reason', () => {
    const p = objects(parseEventBody(JSON.stringify(DOC_CREATED)));
    assert.deepEqual(p.objects, [
      {
        bucket: 'DOC-EXAMPLE-BUCKET1',
        key: 'example-key',
        eTag: 'b1946ac92492d2347c6235b4d2611184',
        versionId: 'IYV3p45BT0ac8hjHg1houSdS1a.Mro8e',
        size: 5,
        sequencer: '617f08299329d189',
        kind: 'Put',
        eventTime: '2021-11-12T00:00:00Z',
      },
    ]);
    assert.equal(p.removed, undefined);
  });

  it('maps every creating reason to the kind the router acts on (CopyObject is the write-back guard)', () => {
    const kinds = (['PutObject', 'POST Object', 'CopyObject', 'CompleteMultipartUpload'] as const).map(
      (reason) =>
        objects(parseEventBody(eventBridgeBody({ change: 'created', bucket: 'b', key: 'k.jpg', size: 1, eTag: 'e', reason }))).objects[0]
          .kind,
    );
    assert.deepEqual(kinds, ['Put', 'Post', 'Copy', 'CompleteMultipartUpload']);
  });

  it('reads Object Deleted as a removal and says whether a delete marker hid the object or it is gone', () => {
    const marker = objects(parseEventBody(JSON.stringify(DOC_DELETED)));
    assert.deepEqual(marker.objects, []);
    assert.deepEqual(marker.removed, [
      {
        bucket: 'DOC-EXAMPLE-BUCKET1',
        key: 'example-key',
        versionId: '1QW9g1Z99LUNbvaaYVpW9xDlOLU.qxgF',
        eventTime: '2021-11-12T00:00:00Z',
        deletion: 'delete-marker',
      },
    ]);
    const gone = objects(parseEventBody(eventBridgeBody({ change: 'removed', bucket: 'b', key: 'x.jpg', reason: 'Lifecycle Expiration' })));
    assert.deepEqual(
      gone.removed?.map((r) => [r.key, r.deletion, r.versionId]),
      [['x.jpg', 'permanent', undefined]],
    );
  });

  it('keeps EventBridge keys as they are: no URL-decoding of "+", "%" or spaces', () => {
    for (const key of ['a b+c.jpg', '100%25/ünï 写真 (1).png', 'x+y/%41.jpeg']) {
      const p = objects(parseEventBody(eventBridgeBody({ change: 'created', bucket: 'b', key, size: 3, eTag: 'e' })));
      assert.equal(p.objects[0].key, key);
    }
  });

  it('agrees with S3 notification mode: the same upload parses to the same object either way', () => {
    const key = 'catalog/sale 50%+off/ünï.jpg';
    const record = {
      eventVersion: '2.1',
      eventSource: 'aws:s3',
      eventName: 'ObjectCreated:CompleteMultipartUpload',
      eventTime: '2026-11-26T10:00:07.000Z',
      s3: {
        bucket: { name: 'photos' },
        object: { key: encodeS3Key(key), size: 123, eTag: '"abc-2"', versionId: 'v1', sequencer: '0055AED6DCD90281E5' },
      },
    };
    const viaS3 = objects(parseEventBody(JSON.stringify({ Records: [record] }))).objects;
    const viaEb = objects(parseEventBody(JSON.stringify(eventBridgeFromS3Record(record)))).objects;
    assert.equal(viaS3[0].key, key);
    // EventBridge times are to the second; everything else is identical.
    assert.deepEqual({ ...viaEb[0], eventTime: undefined }, { ...viaS3[0], eventTime: undefined });
    assert.equal(viaEb[0].eventTime, '2026-11-26T10:00:07Z');
    const removal = { ...record, eventName: 'ObjectRemoved:DeleteMarkerCreated' };
    assert.deepEqual(
      objects(parseEventBody(JSON.stringify(eventBridgeFromS3Record(removal)))).removed?.map((r) => [r.key, r.deletion]),
      objects(parseEventBody(JSON.stringify({ Records: [removal] }))).removed?.map((r) => [r.key, r.deletion]),
    );
    assert.deepEqual(
      objects(parseEventBody(JSON.stringify({ Records: [removal] }))).removed?.map((r) => [r.key, r.deletion]),
      [[key, 'delete-marker']],
    );
  });

  it('counts other S3 detail-types as ignored, not as errors', () => {
    const restore = { ...DOC_CREATED, 'detail-type': 'Object Restore Completed' };
    assert.deepEqual(parseEventBody(JSON.stringify(restore)), { type: 'objects', objects: [], ignored: 1 });
  });

  it('reports an S3 event without a bucket or key as unrecognised (a permanent, logged error), not a crash', () => {
    const noBucket = { ...DOC_CREATED, detail: { ...DOC_CREATED.detail, bucket: undefined } };
    const noKey = { ...DOC_DELETED, detail: { ...DOC_DELETED.detail, object: { sequencer: '1' } } };
    for (const body of [noBucket, noKey]) {
      const p = parseEventBody(JSON.stringify(body));
      assert.equal(p.type, 'unrecognised');
      assert.match(
        (p as { reason: string }).reason,
        /EventBridge Object (Created|Deleted) event without detail\.bucket\.name or detail\.object\.key/,
      );
    }
    const record = { eventSource: 'aws:s3', eventName: 'ObjectCreated:Put', s3: { object: { key: 'k.jpg' } } };
    const p = parseEventBody(JSON.stringify({ Records: [record] }));
    assert.equal(p.type, 'unrecognised');
  });

  it('treats lifecycle expirations in S3 notifications as removals, as EventBridge mode does', () => {
    const record = (eventName: string) => ({
      eventSource: 'aws:s3',
      eventName,
      s3: { bucket: { name: 'b' }, object: { key: 'old+photo.jpg' } },
    });
    const p = objects(
      parseEventBody(
        JSON.stringify({ Records: [record('LifecycleExpiration:Delete'), record('LifecycleExpiration:DeleteMarkerCreated')] }),
      ),
    );
    assert.deepEqual(
      p.removed?.map((r) => [r.key, r.deletion]),
      [
        ['old photo.jpg', 'permanent'],
        ['old photo.jpg', 'delete-marker'],
      ],
    );
  });
});

describe('the router on EventBridge bodies (as the intake queue receives them from the rule)', () => {
  const tiers = parseTiers({
    version: 1,
    tiers: { cpu: { variants: ['b0'], compute: { target: 'lambda-cpu', memoryMb: 2048 }, engine: 'ort', batchSize: 8 } },
    routing: { default: { tier: 'cpu' } },
  });

  it('routes an Object Created upload by its literal key, unindexes on Object Deleted, and refuses a malformed event permanently', async () => {
    const store = new MemoryStore();
    const queue = new MemoryQueue();
    const index = new MemoryIndex();
    const router = makeRouter({ store, queues: { cpu: queue }, tiers, models: fixedCatalog({ topClass: 207 }), index });
    const key = 'sale 50%+off/dog.png';
    const bytes = await gradientImage(64, 48, 'png');
    const eTag = store.put('photos', key, bytes);
    const [outcome] = await router.handleBody(eventBridgeBody({ change: 'created', bucket: 'photos', key, size: bytes.length, eTag }));
    assert.equal(outcome.action, 'enqueued', JSON.stringify(outcome));
    assert.equal(outcome.action === 'enqueued' && outcome.task.key, key);
    assert.equal(queue.messages.length, 1);

    await index.put({
      bucket: 'photos',
      key,
      eTag,
      lastModified: new Date('2026-12-01T00:00:00Z'),
      size: bytes.length,
      variant: 'b0',
      marker: 'b0@cafe',
      at: '2026-12-01T00:00:01Z',
      tags: [{ tag: 'dog', probability: 0.9, leaf: false }],
    });
    store.delete('photos', key);
    await router.handleBody(eventBridgeBody({ change: 'removed', bucket: 'photos', key, time: new Date('2026-12-02T00:00:00Z') }));
    assert.equal((await index.search({ bucket: 'photos', tags: ['dog'], limit: 5 })).hits.length, 0, 'deleted: unindexed');

    await assert.rejects(
      router.handleBody(JSON.stringify({ source: 'aws.s3', 'detail-type': 'Object Created', detail: { object: { key } } })),
      (err: Error & { permanent?: boolean }) => err.permanent === true && /without detail\.bucket\.name/.test(err.message),
    );
  });
});

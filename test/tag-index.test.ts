/**
 * The tag index on a real DynamoDB API (dynalite over HTTP): searches by leaf, rolled-up and several
 * tags, minimum probability and prefix; exact pagination across shards; overwrites replace entries
 * and lose to nothing older; removals delete them.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { dynamoClient } from '../pipeline/aws/clients.ts';
import { DynamoTagIndex, ensureIndexTable } from '../pipeline/aws/dynamo-index.ts';
import { generateCredentials } from '../pipeline/aws/local-credentials.ts';
import { scoreTags } from '../model/tag-hierarchy.ts';
import { type IndexedObject, SHARDS, shardOf, type TagIndex } from '../pipeline/tag-index.ts';
import { startDynamoServer, type RunningDynamo } from '../local/dynamo-server.ts';
import { indexExisting, pruneIndex } from '../pipeline/index-backfill.ts';
import { MemoryStore } from './support/memory-ports.ts';

let server: RunningDynamo;
let index: DynamoTagIndex;
const credentials = generateCredentials();
const client = () => dynamoClient({ dynamoEndpoint: server.endpoint, credentials });

const object = (key: string, minutes: number, labels: [string, number][], bucket = 'photos'): IndexedObject => ({
  bucket,
  key,
  eTag: `etag-${key}-${minutes}`,
  lastModified: new Date(Date.UTC(2026, 0, 1, 0, minutes)),
  size: 1000 + minutes,
  variant: 'b0',
  marker: 'b0@abc',
  at: new Date(Date.UTC(2026, 0, 2)).toISOString(),
  tags: scoreTags(
    labels.map(([label, probability]) => ({ label, probability })),
    { imagenet: true },
  ),
});

async function all(ix: TagIndex, query: Omit<Parameters<TagIndex['search']>[0], 'limit' | 'cursor'>, limit: number): Promise<string[]> {
  const keys: string[] = [];
  let cursor: string | undefined;
  do {
    const page = await ix.search({ ...query, limit, cursor });
    assert.ok(page.hits.length <= limit);
    keys.push(...page.hits.map((h) => h.key));
    cursor = page.cursor;
  } while (cursor);
  return keys;
}

describe('tag index (DynamoDB API, dynalite)', () => {
  before(async () => {
    server = await startDynamoServer({ credentials });
    const c = client();
    await ensureIndexTable(c, 'effitag-index');
    await ensureIndexTable(c, 'effitag-index'); // idempotent
    index = new DynamoTagIndex(c, 'effitag-index');
    await index.put(
      object('dogs/rex.jpg', 1, [
        ['golden retriever', 0.7],
        ['tennis ball', 0.2],
      ]),
    );
    await index.put(object('dogs/lab.jpg', 2, [['Labrador retriever', 0.9]]));
    await index.put(
      object('cats/tom.jpg', 3, [
        ['tabby', 0.8],
        ['tennis ball', 0.1],
      ]),
    );
    await index.put(object('cars/fast.jpg', 4, [['sports car', 0.95]]));
    await index.put(object('dogs/other-bucket.jpg', 5, [['golden retriever', 0.9]], 'elsewhere'));
  });
  after(async () => server.close());

  it('finds by leaf tag, rolled-up tag and two tags together, newest first, in one bucket only', async () => {
    const keys = async (tags: string[], extra: { minProbability?: number; prefix?: string } = {}) =>
      (await index.search({ bucket: 'photos', tags, limit: 50, ...extra })).hits.map((h) => h.key);
    assert.deepEqual(await keys(['golden retriever']), ['dogs/rex.jpg']);
    assert.deepEqual(await keys(['dog']), ['dogs/lab.jpg', 'dogs/rex.jpg']);
    assert.deepEqual(await keys(['carnivore']), ['cats/tom.jpg', 'dogs/lab.jpg', 'dogs/rex.jpg']);
    assert.deepEqual(await keys(['vehicle']), ['cars/fast.jpg']);
    assert.deepEqual(await keys(['dog', 'tennis ball']), ['dogs/rex.jpg']);
    assert.deepEqual(await keys(['carnivore', 'ball']), ['cats/tom.jpg', 'dogs/rex.jpg']);
    assert.deepEqual(await keys(['carnivore'], { minProbability: 0.75 }), ['cats/tom.jpg', 'dogs/lab.jpg']);
    assert.deepEqual(await keys(['carnivore', 'ball'], { minProbability: 0.15 }), ['dogs/rex.jpg']);
    assert.deepEqual(await keys(['carnivore'], { prefix: 'dogs/' }), ['dogs/lab.jpg', 'dogs/rex.jpg']);
    assert.deepEqual(await keys([]), ['cars/fast.jpg', 'cats/tom.jpg', 'dogs/lab.jpg', 'dogs/rex.jpg']);
    assert.deepEqual(await keys(['giraffe']), []);
    const hit = (await index.search({ bucket: 'photos', tags: ['dog'], limit: 1 })).hits[0];
    assert.equal(hit.tags.dog, 0.9);
    assert.equal(hit.tags['labrador retriever'], 0.9);
    assert.equal(hit.lastModified, new Date(Date.UTC(2026, 0, 1, 0, 2)).toISOString());
  });

  it('pages exactly through objects spread over every shard', async () => {
    const ix = new DynamoTagIndex(client(), 'effitag-index');
    const keys = Array.from({ length: 70 }, (_, i) => `many/${String(i).padStart(3, '0')}.jpg`);
    assert.equal(new Set(keys.map(shardOf)).size, SHARDS);
    for (const [i, key] of keys.entries()) await ix.put(object(key, 100 + i, [['goldfish', 0.6]], 'pages'));
    const newestFirst = [...keys].reverse();
    assert.deepEqual(await all(ix, { bucket: 'pages', tags: ['fish'] }, 7), newestFirst);
    assert.deepEqual(await all(ix, { bucket: 'pages', tags: ['goldfish'] }, 1000), newestFirst);
    // A filter that keeps one key in ten still pages exactly.
    assert.deepEqual(
      await all(ix, { bucket: 'pages', tags: ['fish'], prefix: 'many/01' }, 3),
      newestFirst.filter((k) => k.startsWith('many/01')),
    );
    await assert.rejects(ix.search({ bucket: 'pages', tags: [], limit: 5, cursor: 'nonsense' }), /invalid cursor/);
  });

  it('an overwrite replaces the entries; an older version arriving late is ignored', async () => {
    const v1 = object('swap.jpg', 10, [['golden retriever', 0.8]], 'swap');
    const v2 = object('swap.jpg', 20, [['sports car', 0.9]], 'swap');
    assert.equal((await index.put(v1)).status, 'indexed');
    assert.equal((await index.put(v1)).status, 'unchanged');
    const r2 = await index.put(v2);
    assert.equal(r2.status, 'indexed');
    assert.ok(r2.status === 'indexed' && r2.deleted >= 12, "the old version's entries are deleted");
    const find = async (tag: string) => (await index.search({ bucket: 'swap', tags: [tag], limit: 10 })).hits.map((h) => h.eTag);
    assert.deepEqual(await find('dog'), []);
    assert.deepEqual(await find('car'), [v2.eTag]);
    assert.deepEqual(await find('*'), [v2.eTag]);
    assert.equal((await index.put(v1)).status, 'stale');
    assert.deepEqual(await find('dog'), []);
    assert.equal((await index.get('swap', 'swap.jpg'))?.eTag, v2.eTag);
  });

  it('a removal deletes every entry, unless a newer version was indexed after it', async () => {
    const v = object('gone.jpg', 30, [['tabby', 0.9]], 'gone');
    await index.put(v);
    assert.equal(
      await index.remove('gone', 'gone.jpg', new Date(Date.UTC(2026, 0, 1, 0, 29))),
      0,
      'a delete older than the indexed upload',
    );
    assert.equal((await index.search({ bucket: 'gone', tags: ['cat'], limit: 5 })).hits.length, 1);
    const removed = await index.remove('gone', 'gone.jpg', new Date(Date.UTC(2026, 0, 1, 0, 31)));
    assert.equal(removed, v.tags.length + 1);
    assert.equal((await index.search({ bucket: 'gone', tags: ['cat'], limit: 5 })).hits.length, 0);
    assert.equal((await index.search({ bucket: 'gone', tags: [], limit: 5 })).hits.length, 0);
    assert.equal(await index.get('gone', 'gone.jpg'), undefined);
    assert.equal(await index.remove('gone', 'gone.jpg', new Date()), 0);
  });

  it('backfill --index fills the index from tags already in metadata, without inference, and only for current taggings', async () => {
    const store = new MemoryStore();
    const tagged = (etag: string) => ({
      'effitag-status': 'tagged',
      'effitag-model': 'b0@abc',
      'effitag-at': '2026-01-01T00:00:00.000Z',
      'effitag-etag': etag,
      'effitag-tags': 'golden_retriever=0.800;tennis_ball=0.150',
      owner: 'kept',
    });
    const md5 = (s: string) => createHash('md5').update(s).digest('hex');
    store.put('meta', 'a.jpg', 'bytes a', { metadata: tagged(md5('bytes a')) });
    store.put('meta', 'b.jpg', 'bytes b', { metadata: tagged('an-older-upload') }); // overwritten since it was tagged
    store.put('meta', 'c.jpg', 'bytes c', { metadata: { 'effitag-status': 'failed', 'effitag-etag': md5('bytes c') } });
    store.put('meta', 'd.jpg', 'bytes d');
    store.put('meta', 'other/e.jpg', 'bytes e', { metadata: tagged(md5('bytes e')) });
    const first = await indexExisting({ store, index }, { bucket: 'meta', concurrency: 2 });
    assert.deepEqual(
      { ...first, errorSamples: undefined },
      { listed: 5, indexed: 2, unchanged: 0, untagged: 3, stale: 0, errors: 0, errorSamples: undefined, complete: true },
    );
    const dogs = await index.search({ bucket: 'meta', tags: ['dog', 'ball'], limit: 10 });
    assert.deepEqual(dogs.hits.map((h) => h.key).sort(), ['a.jpg', 'other/e.jpg']);
    assert.equal(dogs.hits[0].tags['golden retriever'], 0.8);
    assert.equal(dogs.hits[0].variant, 'b0');
    assert.equal(store.count('get') + store.count('getRange') + store.count('replaceMetadata'), 0, 'HEADs only: no download, no write');
    const again = await indexExisting({ store, index }, { bucket: 'meta', prefix: 'other/' });
    assert.equal(again.unchanged, 1);
    assert.equal(again.indexed, 0);
  });

  it('backfill --index --prune unindexes what was deleted unseen (a HEAD per key the index holds)', async () => {
    const store = new MemoryStore();
    const png = 'image bytes';
    for (const key of ['keep.jpg', 'gone-1.jpg', 'gone-2.jpg', 'sub/gone-3.jpg']) {
      const eTag = store.put('prune', key, `${png} ${key}`);
      await index.put({ ...object(key, 50, [['tabby', 0.9]], 'prune'), eTag });
    }
    for (const key of ['gone-1.jpg', 'gone-2.jpg', 'sub/gone-3.jpg']) store.delete('prune', key);
    const onlySub = await pruneIndex({ store, index }, { bucket: 'prune', prefix: 'sub/' });
    assert.deepEqual(onlySub, { checked: 1, pruned: 1, errors: 0, errorSamples: [] });
    const rest = await pruneIndex({ store, index }, { bucket: 'prune' });
    assert.deepEqual(rest, { checked: 3, pruned: 2, errors: 0, errorSamples: [] });
    assert.deepEqual(
      (await index.search({ bucket: 'prune', tags: ['cat'], limit: 10 })).hits.map((h) => h.key),
      ['keep.jpg'],
    );
    // Other buckets' records are not this bucket's keys.
    assert.ok((await index.keys('prune', {})).keys.every((k) => k === 'keep.jpg'));
  });
});

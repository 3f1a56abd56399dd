/**
 * Two index writes of different versions of one object at once (two workers: an overwrite's task
 * and a late retry of the older upload's), against the DynamoDB stand-in. Each test forces one
 * interleaving with a middleware on the client: both writes read the object's record before either
 * writes, then the record writes land in a chosen order. The newer upload must win whatever the
 * order, and no entry of the older one may stay searchable.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import type { DynamoDBClient } from '@aws-sdk/client-dynamodb';
import { startDynamoServer, type RunningDynamo } from '../local/dynamo-server.ts';
import { scoreTags } from '../model/tag-hierarchy.ts';
import { dynamoClient } from '../pipeline/aws/clients.ts';
import { DynamoTagIndex, ensureIndexTable } from '../pipeline/aws/dynamo-index.ts';
import { generateCredentials } from '../pipeline/aws/local-credentials.ts';
import type { IndexedObject } from '../pipeline/tag-index.ts';

const credentials = generateCredentials();
let server: RunningDynamo;

const version = (key: string, minutes: number, label: string): IndexedObject => ({
  bucket: 'photos',
  key,
  eTag: `etag-${minutes}`,
  lastModified: new Date(Date.UTC(2026, 0, 1, 0, minutes)),
  size: 1000,
  variant: 'b0',
  marker: 'b0@abc',
  at: new Date(Date.UTC(2026, 0, 2)).toISOString(),
  tags: scoreTags([{ label, probability: 0.9 }], { imagenet: true }),
});

function deferred() {
  let resolve!: () => void;
  const promise = new Promise<void>((r) => {
    resolve = r;
  });
  return { promise, resolve };
}

/**
 * A client whose first two reads of the object's record wait for each other (both writers see the
 * same record), and whose record writes go in `order` (by the version's upload time in ms).
 */
function interleaving(key: string, order: [number, number], holdEntriesOf?: { at: Date; until: Promise<unknown> }): DynamoDBClient {
  const client = dynamoClient({ dynamoEndpoint: server.endpoint, credentials });
  const bothRead = deferred();
  let reads = 0;
  const written = new Map(order.map((ms) => [ms, deferred()]));
  client.middlewareStack.add(
    (next, context) => async (args) => {
      const input = args.input as any;
      const recordOf = (k: unknown) => (k as { pk?: { S?: string } } | undefined)?.pk?.S === `O#photos#${key}`;
      if (/^Get(Item)?Command$/.test(context.commandName ?? '') && recordOf(input.Key) && reads < 2) {
        if (++reads === 2) bothRead.resolve();
        await bothRead.promise;
      }
      const puts = Object.values((input.RequestItems ?? {}) as Record<string, any[]>).flat();
      if (holdEntriesOf && puts.some((r) => r.PutRequest?.Item?.m?.S === holdEntriesOf.at.toISOString())) await holdEntriesOf.until;
      if (/^Put(Item)?Command$/.test(context.commandName ?? '') && recordOf(input.Item) && input.Item.sk?.S === 'O') {
        const ms = Number(input.Item.ms.N);
        const turn = order.indexOf(ms);
        if (turn > 0) await written.get(order[turn - 1])!.promise;
        try {
          return await next(args);
        } finally {
          written.get(ms)?.resolve();
        }
      }
      return next(args);
    },
    // After the document client's marshalling (attribute values as { S }, { N }).
    { step: 'build', name: 'interleave' },
  );
  return client;
}

describe('tag index: concurrent writes of two versions (DynamoDB stand-in)', () => {
  before(async () => {
    server = await startDynamoServer({ credentials });
    await ensureIndexTable(dynamoClient({ dynamoEndpoint: server.endpoint, credentials }), 'effitag-index');
  });
  after(async () => server.close());

  for (const [name, first, late] of [
    ['the newer record written first, the older second', 'newer', false],
    ['the older record written first, the newer second', 'older', false],
    ['the older record first, its entries only after the newer write is done', 'older', true],
  ] as const) {
    it(`${name}: the newer version is indexed, nothing of the older is searchable`, async () => {
      const key = `race-${first}${late ? '-late' : ''}.jpg`;
      const older = version(key, 1, 'tabby');
      const newer = version(key, 2, 'golden retriever');
      const ms = [older, newer].map((v) => v.lastModified.getTime()) as [number, number];
      const newerDone = deferred();
      const client = interleaving(
        key,
        first === 'newer' ? [ms[1], ms[0]] : ms,
        late ? { at: older.lastModified, until: newerDone.promise } : undefined,
      );
      const index = new DynamoTagIndex(client, 'effitag-index');
      const [a, b] = await Promise.all([index.put(older), index.put(newer).finally(() => newerDone.resolve())]);
      assert.equal(b.status, 'indexed');
      // Refused before its record is written, or (its entries late) found stale after.
      if (first === 'newer' || late) assert.equal(a.status, 'stale', 'the older write does not stand over the newer');

      const plain = new DynamoTagIndex(dynamoClient({ dynamoEndpoint: server.endpoint, credentials }), 'effitag-index');
      const held = await plain.get('photos', key);
      assert.equal(held?.eTag, newer.eTag, 'the record names the newer version');
      assert.ok(held.tags['golden retriever']);
      assert.equal(held.tags.tabby, undefined);
      const search = async (tag: string) =>
        (await plain.search({ bucket: 'photos', tags: [tag], limit: 10 })).hits.filter((h) => h.key === key);
      assert.deepEqual(
        (await search('golden retriever')).map((h) => h.eTag),
        [newer.eTag],
      );
      assert.deepEqual(await search('tabby'), [], "the older version's entries are gone");
      assert.deepEqual(
        (await search('*')).map((h) => h.eTag),
        [newer.eTag],
        'listed once, as the newer version',
      );
    });
  }
});

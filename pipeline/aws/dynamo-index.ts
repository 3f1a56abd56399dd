/**
 * The tag index (pipeline/tag-index.ts) on DynamoDB: a deployed stack's table, or dynalite in the
 * embedded stack. Writes are idempotent, so a retried message repeats them harmlessly; an overwrite
 * race is settled by the record's conditional put on the upload time.
 */
import { ConditionalCheckFailedException, CreateTableCommand, type DynamoDBClient, DescribeTableCommand } from '@aws-sdk/client-dynamodb';
import {
  BatchWriteCommand,
  DeleteCommand,
  DynamoDBDocumentClient,
  GetCommand,
  PutCommand,
  QueryCommand,
  ScanCommand,
  UpdateCommand,
} from '@aws-sdk/lib-dynamodb';
import {
  ALL_TAG,
  decodeCursor,
  FAILED_TAG,
  shardOf,
  drivingTag,
  encodeCursor,
  entryKeys,
  entryPk,
  type IndexedObject,
  type IndexRecord,
  matches,
  mergeShards,
  type PutResult,
  RECORD_SK,
  recordPk,
  type SearchHit,
  type SearchPage,
  type SearchQuery,
  SHARDS,
  type Stalled,
  type TagIndex,
} from '../tag-index.ts';

/** The record as stored: `prev` lists earlier versions whose entries may still need deleting. */
interface StoredRecord {
  pk: string;
  sk: string;
  e: string;
  ms: number;
  marker: string;
  at: string;
  v: string;
  s: number;
  t: Record<string, number>;
  /** The failure's reason (a record of a failed tagging). */
  f?: string;
  /** Perceptual hash (16 hex digits), on the record only: `dupes` reads records, searches do not need it. */
  ph?: string;
  prev?: { ms: number; tags: string[] }[];
}

interface StoredEntry {
  pk: string;
  sk: string;
  k: string;
  e: string;
  m: string;
  s: number;
  v: string;
  a: string;
  t: Record<string, number>;
  f?: string;
}

/** DynamoDB's item size (attribute names and values; a number as about half its digits), for costing writes. */
export function itemBytes(item: Record<string, unknown>): number {
  const size = (v: unknown): number => {
    if (typeof v === 'string') return Buffer.byteLength(v, 'utf8');
    if (typeof v === 'number') return Math.ceil(String(v).replace(/[-.]/g, '').length / 2) + 1;
    if (typeof v === 'boolean' || v === null) return 1;
    if (Array.isArray(v)) return 3 + v.reduce((s, x) => s + 1 + size(x), 0);
    if (typeof v === 'object') return 3 + Object.entries(v as object).reduce((s, [k, x]) => s + Buffer.byteLength(k) + 1 + size(x), 0);
    return 0;
  };
  return Object.entries(item).reduce((s, [k, v]) => s + Buffer.byteLength(k) + size(v), 0);
}

/** Write request units of a put: one per started KB. */
export const writeUnits = (item: Record<string, unknown>) => Math.max(1, Math.ceil(itemBytes(item) / 1024));

export interface IndexUsage {
  writeUnits: number;
  readUnits: number;
  /** Item bytes put (records and entries), as DynamoDB sizes them: what the table stores. */
  bytesWritten: number;
}

export class DynamoTagIndex implements TagIndex {
  private readonly doc: DynamoDBDocumentClient;
  /** Request units used since construction (what the benchmark prices). */
  readonly usage: IndexUsage = { writeUnits: 0, readUnits: 0, bytesWritten: 0 };

  constructor(
    client: DynamoDBClient,
    readonly table: string,
  ) {
    this.doc = DynamoDBDocumentClient.from(client, { marshallOptions: { removeUndefinedValues: true } });
  }

  /** A Scan of the bucket's records (an operator's command, not the pipeline's: it reads the whole table). */
  async keys(bucket: string, options: { prefix?: string; cursor?: string } = {}): Promise<{ keys: string[]; cursor?: string }> {
    const out = await this.doc.send(
      new ScanCommand({
        TableName: this.table,
        FilterExpression: 'begins_with(pk, :p) AND sk = :o',
        ExpressionAttributeValues: { ':p': recordPk(bucket, options.prefix ?? ''), ':o': RECORD_SK },
        ProjectionExpression: 'pk',
        ExclusiveStartKey: options.cursor ? JSON.parse(Buffer.from(options.cursor, 'base64url').toString('utf8')) : undefined,
      }),
    );
    const strip = recordPk(bucket, '').length;
    return {
      keys: (out.Items ?? []).map((i) => String(i.pk).slice(strip)),
      ...(out.LastEvaluatedKey ? { cursor: Buffer.from(JSON.stringify(out.LastEvaluatedKey)).toString('base64url') } : {}),
    };
  }

  async get(bucket: string, key: string): Promise<IndexRecord | undefined> {
    const r = await this.getStored(bucket, key);
    return (
      r && {
        eTag: r.e,
        failed: r.f !== undefined,
        lastModified: new Date(r.ms),
        marker: r.marker,
        at: r.at,
        variant: r.v,
        size: r.s,
        tags: r.t,
        ...(r.ph ? { phash: r.ph } : {}),
      }
    );
  }

  private async getStored(bucket: string, key: string): Promise<StoredRecord | undefined> {
    const out = await this.doc.send(
      new GetCommand({ TableName: this.table, Key: { pk: recordPk(bucket, key), sk: RECORD_SK }, ConsistentRead: true }),
    );
    this.usage.readUnits += 1;
    return out.Item as StoredRecord | undefined;
  }

  async put(o: IndexedObject): Promise<PutResult> {
    const ms = o.lastModified.getTime();
    const tags = o.failure ? { [FAILED_TAG]: 1 } : Object.fromEntries(o.tags.map((t) => [t.tag, t.probability]));
    // The record is replaced only if it is still the one read (compare and swap): two workers
    // writing two versions at once each see the other's record, so the newer one lists the
    // older's entries in `prev` and deletes them, and the older one finds itself stale.
    let record: StoredRecord | undefined;
    let prev: { ms: number; tags: string[] }[] = [];
    for (let attempt = 1; !record; attempt++) {
      const old = await this.getStored(o.bucket, o.key);
      if (old && old.ms > ms) return { status: 'stale' };
      const sameTags = old && old.ms === ms && JSON.stringify(old.t) === JSON.stringify(tags);
      if (sameTags && old.e === o.eTag && old.marker === o.marker && old.ph === o.phash && !old.prev?.length)
        return { status: 'unchanged' };
      // Earlier versions whose entries may survive: the one being replaced, and any a crash left behind.
      prev = [...(old?.prev ?? []), ...(old && !sameTags ? [{ ms: old.ms, tags: Object.keys(old.t) }] : [])];
      const next: StoredRecord = {
        pk: recordPk(o.bucket, o.key),
        sk: RECORD_SK,
        e: o.eTag,
        ms,
        marker: o.marker,
        at: o.at,
        v: o.variant,
        s: o.size,
        t: tags,
        ...(o.failure ? { f: o.failure } : {}),
        ...(o.phash ? { ph: o.phash } : {}),
        ...(prev.length ? { prev } : {}),
      };
      try {
        await this.doc.send(
          new PutCommand({
            TableName: this.table,
            Item: next,
            ...(old
              ? {
                  ConditionExpression: 'ms = :ms AND e = :e AND #at = :at',
                  ExpressionAttributeNames: { '#at': 'at' },
                  ExpressionAttributeValues: { ':ms': old.ms, ':e': old.e, ':at': old.at },
                }
              : { ConditionExpression: 'attribute_not_exists(pk)' }),
          }),
        );
        this.countPut(next);
        record = next;
      } catch (err) {
        // Another write got in between: read again (it may be newer, and then this one is stale).
        if (!(err instanceof ConditionalCheckFailedException) || attempt >= 8) throw err;
      }
    }
    // A failure is listed under FAILED_TAG only, not among the tagged objects of ALL_TAG.
    const all = entryPk(o.bucket, ALL_TAG, shardOf(o.key));
    const keys = entryKeys(o.bucket, o.key, o.lastModified, Object.keys(tags)).filter((k) => !(o.failure && k.pk === all));
    const entries: StoredEntry[] = keys.map(({ pk, sk }) => ({
      pk,
      sk,
      k: o.key,
      e: o.eTag,
      m: o.lastModified.toISOString(),
      s: o.size,
      v: o.variant,
      a: o.at,
      t: tags,
      ...(o.failure ? { f: o.failure } : {}),
    }));
    await this.batchWrite(entries.map((Item) => ({ PutRequest: { Item } })));
    for (const e of entries) this.countPut(e);
    // A newer version's write may have replaced the record (and deleted its `prev` entries) while
    // these entries were on their way: then they are this writer's to delete, or they stay forever.
    const now = await this.getStored(o.bucket, o.key);
    if (!now || now.ms !== ms || now.e !== o.eTag) {
      const current = new Set(now ? entryKeys(o.bucket, o.key, new Date(now.ms), Object.keys(now.t)).map((k) => `${k.pk}\n${k.sk}`) : []);
      await this.deleteEntries(keys.filter((k) => !current.has(`${k.pk}\n${k.sk}`)));
      return { status: 'stale' };
    }
    const keep = new Set(keys.map((k) => `${k.pk}\n${k.sk}`));
    const stale = prev.flatMap((p) => entryKeys(o.bucket, o.key, new Date(p.ms), p.tags)).filter((k) => !keep.has(`${k.pk}\n${k.sk}`));
    const deleted = await this.deleteEntries(stale);
    if (prev.length) {
      // Done with them; if this fails, the next write or removal deletes them again (idempotent).
      await this.doc
        .send(
          new UpdateCommand({
            TableName: this.table,
            Key: { pk: record.pk, sk: RECORD_SK },
            UpdateExpression: 'REMOVE prev',
            ConditionExpression: 'ms = :ms AND e = :e',
            ExpressionAttributeValues: { ':ms': ms, ':e': o.eTag },
          }),
        )
        .catch((err) => {
          if (!(err instanceof ConditionalCheckFailedException)) throw err;
        });
      this.usage.writeUnits += 1;
    }
    return { status: 'indexed', written: entries.length + 1, deleted };
  }

  async remove(bucket: string, key: string, removedAt: Date): Promise<number> {
    const old = await this.getStored(bucket, key);
    if (!old || old.ms > removedAt.getTime()) return 0;
    const keys = [old, ...(old.prev ?? [])].flatMap((p) => entryKeys(bucket, key, new Date(p.ms), 't' in p ? Object.keys(p.t) : p.tags));
    const deleted = await this.deleteEntries(keys);
    await this.doc
      .send(
        new DeleteCommand({
          TableName: this.table,
          Key: { pk: old.pk, sk: RECORD_SK },
          ConditionExpression: 'ms = :ms',
          ExpressionAttributeValues: { ':ms': old.ms },
        }),
      )
      .catch((err) => {
        // A newer version was indexed meanwhile: its record stays.
        if (!(err instanceof ConditionalCheckFailedException)) throw err;
      });
    this.usage.writeUnits += 1;
    return deleted;
  }

  async search(q: SearchQuery): Promise<SearchPage> {
    const query = { ...q, tags: q.tags.filter((t) => t !== ALL_TAG) };
    if (!(query.limit >= 1 && query.limit <= 1000)) throw new Error('limit must be 1 to 1000');
    const driving = drivingTag(query.tags);
    const after = query.cursor ? decodeCursor(query.cursor) : undefined;
    let scanned = 0;
    // Entries promised to reads in flight as well as read: the shards read concurrently.
    let reserved = 0;
    type Hit = SearchHit & { sk: string };
    const streams = Array.from({ length: SHARDS }, (_, shard) => {
      const buffer: Hit[] = [];
      let lastKey: Record<string, unknown> | undefined;
      let lastRead: string | undefined;
      let done = false;
      // Keys spread evenly over the shards, so each gives about limit/SHARDS of a page: read a little
      // more than that first, and twice as much each time a shard runs dry (or a filter drops most).
      let pageSize = Math.min(1000, Math.ceil((query.limit / SHARDS) * 1.5) + 2);
      return async (): Promise<Hit | Stalled | undefined> => {
        while (!buffer.length && !done) {
          // Past the budget a shard stops (after its first read, so every page gets past the cursor).
          const budget = query.maxScanned === undefined || lastRead === undefined ? pageSize : query.maxScanned - reserved;
          if (budget <= 0) return { stalled: true, sk: lastRead! };
          const limit = Math.min(pageSize, budget);
          reserved += limit;
          const out = await this.doc.send(
            new QueryCommand({
              TableName: this.table,
              KeyConditionExpression: after ? 'pk = :pk AND sk > :after' : 'pk = :pk',
              ExpressionAttributeValues: { ':pk': entryPk(query.bucket, driving, shard), ...(after ? { ':after': after } : {}) },
              ExclusiveStartKey: lastKey,
              Limit: limit,
            }),
          );
          const items = (out.Items ?? []) as StoredEntry[];
          scanned += items.length;
          reserved += items.length - limit;
          if (items.length) lastRead = items.at(-1)!.sk;
          this.usage.readUnits += Math.max(0.5, (items.reduce((s, i) => s + itemBytes(i as never), 0) / 4096) * 0.5);
          const hits = items.map((i) => ({
            sk: i.sk,
            bucket: query.bucket,
            key: i.k,
            eTag: i.e,
            lastModified: i.m,
            size: i.s,
            variant: i.v,
            at: i.a,
            tags: i.t,
            ...(i.f ? { failure: i.f } : {}),
          }));
          const kept = hits.filter((h) => matches(h, query));
          buffer.push(...kept);
          pageSize = Math.min(1000, pageSize * (kept.length < hits.length / 2 ? 4 : 2));
          lastKey = out.LastEvaluatedKey;
          done = !lastKey;
        }
        return buffer.shift();
      };
    });
    const { items, more, resumeAfter } = await mergeShards(SHARDS, (s) => streams[s](), query.limit);
    const hits = items.map(({ sk: _sk, ...hit }) => hit);
    const last = resumeAfter ?? (more && items.length ? items.at(-1)!.sk : undefined);
    return { hits, scanned, ...(last ? { cursor: encodeCursor(last) } : {}) };
  }

  /** What a put costs and stores, for the usage figures. */
  private countPut(item: StoredRecord | StoredEntry): void {
    const fields = item as unknown as Record<string, unknown>;
    this.usage.writeUnits += writeUnits(fields);
    this.usage.bytesWritten += itemBytes(fields);
  }

  private async deleteEntries(keys: { pk: string; sk: string }[]): Promise<number> {
    await this.batchWrite(keys.map((Key) => ({ DeleteRequest: { Key } })));
    this.usage.writeUnits += keys.length;
    return keys.length;
  }

  /** BatchWriteItem in chunks of 25, retrying unprocessed items with backoff. */
  private async batchWrite(requests: Record<string, unknown>[]): Promise<void> {
    for (let i = 0; i < requests.length; i += 25) {
      let pending = requests.slice(i, i + 25);
      for (let attempt = 0; pending.length; attempt++) {
        if (attempt > 8) throw new Error(`index: ${pending.length} writes still unprocessed after ${attempt} attempts`);
        if (attempt) await new Promise((r) => setTimeout(r, Math.min(2000, 25 * 2 ** attempt)));
        const out = await this.doc.send(new BatchWriteCommand({ RequestItems: { [this.table]: pending as never } }));
        pending = (out.UnprocessedItems?.[this.table] ?? []) as Record<string, unknown>[];
      }
    }
  }
}

/** The embedded stack's table (a deployed stack's comes from CDK): on-demand, pk/sk strings. */
export async function ensureIndexTable(client: DynamoDBClient, table: string): Promise<void> {
  try {
    await client.send(new DescribeTableCommand({ TableName: table }));
    return;
  } catch (err) {
    if ((err as { name?: string }).name !== 'ResourceNotFoundException') throw err;
  }
  await client.send(
    new CreateTableCommand({
      TableName: table,
      BillingMode: 'PAY_PER_REQUEST',
      AttributeDefinitions: [
        { AttributeName: 'pk', AttributeType: 'S' },
        { AttributeName: 'sk', AttributeType: 'S' },
      ],
      KeySchema: [
        { AttributeName: 'pk', KeyType: 'HASH' },
        { AttributeName: 'sk', KeyType: 'RANGE' },
      ],
    }),
  );
}

/**
 * In-memory ports for the pipeline's rules: an object store with S3's conditional semantics
 * (If-Match, 404 vs 412, ranged reads, storage classes, object tags), a queue with SQS's receive
 * counts, visibility and FIFO deduplication, and a model catalog whose engine answers a fixed class.
 * The router and worker stages run against these in milliseconds; the embedded-stack tests keep the
 * end-to-end paths over real HTTP.
 */
import type { IndexedObject, IndexRecord, PutResult, SearchPage, SearchQuery, TagIndex } from '../../pipeline/tag-index.ts';
import { createHash } from 'node:crypto';
import type { LoadedModel } from '../../inference/engine.ts';
import type { WeightsManifest } from '../../model/weights.ts';
import type { ModelCatalog } from '../../pipeline/models.ts';
import { parseTiers, type TiersFile } from '../../tiers/schema.ts';
import {
  StoreError,
  type ListPage,
  type MessageQueue,
  type ObjectHead,
  type ObjectRef,
  type ObjectStore,
  type OutgoingMessage,
  type QueueDepth,
  type QueueMessage,
} from '../../pipeline/ports.ts';

interface StoredObject {
  bytes: Uint8Array;
  head: ObjectHead;
  tags: Record<string, string>;
}

type Method = 'head' | 'getRange' | 'get' | 'replaceMetadata' | 'getTags' | 'putTags' | 'list';

/** `s` with its downloads refused (a missing permission, say): every task fails until its last receive. */
export const denyingStore = (s: ObjectStore): ObjectStore => ({
  head: (r) => s.head(r),
  getRange: (...a) => s.getRange(...a),
  get: async () => {
    throw new StoreError('denied', 'GET: AccessDenied (HTTP 403)');
  },
  replaceMetadata: (...a) => s.replaceMetadata(...a),
  getTags: (r) => s.getTags(r),
  putTags: (...a) => s.putTags(...a),
  list: (...a) => s.list(...a),
});

export class MemoryStore implements ObjectStore {
  readonly objects = new Map<string, StoredObject>();
  /** Calls per method, in order: what a test asserts was (not) done. */
  readonly calls: { method: Method; key?: string }[] = [];
  private readonly faults: { method: Method; error: Error }[] = [];
  /** Runs just before a metadata copy is applied (a test overwrites the object here to race it). */
  beforeCopy?: (ref: ObjectRef) => void;

  put(
    bucket: string,
    key: string,
    bytes: Uint8Array | string,
    options: { contentType?: string; metadata?: Record<string, string>; storageClass?: string; lastModified?: Date } = {},
  ): string {
    const data = typeof bytes === 'string' ? new TextEncoder().encode(bytes) : bytes;
    const eTag = createHash('md5').update(data).digest('hex');
    this.objects.set(`${bucket}/${key}`, {
      bytes: data,
      tags: {},
      head: {
        eTag,
        contentLength: data.length,
        contentType: options.contentType,
        storageClass: options.storageClass,
        metadata: { ...options.metadata },
        lastModified: options.lastModified ?? new Date(),
      },
    });
    return eTag;
  }

  delete(bucket: string, key: string): void {
    this.objects.delete(`${bucket}/${key}`);
  }

  metadataOf(bucket: string, key: string): Record<string, string> {
    return { ...this.find({ bucket, key }).head.metadata };
  }

  /** The next call of `method` throws `error`. */
  failNext(method: Method, error: Error): void {
    this.faults.push({ method, error });
  }

  count(method: Method): number {
    return this.calls.filter((c) => c.method === method).length;
  }

  private enter(method: Method, key?: string): void {
    this.calls.push({ method, key });
    const i = this.faults.findIndex((f) => f.method === method);
    if (i >= 0) throw this.faults.splice(i, 1)[0].error;
  }

  private find(ref: ObjectRef, ifMatch?: string): StoredObject {
    const o = this.objects.get(`${ref.bucket}/${ref.key}`);
    if (!o) throw new StoreError('not-found', `${ref.key}: no such key`);
    if (ifMatch && o.head.eTag !== ifMatch) throw new StoreError('precondition', `${ref.key}: ETag is ${o.head.eTag}, not ${ifMatch}`);
    return o;
  }

  async head(ref: ObjectRef): Promise<ObjectHead> {
    this.enter('head', ref.key);
    return structuredClone(this.find(ref).head);
  }

  async getRange(ref: ObjectRef, start: number, end: number, ifMatch?: string) {
    this.enter('getRange', ref.key);
    const o = this.find(ref, ifMatch);
    return { head: structuredClone(o.head), bytes: o.bytes.slice(start, end + 1) };
  }

  async get(ref: ObjectRef, options: { ifMatch?: string; maxBytes: number }) {
    this.enter('get', ref.key);
    const o = this.find(ref, options.ifMatch);
    if (o.bytes.length > options.maxBytes) throw new StoreError('too-large', `${ref.key}: ${o.bytes.length} bytes`);
    return { head: structuredClone(o.head), bytes: o.bytes.slice() };
  }

  async replaceMetadata(ref: ObjectRef, _head: ObjectHead, metadata: Record<string, string>, ifMatch: string) {
    this.enter('replaceMetadata', ref.key);
    this.beforeCopy?.(ref);
    const o = this.find(ref, ifMatch);
    // A copy of a single-part object keeps its ETag (the MD5 of the same bytes), as on S3.
    o.head = { ...o.head, metadata: { ...metadata }, lastModified: new Date() };
    return { eTag: o.head.eTag };
  }

  async getTags(ref: ObjectRef) {
    this.enter('getTags', ref.key);
    return { ...this.find(ref).tags };
  }

  async putTags(ref: ObjectRef, tags: Record<string, string>) {
    this.enter('putTags', ref.key);
    this.find(ref).tags = { ...tags };
  }

  async list(bucket: string, options: { prefix?: string; startAfter?: string; maxKeys?: number }): Promise<ListPage> {
    this.enter('list');
    const keys = [...this.objects.keys()]
      .filter((k) => k.startsWith(`${bucket}/${options.prefix ?? ''}`))
      .map((k) => k.slice(bucket.length + 1))
      .sort();
    const from = options.startAfter ? keys.filter((k) => k > options.startAfter!) : keys;
    return {
      objects: from.slice(0, options.maxKeys ?? 1000).map((key) => {
        const { head } = this.objects.get(`${bucket}/${key}`)!;
        return { key, eTag: head.eTag, size: head.contentLength, lastModified: head.lastModified, storageClass: head.storageClass };
      }),
    };
  }
}

interface QueuedMessage extends QueueMessage {
  visibleAt: number;
  deleted: boolean;
}

/** SQS FIFO's deduplication interval: a deduplication id seen in the last 5 minutes is dropped. */
export const DEDUPLICATION_WINDOW_MS = 5 * 60 * 1000;

export class MemoryQueue implements MessageQueue {
  readonly messages: QueuedMessage[] = [];
  /** Visibility changes, in order: what the worker's backoff decided. */
  readonly visibility: { id: string; seconds: number }[] = [];
  /** Sends dropped as duplicates (the send still succeeds, as on SQS). */
  duplicatesDropped = 0;
  /** The queue's clock for deduplication; a test moves it past the window. */
  clock: () => number = Date.now;
  /** Deduplication id → when it was first accepted (whether or not its message is deleted since). */
  private readonly seenIds = new Map<string, number>();
  /** Message ids, unique across queues (a message moved to a DLQ keeps its id, as on SQS). */
  private static next = 0;
  /**
   * SQS's redrive policy: a message received `maxReceives` times moves to `queue` when next
   * received, keeping its id and deduplication id (a move is not a send: no deduplication).
   */
  redrivePolicy?: { queue: MemoryQueue; maxReceives: number };

  async deadLetterQueue(): Promise<{ queue: MemoryQueue; maxReceives: number } | undefined> {
    return this.redrivePolicy && { ...this.redrivePolicy };
  }

  constructor(
    readonly name = 'memory.fifo',
    private readonly visibilitySeconds = 30,
  ) {}

  async send(messages: readonly OutgoingMessage[]): Promise<void> {
    for (const m of messages) {
      // FIFO deduplication: an id accepted in the last 5 minutes is dropped, deleted or not; the
      // sender is told nothing (SQS answers success with the first message's id).
      if (m.deduplicationId) {
        const seen = this.seenIds.get(m.deduplicationId);
        if (seen !== undefined && this.clock() - seen < DEDUPLICATION_WINDOW_MS) {
          this.duplicatesDropped++;
          continue;
        }
        this.seenIds.set(m.deduplicationId, this.clock());
      }
      const id = `m${++MemoryQueue.next}`;
      this.messages.push({
        id,
        receipt: `${id}-r0`,
        body: m.body,
        receiveCount: 0,
        attributes: m.attributes ? { ...m.attributes } : undefined,
        groupId: m.groupId,
        deduplicationId: m.deduplicationId,
        visibleAt: 0,
        deleted: false,
      });
    }
  }

  async receive(options: { max: number; visibilitySeconds?: number }): Promise<QueueMessage[]> {
    const now = Date.now();
    const policy = this.redrivePolicy;
    for (const m of this.messages) {
      if (!policy || m.deleted || m.visibleAt > now || m.receiveCount < policy.maxReceives) continue;
      m.deleted = true;
      policy.queue.messages.push({ ...structuredClone(m), receiveCount: 0, visibleAt: 0, deleted: false });
    }
    const got = this.messages.filter((m) => !m.deleted && m.visibleAt <= now).slice(0, Math.min(10, options.max));
    for (const m of got) {
      m.receiveCount++;
      m.receipt = `${m.id}-r${m.receiveCount}`;
      m.visibleAt = now + 1000 * (options.visibilitySeconds ?? this.visibilitySeconds);
    }
    return got.map(({ visibleAt: _v, deleted: _d, ...m }) => structuredClone(m));
  }

  async delete(messages: readonly QueueMessage[]): Promise<void> {
    for (const m of messages) {
      const q = this.messages.find((x) => x.id === m.id);
      if (q) q.deleted = true;
    }
  }

  async setVisibility(message: QueueMessage, seconds: number): Promise<void> {
    this.visibility.push({ id: message.id, seconds });
    const q = this.messages.find((x) => x.id === message.id);
    if (q) q.visibleAt = Date.now() + seconds * 1000;
  }

  /** Messages not yet deleted. */
  pending(): QueuedMessage[] {
    return this.messages.filter((m) => !m.deleted);
  }

  /** As SQS counts them: in flight = received (or set invisible) and not yet visible again; nothing is sent delayed here. */
  async depth(): Promise<QueueDepth> {
    const now = Date.now();
    const pending = this.pending();
    const inFlight = pending.filter((m) => m.visibleAt > now).length;
    return { visible: pending.length - inFlight, inFlight, delayed: 0, total: pending.length };
  }
}

/**
 * A catalog whose every variant "classifies" each image as `topClass` with probability 0.9 (the
 * rest spread evenly), at a small resolution so decoding is fast. Markers are `<variant>@<hash>`.
 */
export function fixedCatalog(options: {
  topClass: number;
  hash?: string;
  resolution?: number;
  classes?: number;
}): ModelCatalog & { classified: number } {
  const classes = options.classes ?? 1000;
  const resolution = options.resolution ?? 32;
  const catalog = {
    classified: 0,
    marker: (variant: string) => `${variant}@${options.hash ?? 'cafe'}`,
    variants: () => [],
    async load(variant: string): Promise<LoadedModel> {
      const manifest = { variant, classes, resolution, includeTop: true } as WeightsManifest;
      return {
        description: 'fixed',
        variant,
        resolution,
        manifest,
        async classify(images) {
          catalog.classified += images.length;
          return images.map(() => {
            const p = new Float32Array(classes).fill(0.1 / (classes - 1));
            p[options.topClass] = 0.9;
            return p;
          });
        },
        async dispose() {},
      };
    },
    async dispose() {},
  };
  return catalog;
}

/** An index record for core tests: bucket `p`, tagged by b0 (space `b0@aa`), no tags; `over` changes any field. */
export function indexedObject(key: string, over: Partial<IndexedObject> = {}): IndexedObject {
  return {
    bucket: 'p',
    key,
    eTag: `e-${key}`,
    lastModified: new Date('2026-12-07T00:00:00Z'),
    size: 10,
    variant: 'b0',
    marker: 'b0@aa',
    at: '2026-12-07T00:00:01Z',
    tags: [],
    ...over,
  };
}

/**
 * The tag index's port in memory: records by object, search by exact tag over them (newest first,
 * no paging). Enough for the worker's rules; the key design is tested against DynamoDB's API.
 */
export class MemoryIndex implements TagIndex {
  readonly objects = new Map<string, IndexedObject>();
  private failures = 0;

  /** The next `n` puts throw, as an unreachable table would. */
  failNextPuts(n: number): void {
    this.failures = n;
  }

  async put(o: IndexedObject): Promise<PutResult> {
    if (this.failures > 0) {
      this.failures--;
      throw new Error('index unreachable');
    }
    const id = `${o.bucket}/${o.key}`;
    const held = this.objects.get(id);
    if (held && held.lastModified > o.lastModified) return { status: 'stale' };
    this.objects.set(id, o);
    return { status: 'indexed', written: o.tags.length + 2, deleted: 0 };
  }

  async get(bucket: string, key: string): Promise<IndexRecord | undefined> {
    const o = this.objects.get(`${bucket}/${key}`);
    return (
      o && {
        eTag: o.eTag,
        failed: o.failure !== undefined,
        lastModified: o.lastModified,
        marker: o.marker,
        at: o.at,
        variant: o.variant,
        size: o.size,
        tags: Object.fromEntries(o.tags.map((t) => [t.tag, t.probability])),
        ...(o.phash ? { phash: o.phash } : {}),
      }
    );
  }

  async keys(bucket: string, options: { prefix?: string } = {}): Promise<{ keys: string[] }> {
    return {
      keys: [...this.objects.values()].filter((o) => o.bucket === bucket && o.key.startsWith(options.prefix ?? '')).map((o) => o.key),
    };
  }

  async remove(bucket: string, key: string): Promise<number> {
    return this.objects.delete(`${bucket}/${key}`) ? 1 : 0;
  }

  async search(q: SearchQuery): Promise<SearchPage> {
    const hits = [...this.objects.values()]
      .filter((o) => o.bucket === q.bucket && !o.failure && q.tags.every((t) => o.tags.some((x) => x.tag === t)))
      .sort((a, b) => b.lastModified.getTime() - a.lastModified.getTime())
      .slice(0, q.limit)
      .map((o) => ({
        bucket: o.bucket,
        key: o.key,
        eTag: o.eTag,
        lastModified: o.lastModified.toISOString(),
        size: o.size,
        variant: o.variant,
        at: o.at,
        tags: Object.fromEntries(o.tags.map((t) => [t.tag, t.probability])),
      }));
    return { hits, scanned: hits.length };
  }
}

type WriteBack = 'metadata' | 'both' | 'tags' | 'index';

/** One CPU tier of B0 (top 3, no confidence floor) that takes every object, written back as asked. */
export function oneCpuTier(writeBack: WriteBack = 'metadata'): TiersFile {
  return parseTiers(oneCpuTierConfig(writeBack));
}

/**
 * `oneCpuTier` as a tiers file holds it, before parsing: what a test serializes into a runtime's
 * EFFITAG_TIERS (the parsed form carries what parsing derives, and is not a tiers file).
 */
export function oneCpuTierConfig(writeBack: WriteBack = 'metadata') {
  return {
    version: 1,
    tiers: {
      cpu: {
        variants: ['b0'],
        compute: { target: 'lambda-cpu', memoryMb: 2048 },
        engine: 'ort',
        batchSize: 8,
        topK: 3,
        minConfidence: 0,
        writeBack,
      },
    },
    routing: { default: { tier: 'cpu' } },
  };
}

/**
 * The embedded S3 Vectors: the S3 Vectors REST API (restJson1, `POST /PutVectors` …) on loopback,
 * enough of it for @aws-sdk/client-s3vectors as pipeline/aws/s3-vectors.ts and the AWS CLI use it,
 * so the same client code runs here and on AWS. No such emulator exists for Node (LocalStack's is
 * not done), hence this one.
 *
 * - Requests pass the stack's guard first (local/request-guard.ts): loopback Host, no foreign Origin,
 *   signed (SigV4, service `s3vectors`) with the stack's credentials.
 * - Each index is a usearch HNSW graph (cosine; its copy of the vectors in f16 to halve its memory)
 *   beside the float32 vectors and metadata, which answer GetVectors and ListVectors and filtered
 *   queries: a filter that keeps few vectors is searched exactly over those; one that keeps many
 *   asks the graph for more neighbours until topK of them pass (S3 Vectors pre-filters too).
 * - On disk under its directory (the stack: `<dataDir>.vectors`, beside the data directory, since
 *   s3rver takes every folder inside it for a bucket): per index a snapshot (vectors, metadata, the
 *   usearch graph) and a log of the writes since, one JSON line per PutVectors/DeleteVectors,
 *   appended before the request is answered. Snapshots are written to temporary files and renamed;
 *   `state.json`, renamed last, names the snapshot and log in force, so a crash at any point leaves
 *   the last snapshot plus its log (a torn last line is dropped: its request was never answered).
 *   The log is folded into a new snapshot when it grows and at close.
 *
 * Limits are S3 Vectors' own (see pipeline/aws/s3-vectors.ts), so code that works here fits AWS.
 */
import { randomBytes } from 'node:crypto';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { appendFile, mkdir, rename, rm, unlink, writeFile } from 'node:fs/promises';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import { join } from 'node:path';
import { Index, MetricKind, ScalarKind } from 'usearch';
import type { EmbeddedCredentials } from '../pipeline/aws/local-credentials.ts';
import { listenGuarded } from './request-guard.ts';
import { clientEndpoint } from './s3-server.ts';

/** The embedded stack's vector bucket (deployed: the stack output VectorBucket). */
export const EMBEDDED_VECTOR_BUCKET = 'effitag-local-vectors';

const REGION = 'us-east-1';
const ACCOUNT = '000000000000';
const LIMITS = {
  dimension: 4096,
  topK: 100,
  put: 500,
  delete: 500,
  get: 100,
  listPage: 1000,
  indexPage: 500,
  keyChars: 1024,
  metadataBytes: 40 * 1024,
  filterableBytes: 2 * 1024,
  metadataKeys: 50,
  nonFilterableKeys: 10,
  segments: 16,
};
/** Log entries (vectors written or deleted) after which the log is folded into a new snapshot. */
const COMPACT_AFTER = 20_000;
/** A filter keeping at most this many vectors is searched exactly over them, not through the graph (tests lower it). */
export const searchTuning = { exactUpTo: 20_000 };

const BUCKET_NAME = /^[a-z0-9][a-z0-9-]{1,61}[a-z0-9]$/;
const INDEX_NAME = /^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$/;

class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
  ) {
    super(message);
  }
}
const invalid = (message: string) => new ApiError(400, 'ValidationException', message);
const notFound = (message: string) => new ApiError(404, 'NotFoundException', message);
const conflict = (message: string) => new ApiError(409, 'ConflictException', message);

type Json = null | boolean | number | string | Json[] | { [k: string]: Json };
type Metadata = Record<string, Json>;

interface IndexConfig {
  indexName: string;
  dimension: number;
  distanceMetric: 'cosine' | 'euclidean';
  dataType: 'float32';
  nonFilterableMetadataKeys: string[];
  creationTime: number;
}

interface IndexState {
  gen: number;
  config: IndexConfig;
}

/** One index in memory: vectors in slots of one growing Float32Array, usearch labels = slot numbers. */
class VectorSpace {
  readonly slots = new Map<string, number>();
  keyOf: (string | undefined)[] = [];
  metadataOf: (Metadata | undefined)[] = [];
  data: Float32Array;
  norms: Float32Array;
  free: number[] = [];
  graph: Index;
  logged = 0;
  gen = 0;
  /** Writes to this index run one at a time (log order = apply order). */
  queue: Promise<unknown> = Promise.resolve();

  constructor(readonly config: IndexConfig) {
    this.data = new Float32Array(0);
    this.norms = new Float32Array(0);
    this.graph = this.newGraph();
  }

  newGraph(): Index {
    return new Index({
      dimensions: this.config.dimension,
      metric: this.config.distanceMetric === 'cosine' ? MetricKind.Cos : MetricKind.L2sq,
      quantization: ScalarKind.F16,
      connectivity: 16,
      expansion_add: 64,
      expansion_search: 64,
      multi: false,
    });
  }

  get size(): number {
    return this.slots.size;
  }

  /** Room for `slots` vectors at once (a snapshot's), instead of growing by half again and again. */
  reserve(slots: number): void {
    if (slots * this.config.dimension > this.data.length) this.grow(slots, 1);
  }

  private grow(min: number, factor = 1.5): void {
    const capacity = Math.max(min, Math.ceil(this.keyOf.length * factor), 64);
    const data = new Float32Array(capacity * this.config.dimension);
    data.set(this.data);
    this.data = data;
    const norms = new Float32Array(capacity);
    norms.set(this.norms);
    this.norms = norms;
  }

  vector(slot: number): Float32Array {
    const d = this.config.dimension;
    return this.data.subarray(slot * d, (slot + 1) * d);
  }

  /** Store (or replace) vectors; `slotsGiven` when loading a snapshot (its slots, so a saved graph's labels hold). */
  put(items: { key: string; data: Float32Array; metadata?: Metadata }[], toGraph = true, slotsGiven?: number[]): void {
    const d = this.config.dimension;
    const labels: bigint[] = [];
    const added = new Float32Array(items.length * d);
    items.forEach((item, i) => {
      const old = this.slots.get(item.key);
      if (old !== undefined && toGraph) this.graph.remove(BigInt(old));
      const slot = slotsGiven?.[i] ?? old ?? this.free.pop() ?? this.keyOf.length;
      if ((slot + 1) * d > this.data.length) this.grow(slot + 1);
      this.vector(slot).set(item.data);
      let n = 0;
      for (const x of item.data) n += x * x;
      this.norms[slot] = Math.sqrt(n);
      while (this.keyOf.length <= slot) this.keyOf.push(undefined);
      this.keyOf[slot] = item.key;
      this.metadataOf[slot] = item.metadata;
      this.slots.set(item.key, slot);
      labels.push(BigInt(slot));
      added.set(item.data, i * d);
    });
    if (toGraph && labels.length) this.graph.add(BigUint64Array.from(labels), added, 0);
  }

  delete(keys: readonly string[], fromGraph = true): void {
    for (const key of keys) {
      const slot = this.slots.get(key);
      if (slot === undefined) continue;
      if (fromGraph) this.graph.remove(BigInt(slot));
      this.slots.delete(key);
      this.keyOf[slot] = undefined;
      this.metadataOf[slot] = undefined;
      this.free.push(slot);
    }
  }

  /** Distance as S3 Vectors reports it: cosine 1 - cos, euclidean the L2 distance. */
  distance(query: Float32Array, queryNorm: number, slot: number): number {
    const v = this.vector(slot);
    if (this.config.distanceMetric === 'cosine') {
      let dot = 0;
      for (let i = 0; i < v.length; i++) dot += query[i] * v[i];
      return 1 - dot / (queryNorm * this.norms[slot]);
    }
    let s = 0;
    for (let i = 0; i < v.length; i++) s += (query[i] - v[i]) ** 2;
    return Math.sqrt(s);
  }

  search(
    query: Float32Array,
    topK: number,
    filter: ((m: Metadata | undefined) => boolean) | undefined,
  ): { slot: number; distance: number }[] {
    if (this.size === 0) return [];
    let qn = 0;
    for (const x of query) qn += x * x;
    qn = Math.sqrt(qn);
    // The graph's k nearest that pass the filter, their distances computed again from the float32
    // vectors (the graph holds f16 copies).
    const fromGraph = (k: number) => {
      const hits: { slot: number; distance: number }[] = [];
      for (const label of this.graph.search(query, Math.min(k, this.size), 0).keys) {
        const slot = Number(label);
        if (this.keyOf[slot] === undefined || (filter && !filter(this.metadataOf[slot]))) continue;
        hits.push({ slot, distance: this.distance(query, qn, slot) });
      }
      return hits.sort((a, b) => a.distance - b.distance);
    };
    // First a few times topK from the graph: a filter most vectors pass (a bucket, a model's
    // weights) is then checked on those alone, not on every vector.
    const first = fromGraph(Math.max(4 * topK, 64));
    if (!filter || first.length >= topK) return first.slice(0, topK);
    // Too few passed: how many does the filter keep? Few: exact search over them; many: the graph,
    // asked for more neighbours until topK of them pass.
    const matching: number[] = [];
    for (const slot of this.slots.values()) if (filter(this.metadataOf[slot])) matching.push(slot);
    if (matching.length === 0) return [];
    if (matching.length <= searchTuning.exactUpTo)
      return matching
        .map((slot) => ({ slot, distance: this.distance(query, qn, slot) }))
        .sort((a, b) => a.distance - b.distance)
        .slice(0, topK);
    for (let k = Math.ceil((topK * this.size) / matching.length) * 2; ; k = Math.min(this.size, k * 2)) {
      const hits = fromGraph(k);
      if (hits.length >= topK || k >= this.size) return hits.slice(0, topK);
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Metadata filters (S3 Vectors' operators: $eq $ne $gt $gte $lt $lte $in $nin $exists $and $or)

type Predicate = (m: Metadata | undefined) => boolean;

const isPrimitive = (v: unknown): v is string | number | boolean => ['string', 'number', 'boolean'].includes(typeof v);
const asList = (v: Json | undefined): Json[] => (Array.isArray(v) ? v : v === undefined ? [] : [v]);

function compileFilter(filter: unknown, nonFilterable: ReadonlySet<string>): Predicate {
  if (filter === null || typeof filter !== 'object' || Array.isArray(filter)) throw invalid('filter must be a JSON object');
  const parts: Predicate[] = [];
  for (const [field, cond] of Object.entries(filter as Record<string, unknown>)) {
    if (field === '$and' || field === '$or') {
      if (!Array.isArray(cond) || cond.length === 0) throw invalid(`${field} takes a non-empty array of filters`);
      const subs = cond.map((c) => compileFilter(c, nonFilterable));
      parts.push(field === '$and' ? (m) => subs.every((s) => s(m)) : (m) => subs.some((s) => s(m)));
      continue;
    }
    if (field.startsWith('$')) throw invalid(`unknown filter operator ${field}`);
    if (nonFilterable.has(field)) throw invalid(`metadata key ${field} is non-filterable in this index`);
    const ops: [string, unknown][] =
      cond !== null && typeof cond === 'object' && !Array.isArray(cond) ? Object.entries(cond as object) : [['$eq', cond]];
    for (const [op, arg] of ops) {
      const values = (m: Metadata | undefined) => asList(m?.[field]);
      const num = () => {
        if (typeof arg !== 'number') throw invalid(`${op} takes a number`);
        return arg;
      };
      const prims = () => {
        if (!Array.isArray(arg) || arg.length === 0 || !arg.every(isPrimitive))
          throw invalid(`${op} takes a non-empty array of primitives`);
        return arg;
      };
      switch (op) {
        case '$eq':
          if (!isPrimitive(arg)) throw invalid('$eq takes a string, number or boolean');
          parts.push((m) => values(m).includes(arg));
          break;
        case '$ne':
          if (!isPrimitive(arg)) throw invalid('$ne takes a string, number or boolean');
          parts.push((m) => !values(m).includes(arg));
          break;
        case '$gt': {
          const n = num();
          parts.push((m) => values(m).some((v) => typeof v === 'number' && v > n));
          break;
        }
        case '$gte': {
          const n = num();
          parts.push((m) => values(m).some((v) => typeof v === 'number' && v >= n));
          break;
        }
        case '$lt': {
          const n = num();
          parts.push((m) => values(m).some((v) => typeof v === 'number' && v < n));
          break;
        }
        case '$lte': {
          const n = num();
          parts.push((m) => values(m).some((v) => typeof v === 'number' && v <= n));
          break;
        }
        case '$in': {
          const set = prims();
          parts.push((m) => values(m).some((v) => set.includes(v as never)));
          break;
        }
        case '$nin': {
          const set = prims();
          parts.push((m) => !values(m).some((v) => set.includes(v as never)));
          break;
        }
        case '$exists':
          if (typeof arg !== 'boolean') throw invalid('$exists takes a boolean');
          parts.push((m) => (m !== undefined && field in m) === arg);
          break;
        default:
          throw invalid(`unknown filter operator ${op}`);
      }
    }
  }
  return (m) => parts.every((p) => p(m));
}

// ---------------------------------------------------------------------------------------------
// Persistence

interface SnapshotHeader {
  config: IndexConfig;
  keys: string[];
  slots: number[];
  metadata: (Metadata | null)[];
}

type LogEntry = { put: { key: string; data: string; metadata?: Metadata }[] } | { delete: string[] };

const f32ToBase64 = (v: Float32Array) => Buffer.from(v.buffer, v.byteOffset, v.byteLength).toString('base64');
const base64ToF32 = (s: string) => {
  const b = Buffer.from(s, 'base64');
  return new Float32Array(b.buffer.slice(b.byteOffset, b.byteOffset + b.byteLength));
};

const tmpName = (file: string) => `${file}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`;

async function writeAtomic(file: string, data: string | Uint8Array): Promise<void> {
  const tmp = tmpName(file);
  await writeFile(tmp, data);
  await rename(tmp, file);
}

class Disk {
  constructor(readonly root: string) {}

  bucketDir = (bucket: string) => join(this.root, bucket);
  indexDir = (bucket: string, index: string) => join(this.root, bucket, 'indexes', index);

  async saveBucket(bucket: { name: string; creationTime: number }): Promise<void> {
    await mkdir(join(this.bucketDir(bucket.name), 'indexes'), { recursive: true });
    await writeAtomic(join(this.bucketDir(bucket.name), 'bucket.json'), JSON.stringify(bucket));
  }

  /** Snapshot an index (vectors, metadata, graph) as generation gen+1 and start its empty log. */
  async snapshot(bucket: string, space: VectorSpace): Promise<void> {
    const dir = this.indexDir(bucket, space.config.indexName);
    await mkdir(dir, { recursive: true });
    const gen = space.gen + 1;
    const keys: string[] = [];
    const slots: number[] = [];
    const metadata: (Metadata | null)[] = [];
    const d = space.config.dimension;
    const data = new Float32Array(space.size * d);
    for (const [key, slot] of space.slots) {
      data.set(space.vector(slot), keys.length * d);
      keys.push(key);
      slots.push(slot);
      metadata.push(space.metadataOf[slot] ?? null);
    }
    const header: SnapshotHeader = { config: space.config, keys, slots, metadata };
    await writeAtomic(join(dir, `snapshot.${gen}.json`), JSON.stringify(header));
    await writeAtomic(join(dir, `snapshot.${gen}.f32`), new Uint8Array(data.buffer));
    if (space.size > 0) {
      // usearch writes the file itself: into a temporary name, renamed like the rest.
      const tmp = tmpName(join(dir, `graph.${gen}.usearch`));
      space.graph.save(tmp);
      await rename(tmp, join(dir, `graph.${gen}.usearch`));
    }
    await writeFile(join(dir, `log.${gen}.jsonl`), '', { flag: 'w' });
    await writeAtomic(join(dir, 'state.json'), JSON.stringify({ gen, config: space.config } satisfies IndexState));
    const old = space.gen;
    space.gen = gen;
    space.logged = 0;
    for (const f of [`snapshot.${old}.json`, `snapshot.${old}.f32`, `graph.${old}.usearch`, `log.${old}.jsonl`])
      await unlink(join(dir, f)).catch(() => undefined);
  }

  async append(bucket: string, space: VectorSpace, entry: LogEntry): Promise<void> {
    await appendFile(join(this.indexDir(bucket, space.config.indexName), `log.${space.gen}.jsonl`), `${JSON.stringify(entry)}\n`);
  }

  /** Every bucket and index on disk, loaded. */
  load(): Map<string, { creationTime: number; indexes: Map<string, VectorSpace> }> {
    const buckets = new Map<string, { creationTime: number; indexes: Map<string, VectorSpace> }>();
    if (!existsSync(this.root)) return buckets;
    for (const name of readdirSync(this.root)) {
      const file = join(this.bucketDir(name), 'bucket.json');
      if (!BUCKET_NAME.test(name) || !existsSync(file)) continue;
      const { creationTime } = JSON.parse(readFileSync(file, 'utf8')) as { creationTime: number };
      const indexes = new Map<string, VectorSpace>();
      const indexRoot = join(this.bucketDir(name), 'indexes');
      for (const index of existsSync(indexRoot) ? readdirSync(indexRoot) : []) {
        const dir = this.indexDir(name, index);
        if (!INDEX_NAME.test(index) || !existsSync(join(dir, 'state.json'))) continue;
        indexes.set(index, this.loadIndex(dir));
      }
      buckets.set(name, { creationTime, indexes });
    }
    return buckets;
  }

  private loadIndex(dir: string): VectorSpace {
    const state = JSON.parse(readFileSync(join(dir, 'state.json'), 'utf8')) as IndexState;
    const space = new VectorSpace(state.config);
    space.gen = state.gen;
    const header = JSON.parse(readFileSync(join(dir, `snapshot.${state.gen}.json`), 'utf8')) as SnapshotHeader;
    const raw = readFileSync(join(dir, `snapshot.${state.gen}.f32`));
    // A view of the file's bytes when aligned (no second copy of every vector while loading).
    const data =
      raw.byteOffset % 4 === 0
        ? new Float32Array(raw.buffer, raw.byteOffset, raw.byteLength / 4)
        : new Float32Array(raw.buffer.slice(raw.byteOffset, raw.byteOffset + raw.byteLength));
    const d = state.config.dimension;
    const graphFile = join(dir, `graph.${state.gen}.usearch`);
    const haveGraph = header.keys.length > 0 && existsSync(graphFile);
    space.reserve(header.slots.reduce((m, s) => Math.max(m, s + 1), 0));
    space.put(
      header.keys.map((key, i) => ({ key, data: data.subarray(i * d, (i + 1) * d), metadata: header.metadata[i] ?? undefined })),
      !haveGraph,
      header.slots,
    );
    if (haveGraph) space.graph.load(graphFile);
    const used = new Set(header.slots);
    for (let s = 0; s < space.keyOf.length; s++) if (!used.has(s)) space.free.push(s);
    const logFile = join(dir, `log.${state.gen}.jsonl`);
    const lines = existsSync(logFile) ? readFileSync(logFile, 'utf8').split('\n') : [];
    for (const line of lines) {
      if (!line) continue;
      let entry: LogEntry;
      try {
        entry = JSON.parse(line) as LogEntry;
      } catch {
        break; // a torn last line: its request was never answered
      }
      if ('put' in entry) space.put(entry.put.map((p) => ({ key: p.key, data: base64ToF32(p.data), metadata: p.metadata })));
      else space.delete(entry.delete);
      space.logged += 'put' in entry ? entry.put.length : entry.delete.length;
    }
    return space;
  }
}

// ---------------------------------------------------------------------------------------------
// The API

interface Bucket {
  name: string;
  creationTime: number;
  indexes: Map<string, VectorSpace>;
}

const bucketArn = (name: string) => `arn:aws:s3vectors:${REGION}:${ACCOUNT}:bucket/${name}`;
const indexArn = (bucket: string, index: string) => `${bucketArn(bucket)}/index/${index}`;

function str(body: Record<string, unknown>, name: string): string | undefined {
  const v = body[name];
  if (v === undefined) return undefined;
  if (typeof v !== 'string') throw invalid(`${name} must be a string`);
  return v;
}

function int(body: Record<string, unknown>, name: string, min: number, max: number, dflt?: number): number {
  const v = body[name] ?? dflt;
  if (typeof v !== 'number' || !Number.isInteger(v) || v < min || v > max)
    throw invalid(`${name} must be a whole number from ${min} to ${max}`);
  return v;
}

function vectorData(data: unknown, dimension: number, metric: string, what: string): Float32Array {
  const values = (data as { float32?: unknown } | undefined)?.float32;
  if (!Array.isArray(values)) throw invalid(`${what}: data must be {"float32": [...]}`);
  if (values.length !== dimension) throw invalid(`${what}: the vector has ${values.length} dimensions; the index has ${dimension}`);
  const v = Float32Array.from(values as number[]);
  if (!v.every(Number.isFinite)) throw invalid(`${what}: every value must be a finite float32`);
  if (metric === 'cosine' && v.every((x) => x === 0)) throw invalid(`${what}: a zero vector has no direction (cosine)`);
  return v;
}

export interface RunningS3Vectors {
  endpoint: string;
  port: number;
  trustProxyPort(port: number): void;
  /** Folds every index's log into a snapshot, then stops. */
  close(): Promise<void>;
}

export class S3VectorsService {
  private readonly buckets: Map<string, Bucket>;
  private readonly disk?: Disk;

  constructor(directory?: string) {
    this.disk = directory ? new Disk(directory) : undefined;
    this.buckets = new Map();
    for (const [name, b] of this.disk?.load() ?? []) this.buckets.set(name, { name, ...b });
  }

  private bucketOf(body: Record<string, unknown>): Bucket {
    const arn = str(body, 'vectorBucketArn');
    const name = str(body, 'vectorBucketName') ?? (arn ? /^arn:aws:s3vectors:[^:]*:\d*:bucket\/([^/]+)$/.exec(arn)?.[1] : undefined);
    if (!name) throw invalid('vectorBucketName or vectorBucketArn is required');
    const bucket = this.buckets.get(name);
    if (!bucket) throw notFound(`The specified vector bucket could not be found: ${name}`);
    return bucket;
  }

  private indexOf(body: Record<string, unknown>): { bucket: Bucket; space: VectorSpace } {
    const arn = str(body, 'indexArn');
    const m = arn ? /^arn:aws:s3vectors:[^:]*:\d*:bucket\/([^/]+)\/index\/([^/]+)$/.exec(arn) : undefined;
    if (arn && !m) throw invalid(`indexArn is not an index ARN: ${arn}`);
    const bucket = this.bucketOf(m ? { vectorBucketName: m[1] } : body);
    const name = m?.[2] ?? str(body, 'indexName');
    if (!name) throw invalid('indexName or indexArn is required');
    const space = bucket.indexes.get(name);
    if (!space) throw notFound(`The specified index could not be found: ${bucket.name}/${name}`);
    return { bucket, space };
  }

  private async write<T>(bucket: Bucket, space: VectorSpace, work: () => Promise<T>): Promise<T> {
    const run = space.queue.then(work);
    space.queue = run.catch(() => undefined);
    const out = await run;
    if (this.disk && space.logged >= COMPACT_AFTER) {
      const disk = this.disk;
      const snap = space.queue.then(() => (space.logged >= COMPACT_AFTER ? disk.snapshot(bucket.name, space) : undefined));
      space.queue = snap.catch(() => undefined);
      await snap;
    }
    return out;
  }

  /** One API call: operation name (the path) and its JSON body → the JSON answer. */
  async call(op: string, body: Record<string, unknown>): Promise<unknown> {
    switch (op) {
      case 'CreateVectorBucket': {
        const name = str(body, 'vectorBucketName') ?? '';
        if (!BUCKET_NAME.test(name))
          throw invalid(`vectorBucketName must be 3-63 characters of a-z, 0-9 and -, starting and ending with a letter or digit`);
        if (this.buckets.has(name)) throw conflict(`The vector bucket already exists: ${name}`);
        const bucket: Bucket = { name, creationTime: Math.floor(Date.now() / 1000), indexes: new Map() };
        await this.disk?.saveBucket(bucket);
        this.buckets.set(name, bucket);
        return { vectorBucketArn: bucketArn(name) };
      }
      case 'GetVectorBucket': {
        const b = this.bucketOf(body);
        return {
          vectorBucket: {
            vectorBucketName: b.name,
            vectorBucketArn: bucketArn(b.name),
            creationTime: b.creationTime,
            encryptionConfiguration: { sseType: 'AES256' },
          },
        };
      }
      case 'ListVectorBuckets': {
        const prefix = str(body, 'prefix') ?? '';
        return {
          vectorBuckets: [...this.buckets.values()]
            .filter((b) => b.name.startsWith(prefix))
            .sort((a, b) => a.name.localeCompare(b.name))
            .map((b) => ({ vectorBucketName: b.name, vectorBucketArn: bucketArn(b.name), creationTime: b.creationTime })),
        };
      }
      case 'DeleteVectorBucket': {
        const b = this.bucketOf(body);
        if (b.indexes.size > 0) throw conflict(`The vector bucket ${b.name} is not empty: delete its indexes first`);
        this.buckets.delete(b.name);
        if (this.disk) await rm(this.disk.bucketDir(b.name), { recursive: true, force: true });
        return {};
      }
      case 'CreateIndex': {
        const bucket = this.bucketOf(body);
        const indexName = str(body, 'indexName') ?? '';
        if (!INDEX_NAME.test(indexName))
          throw invalid('indexName must be 3-63 characters of a-z, 0-9, - and ., starting and ending with a letter or digit');
        if (str(body, 'dataType') !== 'float32') throw invalid('dataType must be float32');
        const metric = str(body, 'distanceMetric');
        if (metric !== 'cosine' && metric !== 'euclidean') throw invalid('distanceMetric must be cosine or euclidean');
        const dimension = int(body, 'dimension', 1, LIMITS.dimension);
        const nonFilterable =
          (body.metadataConfiguration as { nonFilterableMetadataKeys?: unknown } | undefined)?.nonFilterableMetadataKeys ?? [];
        if (
          !Array.isArray(nonFilterable) ||
          !nonFilterable.every((k) => typeof k === 'string') ||
          nonFilterable.length > LIMITS.nonFilterableKeys
        )
          throw invalid(`nonFilterableMetadataKeys takes up to ${LIMITS.nonFilterableKeys} key names`);
        if (bucket.indexes.has(indexName)) throw conflict(`The index already exists: ${bucket.name}/${indexName}`);
        const space = new VectorSpace({
          indexName,
          dimension,
          distanceMetric: metric,
          dataType: 'float32',
          nonFilterableMetadataKeys: nonFilterable as string[],
          creationTime: Math.floor(Date.now() / 1000),
        });
        await this.disk?.snapshot(bucket.name, space);
        bucket.indexes.set(indexName, space);
        return { indexArn: indexArn(bucket.name, indexName) };
      }
      case 'GetIndex': {
        const { bucket, space } = this.indexOf(body);
        const c = space.config;
        return {
          index: {
            vectorBucketName: bucket.name,
            indexName: c.indexName,
            indexArn: indexArn(bucket.name, c.indexName),
            creationTime: c.creationTime,
            dataType: c.dataType,
            dimension: c.dimension,
            distanceMetric: c.distanceMetric,
            metadataConfiguration: { nonFilterableMetadataKeys: c.nonFilterableMetadataKeys },
          },
        };
      }
      case 'ListIndexes': {
        const bucket = this.bucketOf(body);
        const prefix = str(body, 'prefix') ?? '';
        const max = int(body, 'maxResults', 1, LIMITS.indexPage, LIMITS.indexPage);
        const after = str(body, 'nextToken');
        const names = [...bucket.indexes.keys()].filter((n) => n.startsWith(prefix) && (after === undefined || n > after)).sort();
        const page = names.slice(0, max);
        return {
          indexes: page.map((n) => ({
            vectorBucketName: bucket.name,
            indexName: n,
            indexArn: indexArn(bucket.name, n),
            creationTime: bucket.indexes.get(n)!.config.creationTime,
          })),
          ...(names.length > max ? { nextToken: page.at(-1) } : {}),
        };
      }
      case 'DeleteIndex': {
        const { bucket, space } = this.indexOf(body);
        await space.queue;
        bucket.indexes.delete(space.config.indexName);
        if (this.disk) await rm(this.disk.indexDir(bucket.name, space.config.indexName), { recursive: true, force: true });
        return {};
      }
      case 'PutVectors': {
        const { bucket, space } = this.indexOf(body);
        const vectors = body.vectors;
        if (!Array.isArray(vectors) || vectors.length < 1 || vectors.length > LIMITS.put)
          throw invalid(`vectors takes 1 to ${LIMITS.put} vectors`);
        const nonFilterable = new Set(space.config.nonFilterableMetadataKeys);
        const items = vectors.map((v: { key?: unknown; data?: unknown; metadata?: unknown }, i) => {
          const what = `vectors[${i}]`;
          if (typeof v?.key !== 'string' || v.key.length < 1 || v.key.length > LIMITS.keyChars)
            throw invalid(`${what}: key must be 1 to ${LIMITS.keyChars} characters`);
          const data = vectorData(v.data, space.config.dimension, space.config.distanceMetric, `${what} (${v.key})`);
          const metadata = v.metadata;
          if (metadata !== undefined) {
            if (metadata === null || typeof metadata !== 'object' || Array.isArray(metadata))
              throw invalid(`${what}: metadata must be an object`);
            const entries = Object.entries(metadata);
            if (entries.length > LIMITS.metadataKeys) throw invalid(`${what}: at most ${LIMITS.metadataKeys} metadata keys`);
            if (Buffer.byteLength(JSON.stringify(metadata)) > LIMITS.metadataBytes) throw invalid(`${what}: metadata is over 40 KB`);
            const filterable = Object.fromEntries(entries.filter(([k]) => !nonFilterable.has(k)));
            if (Buffer.byteLength(JSON.stringify(filterable)) > LIMITS.filterableBytes)
              throw invalid(`${what}: filterable metadata is over ${LIMITS.filterableBytes} bytes`);
          }
          return { key: v.key, data, metadata: metadata as Metadata | undefined };
        });
        await this.write(bucket, space, async () => {
          await this.disk?.append(bucket.name, space, {
            put: items.map((it) => ({ key: it.key, data: f32ToBase64(it.data), metadata: it.metadata })),
          });
          space.put(items);
          space.logged += items.length;
        });
        return {};
      }
      case 'DeleteVectors': {
        const { bucket, space } = this.indexOf(body);
        const keys = body.keys;
        if (!Array.isArray(keys) || keys.length < 1 || keys.length > LIMITS.delete || !keys.every((k) => typeof k === 'string'))
          throw invalid(`keys takes 1 to ${LIMITS.delete} vector keys`);
        await this.write(bucket, space, async () => {
          await this.disk?.append(bucket.name, space, { delete: keys });
          space.delete(keys);
          space.logged += keys.length;
        });
        return {};
      }
      case 'GetVectors': {
        const { space } = this.indexOf(body);
        const keys = body.keys;
        if (!Array.isArray(keys) || keys.length < 1 || keys.length > LIMITS.get || !keys.every((k) => typeof k === 'string'))
          throw invalid(`keys takes 1 to ${LIMITS.get} vector keys`);
        return {
          vectors: keys.flatMap((key) => {
            const slot = space.slots.get(key);
            return slot === undefined ? [] : [this.vectorOut(space, slot, body.returnData === true, body.returnMetadata === true)];
          }),
        };
      }
      case 'ListVectors': {
        const { space } = this.indexOf(body);
        const max = int(body, 'maxResults', 1, LIMITS.listPage, 500);
        const segments = int(body, 'segmentCount', 1, LIMITS.segments, 1);
        const segment = int(body, 'segmentIndex', 0, segments - 1, 0);
        const after = str(body, 'nextToken');
        const keys = [...space.slots.keys()]
          .filter((k) => (segments === 1 || hashSegment(k, segments) === segment) && (after === undefined || k > after))
          .sort();
        const page = keys.slice(0, max);
        return {
          vectors: page.map((k) => this.vectorOut(space, space.slots.get(k)!, body.returnData === true, body.returnMetadata === true)),
          ...(keys.length > max ? { nextToken: page.at(-1) } : {}),
        };
      }
      case 'QueryVectors': {
        const { space } = this.indexOf(body);
        const topK = int(body, 'topK', 1, LIMITS.topK);
        const query = vectorData(body.queryVector, space.config.dimension, space.config.distanceMetric, 'queryVector');
        const filter = body.filter === undefined ? undefined : compileFilter(body.filter, new Set(space.config.nonFilterableMetadataKeys));
        const hits = space.search(query, topK, filter);
        return {
          vectors: hits.map((h) => ({
            key: space.keyOf[h.slot]!,
            ...(body.returnDistance === true ? { distance: h.distance } : {}),
            ...(body.returnMetadata === true && space.metadataOf[h.slot] ? { metadata: space.metadataOf[h.slot] } : {}),
          })),
          distanceMetric: space.config.distanceMetric,
        };
      }
      default:
        throw new ApiError(404, 'UnknownOperationException', `The embedded S3 Vectors does not implement ${op}`);
    }
  }

  private vectorOut(space: VectorSpace, slot: number, data: boolean, metadata: boolean) {
    return {
      key: space.keyOf[slot]!,
      ...(data ? { data: { float32: Array.from(space.vector(slot)) } } : {}),
      ...(metadata && space.metadataOf[slot] ? { metadata: space.metadataOf[slot] } : {}),
    };
  }

  /** Fold every index's log into a snapshot (at close: the next start loads without replaying). */
  async flush(): Promise<void> {
    if (!this.disk) return;
    for (const bucket of this.buckets.values())
      for (const space of bucket.indexes.values()) {
        await space.queue;
        if (space.logged > 0) await this.disk.snapshot(bucket.name, space);
      }
  }

  /** Counts for tests and benches. */
  stats(): { buckets: number; indexes: { bucket: string; index: string; vectors: number }[] } {
    return {
      buckets: this.buckets.size,
      indexes: [...this.buckets.values()].flatMap((b) =>
        [...b.indexes.values()].map((s) => ({ bucket: b.name, index: s.config.indexName, vectors: s.size })),
      ),
    };
  }
}

function hashSegment(key: string, segments: number): number {
  let h = 0;
  for (let i = 0; i < key.length; i++) h = (h * 31 + key.charCodeAt(i)) >>> 0;
  return h % segments;
}

async function readJson(req: IncomingMessage): Promise<Record<string, unknown>> {
  const chunks: Buffer[] = [];
  for await (const c of req) chunks.push(c as Buffer);
  const text = Buffer.concat(chunks).toString('utf8');
  if (!text) return {};
  try {
    const body = JSON.parse(text) as unknown;
    if (body === null || typeof body !== 'object' || Array.isArray(body)) throw new Error('not an object');
    return body as Record<string, unknown>;
  } catch {
    throw invalid('the request body is not a JSON object');
  }
}

function send(res: ServerResponse, status: number, body: unknown, errorType?: string): void {
  const text = JSON.stringify(body);
  res.writeHead(status, {
    'content-type': 'application/json',
    'content-length': Buffer.byteLength(text),
    ...(errorType ? { 'x-amzn-errortype': errorType } : {}),
  });
  res.end(text);
}

export async function startS3VectorsServer(options: {
  host?: string;
  port?: number;
  /** Where indexes are kept; none: in memory. */
  directory?: string;
  /** The only credentials it accepts requests signed with (local/request-guard.ts). */
  credentials: EmbeddedCredentials;
  /** Pages that may call it from a browser; any other Origin is refused. */
  trustedOrigins?: readonly string[];
  /** Vector buckets to have (created if missing). */
  buckets?: readonly string[];
}): Promise<RunningS3Vectors & { service: S3VectorsService }> {
  const host = options.host ?? '127.0.0.1';
  if (options.directory) await mkdir(options.directory, { recursive: true });
  const service = new S3VectorsService(options.directory);
  for (const name of options.buckets ?? []) {
    await service.call('CreateVectorBucket', { vectorBucketName: name }).catch((err) => {
      if (!(err instanceof ApiError && err.code === 'ConflictException')) throw err;
    });
  }
  const server = createServer((req, res) => {
    void (async () => {
      const path = (req.url ?? '/').split('?')[0];
      if (req.method !== 'POST' || !/^\/[A-Za-z]+$/.test(path))
        throw new ApiError(404, 'UnknownOperationException', `no operation at ${req.method} ${path}`);
      const body = await readJson(req);
      send(res, 200, await service.call(path.slice(1), body));
    })().catch((err) => {
      if (res.headersSent) return res.end();
      if (err instanceof ApiError) send(res, err.status, { message: err.message }, err.code);
      else send(res, 500, { message: String((err as Error)?.message ?? err) }, 'InternalServerException');
    });
  });
  const { guard, port } = await listenGuarded(server, 's3vectors', options);
  return {
    endpoint: clientEndpoint(host, port),
    port,
    service,
    trustProxyPort: (p) => guard.trustProxyPort(p),
    close: async () => {
      await new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections?.();
      });
      await service.flush();
    },
  };
}

/**
 * The pipeline's view of the world. The router and worker cores are written against these
 * interfaces; `pipeline/aws/` implements them with the AWS SDK (real S3/SQS, or the embedded
 * stand-ins over HTTP), and tests can count calls without mocking the SDK.
 */

/** What a GET/HEAD tells us about an object, including everything a self-copy must re-send. */
export interface ObjectHead {
  eTag: string;
  versionId?: string;
  contentLength: number;
  lastModified?: Date;
  contentType?: string;
  cacheControl?: string;
  contentDisposition?: string;
  contentEncoding?: string;
  contentLanguage?: string;
  expires?: Date;
  websiteRedirectLocation?: string;
  /** Absent means STANDARD. */
  storageClass?: string;
  /** `ongoing-request="false", expiry-date=…` once a Glacier restore is complete. */
  restore?: string;
  serverSideEncryption?: string;
  sseKmsKeyId?: string;
  bucketKeyEnabled?: boolean;
  /** User metadata, keys lowercase and without `x-amz-meta-`. */
  metadata: Record<string, string>;
}

/** 5 GiB: the largest object a single CopyObject can copy (so the largest a metadata write-back can rewrite). */
export const MAX_COPY_BYTES = 5 * 1024 ** 3;

/** Storage classes whose objects must be restored before they can be read or copied. */
export const ARCHIVED_STORAGE_CLASSES: ReadonlySet<string> = new Set(['GLACIER', 'DEEP_ARCHIVE']);

/** Archived and not (yet) restored: reading it would fail. */
export function isArchived(head: Pick<ObjectHead, 'storageClass' | 'restore'>): boolean {
  return ARCHIVED_STORAGE_CLASSES.has(head.storageClass ?? '') && !/ongoing-request="false"/.test(head.restore ?? '');
}

export interface ObjectRef {
  bucket: string;
  key: string;
  versionId?: string;
}

export interface ObjectStore {
  /** HEAD. Throws StoreError('not-found') when missing. */
  head(ref: ObjectRef): Promise<ObjectHead>;
  /** Bytes [start, end] (inclusive) and the head; `ifMatch` fails with StoreError('precondition'). */
  getRange(ref: ObjectRef, start: number, end: number, ifMatch?: string): Promise<{ head: ObjectHead; bytes: Uint8Array }>;
  /** The whole object; refuses (StoreError('too-large')) beyond maxBytes. */
  get(ref: ObjectRef, options: { ifMatch?: string; maxBytes: number }): Promise<{ head: ObjectHead; bytes: Uint8Array }>;
  /**
   * Replace the user metadata by copying the object onto itself. Re-sends every header in `head`
   * that a REPLACE copy would otherwise reset; `ifMatch` guards against clobbering a newer upload.
   */
  replaceMetadata(
    ref: ObjectRef,
    head: ObjectHead,
    metadata: Record<string, string>,
    ifMatch: string,
  ): Promise<{ eTag?: string; versionId?: string }>;
  getTags(ref: ObjectRef): Promise<Record<string, string>>;
  putTags(ref: ObjectRef, tags: Record<string, string>): Promise<void>;
  /** One page of a listing. */
  list(bucket: string, options: { prefix?: string; continuationToken?: string; startAfter?: string; maxKeys?: number }): Promise<ListPage>;
}

export interface ListedObject {
  key: string;
  eTag: string;
  size: number;
  lastModified?: Date;
  storageClass?: string;
}

export interface ListPage {
  objects: ListedObject[];
  nextContinuationToken?: string;
}

export interface QueueMessage {
  id: string;
  receipt: string;
  body: string;
  /** How many times this message has been received, this time included. */
  receiveCount: number;
  /** String message attributes (a dead-lettered message's reason, for one). */
  attributes?: Record<string, string>;
  /** FIFO queues: the message's group and deduplication ids. */
  groupId?: string;
  deduplicationId?: string;
}

export interface OutgoingMessage {
  body: string;
  /** FIFO queues: duplicates within the dedup window are dropped by the queue. */
  deduplicationId?: string;
  groupId?: string;
  /** String message attributes. */
  attributes?: Record<string, string>;
}

/**
 * How many messages a queue holds, as SQS counts them (approximately: ApproximateNumberOfMessages,
 * …NotVisible and …Delayed).
 */
export interface QueueDepth {
  /** Waiting to be received. */
  visible: number;
  /** Received and not yet deleted (or made invisible again), not receivable until their visibility ends. */
  inFlight: number;
  /** Sent with a delay that has not yet passed. */
  delayed: number;
  /** All three: what a drain waits for. */
  total: number;
}

/** A queue's dead-letter queue, and after how many receives the queue moves a message there. */
export interface DeadLetterQueue {
  queue: MessageQueue;
  maxReceives: number;
}

export interface MessageQueue {
  readonly name: string;
  send(messages: readonly OutgoingMessage[]): Promise<void>;
  receive(options: { max: number; waitSeconds: number; visibilitySeconds?: number; signal?: AbortSignal }): Promise<QueueMessage[]>;
  delete(messages: readonly QueueMessage[]): Promise<void>;
  /** Make a message visible again after `seconds` (0: at once). */
  setVisibility(message: QueueMessage, seconds: number): Promise<void>;
  depth(): Promise<QueueDepth>;
  /** The dead-letter queue (SQS: from the redrive policy); undefined without one. */
  deadLetterQueue(): Promise<DeadLetterQueue | undefined>;
}

/**
 * `unreadable`: S3 will not serve the object without parameters EffiTag does not have (an object
 * encrypted with a customer-provided key, SSE-C). Final: neither a retry nor a write-back can help,
 * since copying the object needs the same key.
 */
export type StoreErrorKind = 'not-found' | 'precondition' | 'too-large' | 'archived' | 'transient' | 'denied' | 'invalid' | 'unreadable';

/** A classified storage failure. `transient` ones are worth retrying; the others are final. */
export class StoreError extends Error {
  constructor(
    readonly kind: StoreErrorKind,
    message: string,
    override readonly cause?: unknown,
  ) {
    super(message);
    this.name = 'StoreError';
  }
}

/** Which object a vector or a hash belongs to. */
export interface VectorRef {
  bucket: string;
  key: string;
}

/** One image's embedding: EfficientNet's pooled features, L2-normalized (so dot product = cosine). */
export interface ImageVector extends VectorRef {
  vector: Float32Array;
  /** The object version it was computed from (an overwrite replaces it). */
  eTag?: string;
}

export interface VectorHit extends VectorRef {
  /** Cosine similarity, 1 = same direction. */
  score: number;
}

/**
 * Image embeddings, one index per model identity (`space`: a model and its weights; vectors of
 * different models never mix, since an index's dimension and metric cannot change). Deployed:
 * Amazon S3 Vectors; embedded: the S3 Vectors stand-in on loopback; tests: in memory.
 */
export interface VectorIndex {
  /** Store or replace these objects' vectors (the space's index is created on first use). */
  put(space: string, vectors: readonly ImageVector[]): Promise<void>;
  /** Forget these objects' vectors (absent ones are no error). */
  remove(space: string, refs: readonly VectorRef[]): Promise<void>;
  /** One object's stored vector, or undefined. */
  get(space: string, ref: VectorRef): Promise<Float32Array | undefined>;
  /** The nearest objects, best first, within a bucket (and a key prefix when given). */
  query(
    space: string,
    vector: Float32Array,
    options: { limit: number; bucket: string; prefix?: string; minScore?: number },
  ): Promise<VectorHit[]>;
  /** The spaces that hold vectors. */
  spaces(): Promise<string[]>;
}

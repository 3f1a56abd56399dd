/**
 * S3 event parsing. Accepts the bodies the router can receive:
 * - S3 → SQS notifications: `{ "Records": [{ "eventName": "ObjectCreated:Put", "s3": {...} }] }`
 *   (the stack's `effitag:events=s3` mode)
 * - S3 test messages: `{ "Event": "s3:TestEvent", ... }` (ignored)
 * - EventBridge `Object Created` / `Object Deleted` events, as an EventBridge rule's SQS target
 *   receives them: `{ "source": "aws.s3", "detail-type": "Object Created", "detail": {...} }`
 *   (the `effitag:events=eventbridge` mode)
 * - SNS-wrapped versions of the above (`{ "Type": "Notification", "Message": "…" }`)
 *
 * Keys in S3 notifications are URL-encoded with `+` for spaces; EventBridge keys are not encoded.
 * An event that claims to be about an object but names no bucket or key is `unrecognised` (a clear,
 * permanent error for the router to log), never a TypeError that would be retried into the DLQ.
 */
export interface ObjectCreated {
  bucket: string;
  key: string;
  eTag?: string;
  versionId?: string;
  size?: number;
  sequencer?: string;
  /** Put | Post | Copy | CompleteMultipartUpload. */
  kind: 'Put' | 'Post' | 'Copy' | 'CompleteMultipartUpload' | 'Other';
  eventTime?: string;
}

/** An object deleted (or hidden by a delete marker): its index entries go. */
export interface ObjectRemoved {
  bucket: string;
  key: string;
  versionId?: string;
  eventTime?: string;
  /**
   * `delete-marker`: a versioned bucket hid the object (its versions remain); `permanent`: a version
   * (or an unversioned object) is gone. Not acted on: the router asks the bucket whether the key still answers.
   */
  deletion?: 'delete-marker' | 'permanent';
}

export type ParsedBody =
  | { type: 'objects'; objects: ObjectCreated[]; removed?: ObjectRemoved[]; ignored: number }
  | { type: 'test' }
  | { type: 'unrecognised'; reason: string };

/** Decode an S3 notification key: `+` is a space, the rest is percent-encoded UTF-8. */
export function decodeS3Key(encoded: string): string {
  return decodeURIComponent(encoded.replace(/\+/g, ' '));
}

/** Encode a key the way S3 notifications do (used by the embedded stack's forwarder). */
export function encodeS3Key(key: string): string {
  return encodeURIComponent(key)
    .replace(/%20/g, '+')
    .replace(/%2F/g, '/')
    .replace(/[!'()*]/g, (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`);
}

const unquote = (etag?: string) => etag?.replace(/^"|"$/g, '');

function kindOf(name: string): ObjectCreated['kind'] {
  const k = name.replace(/^ObjectCreated:/, '');
  return k === 'Put' || k === 'Post' || k === 'Copy' || k === 'CompleteMultipartUpload' ? k : 'Other';
}

const REASONS: Record<string, ObjectCreated['kind']> = {
  PutObject: 'Put',
  'POST Object': 'Post',
  CopyObject: 'Copy',
  CompleteMultipartUpload: 'CompleteMultipartUpload',
};

export function parseEventBody(body: string): ParsedBody {
  // biome-ignore lint/suspicious/noExplicitAny: untrusted JSON of several shapes (S3, SNS, EventBridge), narrowed field by field below
  let json: any;
  try {
    json = JSON.parse(body);
  } catch {
    return { type: 'unrecognised', reason: 'body is not JSON' };
  }
  if (json && json.Type === 'Notification' && typeof json.Message === 'string') return parseEventBody(json.Message);
  if (json?.Event === 's3:TestEvent') return { type: 'test' };
  if (Array.isArray(json?.Records)) return parseRecords(json.Records);
  if (json?.source === 'aws.s3' && json.detail && typeof json.detail === 'object') return parseEventBridge(json);
  return { type: 'unrecognised', reason: 'neither an S3 notification nor an EventBridge S3 event' };
}

const isName = (v: unknown): v is string => typeof v === 'string' && v.length > 0;

/** What S3 notifications name a removal (ObjectRemoved:*, and lifecycle expirations where subscribed). */
const REMOVALS: Record<string, ObjectRemoved['deletion']> = {
  'ObjectRemoved:Delete': 'permanent',
  'ObjectRemoved:DeleteMarkerCreated': 'delete-marker',
  'LifecycleExpiration:Delete': 'permanent',
  'LifecycleExpiration:DeleteMarkerCreated': 'delete-marker',
};

// biome-ignore lint/suspicious/noExplicitAny: untrusted JSON, narrowed field by field
function parseRecords(records: any[]): ParsedBody {
  const objects: ObjectCreated[] = [];
  const removed: ObjectRemoved[] = [];
  let ignored = 0;
  for (const r of records) {
    const name = typeof r?.eventName === 'string' ? r.eventName : '';
    const created = name.startsWith('ObjectCreated:');
    const removal = name.startsWith('ObjectRemoved:') || name.startsWith('LifecycleExpiration:');
    if (r?.eventSource !== 'aws:s3' || !(created || removal)) {
      ignored++;
      continue;
    }
    const bucket = r.s3?.bucket?.name;
    const key = r.s3?.object?.key;
    if (!isName(bucket) || !isName(key))
      return { type: 'unrecognised', reason: `an S3 ${name} record without s3.bucket.name or s3.object.key` };
    if (removal) {
      removed.push({
        bucket,
        key: decodeS3Key(key),
        versionId: r.s3.object.versionId || undefined,
        eventTime: r.eventTime,
        deletion: REMOVALS[name] ?? 'permanent',
      });
      continue;
    }
    objects.push({
      bucket,
      key: decodeS3Key(key),
      eTag: unquote(r.s3.object.eTag),
      versionId: r.s3.object.versionId || undefined,
      size: r.s3.object.size,
      sequencer: r.s3.object.sequencer,
      kind: kindOf(name),
      eventTime: r.eventTime,
    });
  }
  return { type: 'objects', objects, ignored, ...(removed.length ? { removed } : {}) };
}

/**
 * An EventBridge event from S3 (`source: aws.s3`). Only Object Created and Object Deleted matter;
 * the stack's rule forwards nothing else, and any other S3 detail-type (Object Restore Completed, Object
 * Tags Added, …) is counted as ignored. Object Deleted covers lifecycle expirations too (`reason`).
 */
// biome-ignore lint/suspicious/noExplicitAny: untrusted JSON, narrowed field by field
function parseEventBridge(json: any): ParsedBody {
  const type = json['detail-type'];
  if (type !== 'Object Created' && type !== 'Object Deleted') return { type: 'objects', objects: [], ignored: 1 };
  const d = json.detail;
  const bucket = d.bucket?.name;
  const key = d.object?.key;
  if (!isName(bucket) || !isName(key))
    return { type: 'unrecognised', reason: `an EventBridge ${type} event without detail.bucket.name or detail.object.key` };
  const versionId = d.object['version-id'] || undefined;
  if (type === 'Object Deleted') {
    const deletion = d['deletion-type'] === 'Delete Marker Created' ? 'delete-marker' : 'permanent';
    return { type: 'objects', objects: [], ignored: 0, removed: [{ bucket, key, versionId, eventTime: json.time, deletion }] };
  }
  return {
    type: 'objects',
    ignored: 0,
    objects: [
      {
        bucket,
        key,
        eTag: unquote(d.object.etag),
        versionId,
        size: typeof d.object.size === 'number' ? d.object.size : undefined,
        sequencer: d.object.sequencer,
        kind: REASONS[d.reason] ?? 'Other',
        eventTime: json.time,
      },
    ],
  };
}

/**
 * S3 event parsing. Accepts the bodies the router can receive:
 * - S3 → SQS notifications: `{ "Records": [{ "eventName": "ObjectCreated:Put", "s3": {...} }] }`
 * - S3 test messages: `{ "Event": "s3:TestEvent", ... }` (ignored)
 * - EventBridge `Object Created` events: `{ "detail-type": "Object Created", "detail": {...} }`
 * - SNS-wrapped versions of the above (`{ "Type": "Notification", "Message": "…" }`)
 *
 * Keys in S3 notifications are URL-encoded with `+` for spaces; EventBridge keys are not encoded.
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
  if (Array.isArray(json?.Records)) {
    const objects: ObjectCreated[] = [];
    const removed: ObjectRemoved[] = [];
    let ignored = 0;
    for (const r of json.Records) {
      if (r?.eventSource === 'aws:s3' && String(r.eventName).startsWith('ObjectRemoved:') && r.s3?.object?.key) {
        removed.push({
          bucket: r.s3.bucket.name,
          key: decodeS3Key(r.s3.object.key),
          versionId: r.s3.object.versionId || undefined,
          eventTime: r.eventTime,
        });
        continue;
      }
      if (
        r?.eventSource !== 'aws:s3' ||
        typeof r.eventName !== 'string' ||
        !r.eventName.startsWith('ObjectCreated:') ||
        !r.s3?.object?.key
      ) {
        ignored++;
        continue;
      }
      objects.push({
        bucket: r.s3.bucket.name,
        key: decodeS3Key(r.s3.object.key),
        eTag: unquote(r.s3.object.eTag),
        versionId: r.s3.object.versionId || undefined,
        size: r.s3.object.size,
        sequencer: r.s3.object.sequencer,
        kind: kindOf(r.eventName),
        eventTime: r.eventTime,
      });
    }
    return { type: 'objects', objects, ignored, ...(removed.length ? { removed } : {}) };
  }
  if (json?.source === 'aws.s3' && json['detail-type'] === 'Object Created' && json.detail?.object?.key) {
    const d = json.detail;
    return {
      type: 'objects',
      ignored: 0,
      objects: [
        {
          bucket: d.bucket.name,
          key: d.object.key,
          eTag: unquote(d.object.etag),
          versionId: d.object['version-id'] || undefined,
          size: d.object.size,
          sequencer: d.object.sequencer,
          kind: REASONS[d.reason] ?? 'Other',
          eventTime: json.time,
        },
      ],
    };
  }
  if (json?.source === 'aws.s3' && json['detail-type'] === 'Object Deleted' && json.detail?.object?.key) {
    const d = json.detail;
    return {
      type: 'objects',
      objects: [],
      ignored: 0,
      removed: [{ bucket: d.bucket.name, key: d.object.key, versionId: d.object['version-id'] || undefined, eventTime: json.time }],
    };
  }
  if (json?.source === 'aws.s3') return { type: 'objects', objects: [], ignored: 1 };
  return { type: 'unrecognised', reason: 'neither an S3 notification nor an EventBridge S3 event' };
}

/**
 * Amazon S3 events as an EventBridge rule's SQS target receives them (the stack's
 * `effitag:events=eventbridge` mode): the message body is the EventBridge event itself, in the shape
 * of the S3 user guide's "EventBridge event message structure" (detail-type Object Created / Object
 * Deleted, `detail.object.key` NOT URL-encoded, `time` to the second, no quotes around the ETag).
 *
 * `eventBridgeEvent` builds one from an object change; `eventBridgeFromS3Record` converts an S3
 * notification record (what S3 → SQS, and the embedded stack's s3rver, produce: key URL-encoded) so
 * the rehearsal can deliver the same uploads in either mode.
 */
import { randomUUID } from 'node:crypto';
import { decodeS3Key } from '../../pipeline/events.ts';

export type CreatedReason = 'PutObject' | 'POST Object' | 'CopyObject' | 'CompleteMultipartUpload';

export type S3ObjectChange =
  | {
      change: 'created';
      bucket: string;
      /** The key as stored (not encoded). */
      key: string;
      size: number;
      /** Without quotes, as EventBridge sends it. */
      eTag: string;
      versionId?: string;
      sequencer?: string;
      reason?: CreatedReason;
      time?: Date;
    }
  | {
      change: 'removed';
      bucket: string;
      key: string;
      versionId?: string;
      sequencer?: string;
      deletionType?: 'Permanently Deleted' | 'Delete Marker Created';
      reason?: 'DeleteObject' | 'Lifecycle Expiration';
      time?: Date;
    };

export interface EventBridgeS3Event {
  version: '0';
  id: string;
  'detail-type': 'Object Created' | 'Object Deleted';
  source: 'aws.s3';
  account: string;
  time: string;
  region: string;
  resources: string[];
  detail: Record<string, unknown>;
}

export interface EventEnvelope {
  account?: string;
  region?: string;
}

/** EventBridge stamps `time` to the second. */
const eventTime = (t: Date = new Date()) => `${t.toISOString().slice(0, 19)}Z`;

/** The EventBridge event S3 emits for one object change. `JSON.stringify` it for an SQS body. */
export function eventBridgeEvent(c: S3ObjectChange, env: EventEnvelope = {}): EventBridgeS3Event {
  const object: Record<string, unknown> = { key: c.key };
  if (c.change === 'created') Object.assign(object, { size: c.size, etag: c.eTag });
  if (c.versionId) object['version-id'] = c.versionId;
  object.sequencer = c.sequencer ?? Date.now().toString(16).toUpperCase().padStart(16, '0');
  const common = {
    version: '0',
    bucket: { name: c.bucket },
    object,
    'request-id': randomUUID().replace(/-/g, '').slice(0, 16).toUpperCase(),
    requester: env.account ?? '123456789012',
    'source-ip-address': '203.0.113.15',
  };
  const detail =
    c.change === 'created'
      ? { ...common, reason: c.reason ?? 'PutObject' }
      : {
          ...common,
          reason: c.reason ?? 'DeleteObject',
          'deletion-type': c.deletionType ?? (c.versionId ? 'Delete Marker Created' : 'Permanently Deleted'),
        };
  return {
    version: '0',
    id: randomUUID(),
    'detail-type': c.change === 'created' ? 'Object Created' : 'Object Deleted',
    source: 'aws.s3',
    account: env.account ?? '123456789012',
    time: eventTime(c.time),
    region: env.region ?? 'us-east-1',
    resources: [`arn:aws:s3:::${c.bucket}`],
    detail,
  };
}

const REASON_OF: Record<string, CreatedReason> = {
  'ObjectCreated:Put': 'PutObject',
  'ObjectCreated:Post': 'POST Object',
  'ObjectCreated:Copy': 'CopyObject',
  'ObjectCreated:CompleteMultipartUpload': 'CompleteMultipartUpload',
};

/**
 * The EventBridge event for the same change as an S3 notification record (`{ eventName, eventTime,
 * s3: { bucket, object } }`), or undefined for a record EventBridge mode does not forward.
 */
export function eventBridgeFromS3Record(record: any, env: EventEnvelope = {}): EventBridgeS3Event | undefined {
  const name = String(record?.eventName ?? '');
  const o = record?.s3?.object ?? {};
  const base = {
    bucket: String(record?.s3?.bucket?.name),
    key: decodeS3Key(String(o.key)),
    versionId: o.versionId || undefined,
    sequencer: o.sequencer,
    time: record?.eventTime ? new Date(record.eventTime) : undefined,
  };
  if (name.startsWith('ObjectCreated:'))
    return eventBridgeEvent(
      {
        ...base,
        change: 'created',
        size: Number(o.size ?? 0),
        eTag: String(o.eTag ?? '').replace(/^"|"$/g, ''),
        reason: REASON_OF[name] ?? 'PutObject',
      },
      env,
    );
  if (name.startsWith('ObjectRemoved:'))
    return eventBridgeEvent(
      {
        ...base,
        change: 'removed',
        deletionType: name === 'ObjectRemoved:DeleteMarkerCreated' ? 'Delete Marker Created' : 'Permanently Deleted',
      },
      env,
    );
  return undefined;
}

/** The SQS message body an EventBridge rule target receives: the event, unwrapped. */
export const eventBridgeBody = (c: S3ObjectChange, env?: EventEnvelope): string => JSON.stringify(eventBridgeEvent(c, env));

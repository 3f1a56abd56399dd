/** A tagging task: what the router sends to a tier queue and the worker executes. */
import { createHash } from 'node:crypto';
import { z } from 'zod';
import type { OutgoingMessage } from './ports.ts';

export const taskSchema = z.object({
  v: z.literal(1),
  bucket: z.string().min(1),
  key: z.string().min(1),
  eTag: z.string().min(1),
  versionId: z.string().optional(),
  /**
   * What makes this upload of the object unique when its bytes and version are not (an unversioned
   * bucket, the same bytes uploaded again, or A → B → A): the S3 event's `sequencer`, else the
   * object's upload time (backfills and the catch-up list objects; listings carry no sequencer).
   */
  revision: z.string().min(1).max(200).optional(),
  size: z.number().int().nonnegative(),
  tier: z.string().min(1),
  variant: z.string().min(1),
  /** Dimensions read by the router (absent when the header could not be read). */
  width: z.number().int().positive().optional(),
  height: z.number().int().positive().optional(),
  source: z.enum(['upload', 'backfill']),
  enqueuedAt: z.string(),
});
export type Task = z.infer<typeof taskSchema>;

/**
 * The FIFO deduplication id: the object version (bucket, key, ETag, version) and the upload's
 * revision. Deliveries of one S3 event (SQS at-least-once, a router retry) share it and the queue
 * keeps one for 5 minutes; a second upload of the same bytes, or A → B → A, has another sequencer,
 * so its task is not dropped as a duplicate while the upload has wiped the tags.
 */
export function taskIdentity(t: Pick<Task, 'bucket' | 'key' | 'eTag' | 'versionId' | 'revision'>): string {
  return createHash('sha256')
    .update([t.bucket, t.key, t.eTag, t.versionId ?? '', t.revision ?? ''].join('\0'))
    .digest('hex');
}

/** The object version a task is for, whatever upload produced it: one inference per version in a batch. */
export function objectVersionIdentity(t: Pick<Task, 'bucket' | 'key' | 'eTag' | 'versionId'>): string {
  return [t.bucket, t.key, t.eTag, t.versionId ?? ''].join('\0');
}

/**
 * What makes an upload unique (a task's `revision`): the event's sequencer, else the upload time of
 * the version read (backfills and the catch-up have no event). Bounded: it comes from an event body.
 */
export function revisionOf(object: { sequencer?: unknown }, head: { lastModified?: Date }): Pick<Task, 'revision'> {
  if (typeof object.sequencer === 'string' && object.sequencer) return { revision: `s:${object.sequencer.slice(0, 190)}` };
  return head.lastModified ? { revision: `t:${head.lastModified.toISOString()}` } : {};
}

/**
 * JSON with every character past ASCII escaped (`\uXXXX`, astral ones as surrogate pairs): a key may
 * hold any character S3 accepts, and an SQS body only some (the embedded stand-in, fauxqs, refuses
 * astral characters such as emoji that SQS accepts). Parses back to the same value.
 */
export function asciiJson(value: unknown): string {
  return JSON.stringify(value).replace(/[\u007f-\uffff]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`);
}

export function taskMessage(task: Task): OutgoingMessage {
  const id = taskIdentity(task);
  return {
    body: asciiJson(task),
    deduplicationId: id,
    // One group per object: per-key order is kept, different objects run in parallel.
    groupId: createHash('sha256').update(`${task.bucket}\0${task.key}`).digest('hex').slice(0, 64),
  };
}

export function parseTask(body: string): Task {
  let json: unknown;
  try {
    json = JSON.parse(body);
  } catch {
    throw new Error('task body is not JSON');
  }
  const parsed = taskSchema.safeParse(json);
  if (!parsed.success) throw new Error(`invalid task: ${parsed.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`).join('; ')}`);
  return parsed.data;
}

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

/** Same bucket, key, ETag and version → same id: the FIFO queue drops duplicates for 5 minutes. */
export function taskIdentity(t: Pick<Task, 'bucket' | 'key' | 'eTag' | 'versionId'>): string {
  return createHash('sha256')
    .update([t.bucket, t.key, t.eTag, t.versionId ?? ''].join('\0'))
    .digest('hex');
}

export function taskMessage(task: Task): OutgoingMessage {
  const id = taskIdentity(task);
  return {
    body: JSON.stringify(task),
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

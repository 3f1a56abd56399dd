/**
 * Dead-letter queues, for people: what is in each (grouped by the reason the worker recorded, or
 * the reason a message's body gives), and redrive (back to the queue it came from). Written against
 * the queue port: SQS on AWS or the embedded stack (a queue's DLQ from its redrive policy), or the
 * in-memory queues of the tests.
 */
import { messageOf } from '../base/errors.ts';
import type { MessageQueue, QueueMessage } from './ports.ts';
import { parseTask } from './task.ts';
import { DEAD_LETTER_ATTRIBUTES } from './worker-stages.ts';

export interface DeadLetterGroup {
  reason: string;
  count: number;
  /** A few object keys (or message bodies) as examples. */
  samples: string[];
}

export interface DeadLetterReport {
  source: string;
  deadLetterQueue: string;
  messages: number;
  groups: DeadLetterGroup[];
}

/** Why a message is in a DLQ: the worker's recorded reason, else what its body tells. */
export function reasonOf(m: QueueMessage, maxReceives?: number): string {
  const recorded = m.attributes?.[DEAD_LETTER_ATTRIBUTES.reason];
  if (recorded) return recorded;
  try {
    parseTask(m.body);
  } catch (err) {
    // Not a task: a malformed task, or an S3 event the router could not handle (intake DLQ).
    if (!/"Records"|"detail"/.test(m.body)) return `poison: ${messageOf(err)}`;
  }
  return `moved by the queue's redrive policy after ${maxReceives ?? 'N'} receives (no reason recorded: see the worker's logs)`;
}

function sampleOf(m: QueueMessage): string {
  try {
    const t = parseTask(m.body);
    return `s3://${t.bucket}/${t.key}`;
  } catch {
    return m.body.length > 120 ? `${m.body.slice(0, 117)}…` : m.body;
  }
}

/**
 * Every message of a queue, each received once: held invisible while the queue is read, then made
 * visible again (a queue has no "peek"). `holdSeconds` must outlast the read.
 */
async function readAll(queue: MessageQueue, limit: number, holdSeconds: number): Promise<QueueMessage[]> {
  const seen: QueueMessage[] = [];
  for (let empty = 0; seen.length < limit && empty < 2; ) {
    const got = await queue.receive({ max: Math.min(10, limit - seen.length), waitSeconds: empty ? 1 : 0, visibilitySeconds: holdSeconds });
    if (got.length === 0) {
      empty++;
      continue;
    }
    seen.push(...got);
  }
  return seen;
}

export async function listDeadLetters(
  sources: readonly { name: string; queue: MessageQueue }[],
  options: { limit?: number } = {},
): Promise<DeadLetterReport[]> {
  const reports: DeadLetterReport[] = [];
  for (const { name, queue } of sources) {
    const dl = await queue.deadLetterQueue();
    if (!dl) continue;
    const messages = await readAll(dl.queue, options.limit ?? 10_000, 60);
    await Promise.all(messages.map((m) => dl.queue.setVisibility(m, 0)));
    const groups = new Map<string, DeadLetterGroup>();
    for (const m of messages) {
      const reason = reasonOf(m, dl.maxReceives);
      const g = groups.get(reason) ?? { reason, count: 0, samples: [] };
      g.count++;
      if (g.samples.length < 3) g.samples.push(sampleOf(m));
      groups.set(reason, g);
    }
    reports.push({
      source: name,
      deadLetterQueue: dl.queue.name,
      messages: messages.length,
      groups: [...groups.values()].sort((a, b) => b.count - a.count),
    });
  }
  return reports;
}

/**
 * The deduplication id of a message sent back: one per dead-lettered message (its own message id).
 * Not the id it was first sent with: SQS's redrive policy moves a message with that id, and inside
 * the 5-minute window the queue would drop it as a duplicate (and the DLQ's copy is deleted next).
 * Not one per redrive run either: two dead letters can share their first id (the same object
 * version sent again after the window), and the second would be dropped the same way. A redrive
 * re-run after a crash between send and delete sends the same id again, which the queue drops.
 */
export function redriveDeduplicationId(m: Pick<QueueMessage, 'id'>): string {
  return `redrive-${m.id}`.slice(0, 128);
}

export interface RedriveReport {
  /** Messages sent back (and deleted from the DLQ). */
  sent: number;
  /** The DLQ read; undefined when the queue has no redrive policy. */
  deadLetterQueue?: string;
}

/**
 * Move a DLQ's messages back to the queue they came from: sent again (FIFO: same group, a
 * deduplication id of their own, see redriveDeduplicationId), then deleted from the DLQ. A message
 * that fails for good again goes back to the DLQ with its reason (the worker's last receive).
 */
export async function redriveDeadLetters(
  source: { name: string; queue: MessageQueue },
  options: { limit?: number } = {},
): Promise<RedriveReport> {
  const dl = await source.queue.deadLetterQueue();
  if (!dl) return { sent: 0 };
  const messages = await readAll(dl.queue, options.limit ?? 10_000, 120);
  for (let i = 0; i < messages.length; i += 10) {
    const chunk = messages.slice(i, i + 10);
    await source.queue.send(
      chunk.map((m) => ({
        body: m.body,
        groupId: m.groupId,
        deduplicationId: redriveDeduplicationId(m),
      })),
    );
    await dl.queue.delete(chunk);
  }
  return { sent: messages.length, deadLetterQueue: dl.queue.name };
}

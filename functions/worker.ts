/**
 * Lambda handler: the CPU tier's worker. SQS event source on the tier's task queue → the same
 * worker core the GPU containers run (`makeWorker(...).handle`), on the tier's engine. Messages whose
 * object got its result (or its recorded failure) are done; the others are reported as batch item
 * failures and come back after the visibility timeout; on its last receive a failing message goes
 * to the DLQ with its reason.
 *
 * Weights published after the stack (the README's order): the worker syncs what is published and
 * looks again when a task asks for a model it lacks (the task is retried meanwhile); missing
 * weights never fail its start (pipeline/aws/worker-runtime.ts).
 *
 * FIFO note: Lambda deletes every message not reported as failed, including later messages of a
 * failed message's group. EffiTag's groups are one object key each, and a task for an older version
 * of a key is skipped anyway (If-Match on its ETag), so per-key order needs no stricter handling.
 */
import type { SQSBatchResponse, SQSEvent } from './lambda-types.ts';
import { deployedWorker, type DeployedWorker } from '../pipeline/aws/worker-runtime.ts';

let deployed: Promise<DeployedWorker> | undefined;

export async function handler(event: SQSEvent): Promise<SQSBatchResponse> {
  deployed ??= deployedWorker({ component: 'worker' }).catch((err) => {
    deployed = undefined;
    throw err;
  });
  const { worker, weights } = await deployed;
  // Models not published at start: look again (at most every few seconds), so a task the router
  // sent once they were published finds them at this invocation or the next.
  await weights.check();
  const results = await worker.handle(
    event.Records.map((r) => ({
      id: r.messageId,
      receipt: r.receiptHandle,
      body: r.body,
      receiveCount: Number(r.attributes.ApproximateReceiveCount ?? 1),
    })),
  );
  const failed = results.filter((r) => r.outcome.status === 'retry' || r.outcome.status === 'poison');
  return { batchItemFailures: failed.map((r) => ({ itemIdentifier: r.message.id })) };
}

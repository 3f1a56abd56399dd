/**
 * Lambda handler: the CPU tier's worker. SQS event source on the tier's task queue → the same
 * worker core the GPU containers run (`makeWorker(...).handle`), on onnxruntime. Messages whose
 * object got its result (or its recorded failure) are done; the others are reported as batch item
 * failures and come back after the visibility timeout, then go to the DLQ after N receives.
 *
 * FIFO note: Lambda deletes every message not reported as failed, including later messages of a
 * failed message's group. EffiTag's groups are one object key each, and a task for an older version
 * of a key is skipped anyway (If-Match on its ETag), so per-key order needs no stricter handling.
 */
import type { SQSBatchResponse, SQSEvent } from './lambda-types.ts';
import { ortEngine, WORKER_ORT_OPTIONS } from '../inference/ort-engine.ts';
import { deployed } from '../pipeline/aws/deployed.ts';
import { syncWeights } from '../pipeline/aws/s3-weights.ts';
import { jsonLogger } from '../pipeline/log.ts';
import { directoryCatalog } from '../pipeline/models.ts';
import { variantsOf } from '../pipeline/runtime-config.ts';
import { makeWorker, type Worker } from '../pipeline/worker.ts';
import type { QueueMessage } from '../pipeline/ports.ts';

let worker: Promise<Worker> | undefined;

async function init(): Promise<Worker> {
  const { config, s3, store, queues } = deployed();
  if (!config.tier) throw new Error('EFFITAG_TIER is not set');
  await syncWeights(s3, config.weightsLocation, variantsOf(config.tiers, config.tier), config.weightsDir);
  const log = jsonLogger({ base: { component: 'worker', tier: config.tier } });
  const models = directoryCatalog(config.weightsDir, ortEngine({ ...WORKER_ORT_OPTIONS, log: (m) => log.log('info', m) }));
  const queue = queues[config.tier];
  return makeWorker({
    store, queue, tiers: config.tiers, models, log,
    options: {
      emitMetrics: (line) => process.stdout.write(`${line}\n`), metricDimensions: { Tier: config.tier },
      // On its last receive a failing message goes to the DLQ with its reason (not reported as a failure).
      deadLetter: await queue.deadLetterQueue(),
    },
  });
}

export async function handler(event: SQSEvent): Promise<SQSBatchResponse> {
  worker ??= init().catch((err) => { worker = undefined; throw err; });
  const w = await worker;
  const messages: QueueMessage[] = event.Records.map((r) => ({
    id: r.messageId, receipt: r.receiptHandle, body: r.body, receiveCount: Number(r.attributes.ApproximateReceiveCount ?? 1),
  }));
  const results = await w.handle(messages);
  const failed = results.filter((r) => r.outcome.status === 'retry' || r.outcome.status === 'poison');
  return { batchItemFailures: failed.map((r) => ({ itemIdentifier: r.message.id })) };
}

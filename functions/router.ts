/**
 * Lambda handler: the router. SQS event source on the intake queue (S3 notifications) →
 * `makeRouter` core. Reports partial batch failures, so only failed messages are retried; a body
 * that is not an S3 event is logged and dropped (retrying it cannot help).
 */
import type { SQSBatchResponse, SQSEvent } from './lambda-types.ts';
import { currentMarkers, deployed } from '../pipeline/aws/wiring.ts';
import { Counters, jsonLogger } from '../pipeline/log.ts';
import { makeRouter, routeBatch, type Router } from '../pipeline/router.ts';

const log = jsonLogger({ base: { component: 'router' } });
const counters = new Counters();
let router: Promise<Router> | undefined;

/**
 * The router needs only each model's marker: the published manifests (not the weights), learned
 * lazily. Objects of a model not published yet are not enqueued ('waiting-for-weights', logged with
 * the fix); its manifest is read again a minute later, so publishing needs no redeploy.
 */
async function init(): Promise<Router> {
  const d = deployed();
  const models = await currentMarkers(d, d.config.tiers, d.config.weightsLocation, log, { recheckMs: d.config.weightsRecheckMs });
  // d.vectors (EFFITAG_VECTOR_BUCKET): a removed object's embedding is deleted with its index entry.
  return makeRouter({ store: d.store, queues: d.queues, tiers: d.config.tiers, index: d.index, vectors: d.vectors, log, counters, models });
}

export async function handler(event: SQSEvent): Promise<SQSBatchResponse> {
  router ??= init().catch((err) => {
    router = undefined;
    throw err;
  });
  const retry = await routeBatch(
    await router,
    event.Records.map((m) => ({ id: m.messageId, body: m.body })),
    log,
  );
  const emf = counters.emfDelta({ Function: 'router' });
  if (emf) process.stdout.write(`${emf}\n`);
  return { batchItemFailures: retry.map((itemIdentifier) => ({ itemIdentifier })) };
}

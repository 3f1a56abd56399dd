/**
 * Lambda handler: the router. SQS event source on the intake queue (S3 notifications) →
 * `makeRouter` core. Reports partial batch failures, so only failed messages are retried; a body
 * that is not an S3 event is logged and dropped (retrying it cannot help).
 */
import type { SQSBatchResponse, SQSEvent } from './lambda-types.ts';
import { deployed } from '../pipeline/aws/deployed.ts';
import { Counters, jsonLogger } from '../pipeline/log.ts';
import { makeRouter, type Router } from '../pipeline/router.ts';
import { variantsOf } from '../pipeline/runtime-config.ts';
import { markersFromS3 } from '../pipeline/aws/markers.ts';

const log = jsonLogger({ base: { component: 'router' } });
const counters = new Counters();
let router: Promise<Router> | undefined;

/** The router needs only each variant's marker: read the published manifests (not the weights). */
async function init(): Promise<Router> {
  const { config, s3, store, queues } = deployed();
  const models = await markersFromS3(s3, config.weightsLocation, variantsOf(config.tiers));
  return makeRouter({ store, queues, tiers: config.tiers, log, counters, models });
}

export async function handler(event: SQSEvent): Promise<SQSBatchResponse> {
  router ??= init().catch((err) => { router = undefined; throw err; });
  const r = await router;
  const batchItemFailures: SQSBatchResponse['batchItemFailures'] = [];
  for (const record of event.Records) {
    try {
      await r.handleBody(record.body);
    } catch (err) {
      const permanent = (err as { permanent?: boolean }).permanent === true;
      log.log(permanent ? 'error' : 'warn', 'routing failed', { messageId: record.messageId, error: String(err), permanent });
      if (!permanent) batchItemFailures.push({ itemIdentifier: record.messageId });
    }
  }
  const emf = counters.emfDelta({ Function: 'router' });
  if (emf) process.stdout.write(`${emf}\n`);
  return { batchItemFailures };
}

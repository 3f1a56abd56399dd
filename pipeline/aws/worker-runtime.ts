/**
 * What a deployed worker wires, the CPU Lambda and the GPU container alike: its tier from the
 * environment (pipeline/runtime-config.ts), that tier's weights synced from S3, the tier's engine
 * (or EFFITAG_ENGINE's), and the worker core on the tier's queue with its dead-letter queue.
 */
import { createEngine } from '../../inference/engines.ts';
import { WORKER_ORT_OPTIONS } from '../../inference/ort-engine.ts';
import type { WeightsManifest } from '../../model/weights.ts';
import { jsonLogger, type Logger } from '../log.ts';
import { modelMarker } from '../marker.ts';
import { directoryCatalog, modelId, type ModelCatalog } from '../models.ts';
import { workerConfig, type WorkerConfig } from '../runtime-config.ts';
import { makeWorker, type Worker } from '../worker.ts';
import { syncWeights } from './s3-weights.ts';
import { deployed } from './wiring.ts';

export interface DeployedWorker {
  config: WorkerConfig;
  worker: Worker;
  models: ModelCatalog;
  /** The tier's variants, as synced. */
  manifests: WeightsManifest[];
  log: Logger;
}

export async function deployedWorker(options: {
  component: string;
  config?: WorkerConfig;
  /** The long-running loop holds its messages on a renewed lease (EFFITAG_LEASE_SECONDS); Lambda does not. */
  leased?: boolean;
}): Promise<DeployedWorker> {
  const config = options.config ?? workerConfig();
  const { s3, store, queues, index } = deployed(process.env, config);
  const log = jsonLogger({ base: { component: options.component, tier: config.tier } });
  const manifests = await syncWeights(
    s3,
    config.weightsLocation,
    config.served.model ? [config.served.model] : config.served.variants,
    config.weightsDir,
  );
  log.log('info', 'weights ready', { models: manifests.map((m) => modelMarker(modelId(m), m.sha256)) });
  const engine = createEngine(config.engine, {
    tfjsBackend: config.tfjsBackend,
    ort: { ...WORKER_ORT_OPTIONS, log: (m) => log.log('info', m) },
  });
  log.log('info', 'engine', { engine: config.engine, ...(config.engine === 'tfjs' ? { tfjsBackend: config.tfjsBackend } : {}) });
  const models = directoryCatalog(config.weightsDir, engine);
  const queue = queues[config.tier];
  const worker = makeWorker({
    store,
    queue,
    tiers: config.tiers,
    models,
    index,
    log,
    options: {
      batchSize: config.served.batchSize,
      emitMetrics: (line) => process.stdout.write(`${line}\n`),
      metricDimensions: { Tier: config.tier },
      // On its last receive a failing message goes to the DLQ with its reason.
      deadLetter: await queue.deadLetterQueue(),
      ...(options.leased ? { visibilitySeconds: config.leaseSeconds } : {}),
    },
  });
  return { config, worker, models, manifests, log };
}

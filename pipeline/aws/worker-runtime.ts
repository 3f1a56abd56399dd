/**
 * What a deployed worker wires, the CPU Lambda and the GPU container alike: its tier from the
 * environment (pipeline/runtime-config.ts), that tier's published weights synced from S3 (those not
 * published yet are waited for: pipeline/weights-watch.ts), the tier's engine (or EFFITAG_ENGINE's),
 * and the worker core on the tier's queue with its dead-letter queue.
 */
import { createEngine } from '../../inference/engines.ts';
import { WORKER_ORT_OPTIONS } from '../../inference/ort-engine.ts';
import type { WeightsManifest } from '../../model/weights.ts';
import { jsonLogger, type Logger } from '../log.ts';
import { directoryCatalog, MissingWeightsError, type ModelCatalog } from '../models.ts';
import { workerConfig, type WorkerConfig } from '../runtime-config.ts';
import { WEIGHTS_POLL, watchWeights, type WeightsWatch } from '../weights-watch.ts';
import { makeWorker, type Worker } from '../worker.ts';
import { syncModel } from './s3-weights.ts';
import { deployed } from './wiring.ts';

export interface DeployedWorker {
  config: WorkerConfig;
  worker: Worker;
  models: ModelCatalog;
  /** The tier's models: which are synced, which are still waited for. */
  weights: WeightsWatch;
  log: Logger;
}

/**
 * The local catalog, with a missing model's error saying it waits for its weights (a task for it
 * can only come in the moment between the router seeing them published and this worker syncing
 * them: it is retried), and asking the watch to look again now.
 */
export function waitingCatalog(catalog: ModelCatalog, weights: Pick<WeightsWatch, 'kick'>, location: string): ModelCatalog {
  const waiting = <T>(model: string, f: () => T): T => {
    try {
      return f();
    } catch (err) {
      if (!(err instanceof MissingWeightsError)) throw err;
      weights.kick();
      // Short and stable (it is the retry's reason, and a metric's name); the fix is in the start-up log.
      throw new MissingWeightsError(`waiting-for-weights: ${model} not synced from ${location} yet`);
    }
  };
  return {
    location,
    marker: (model) => waiting(model, () => catalog.marker(model)),
    variants: () => catalog.variants(),
    load: (model) => waiting(model, () => catalog.load(model)),
    ...(catalog.sharedHead ? { sharedHead: (model: string, base: string) => waiting(model, () => catalog.sharedHead!(model, base)) } : {}),
    dispose: () => catalog.dispose(),
  };
}

export async function deployedWorker(options: {
  component: string;
  config?: WorkerConfig;
  /** The long-running loop holds its messages on a renewed lease (EFFITAG_LEASE_SECONDS); Lambda does not. */
  leased?: boolean;
  /** Check for models not yet published in the background (the GPU container); else only when a task asks (Lambda). */
  poll?: boolean;
  /** Runs as a model missing at start is published and synced (the GPU container loads it). */
  onReady?: (manifest: WeightsManifest, models: ModelCatalog) => Promise<void> | void;
}): Promise<DeployedWorker> {
  const config = options.config ?? workerConfig();
  // vectors: the stack's S3 Vectors index (EFFITAG_VECTOR_BUCKET), where the tier stores embeddings.
  const { s3, store, queues, index, vectors } = deployed(process.env, config);
  const log = jsonLogger({ base: { component: options.component, tier: config.tier } });
  const engine = createEngine(config.engine, {
    tfjsBackend: config.tfjsBackend,
    ort: { ...WORKER_ORT_OPTIONS, log: (m) => log.log('info', m) },
  });
  log.log('info', 'engine', { engine: config.engine, ...(config.engine === 'tfjs' ? { tfjsBackend: config.tfjsBackend } : {}) });
  let weights: WeightsWatch | undefined;
  const models = waitingCatalog(directoryCatalog(config.weightsDir, engine), { kick: () => weights?.kick() }, config.weightsLocation);
  weights = await watchWeights({
    source: { location: config.weightsLocation, sync: (model) => syncModel(s3, config.weightsLocation, model, config.weightsDir) },
    models: config.served.models,
    log,
    poll: options.poll,
    // Polls from 10 s, doubling up to the recheck interval (EFFITAG_WEIGHTS_RECHECK_SECONDS).
    maxDelayMs: config.weightsRecheckMs,
    firstDelayMs: Math.min(WEIGHTS_POLL.firstDelayMs, config.weightsRecheckMs),
    minGapMs: Math.min(WEIGHTS_POLL.minGapMs, config.weightsRecheckMs),
    onReady: (manifest) => options.onReady?.(manifest, models),
  });
  const queue = queues[config.tier];
  const worker = makeWorker({
    store,
    queue,
    tiers: config.tiers,
    models,
    index,
    vectors,
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
  return { config, worker, models, weights, log };
}

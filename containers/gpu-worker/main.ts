/**
 * The GPU worker container's entry point (ECS service per GPU tier). Long-polls the tier's queue
 * with the same worker core as the Lambda, on tfjs-node-gpu (or onnxruntime when the tier says
 * `ort`). On SIGTERM (scale-in, deploys, spot drains) it stops polling, finishes the batch in hand,
 * makes prefetched messages visible again and exits 0.
 *
 * On tfjs it refuses to start unless TensorFlow uses a GPU device: a silent CPU fallback would
 * drain the queue some 50× slower at GPU prices. `EFFITAG_ENGINE=ort` overrides the tier's engine
 * (the deploy rehearsal runs this entry point that way, on a machine without a GPU).
 */
import { createEngine } from '../../inference/engines.ts';
import { checkGpu } from './check-gpu.ts';
import { WORKER_ORT_OPTIONS } from '../../inference/ort-engine.ts';
import { assertGpuDevice, tf, useTfjsBackend } from '../../model/tfjs-backend.ts';
import { deployed } from '../../pipeline/aws/deployed.ts';
import { syncWeights } from '../../pipeline/aws/s3-weights.ts';
import { jsonLogger } from '../../pipeline/log.ts';
import { directoryCatalog } from '../../pipeline/models.ts';
import { variantsOf } from '../../pipeline/runtime-config.ts';
import { stopOnSignals } from '../../pipeline/shutdown.ts';
import { makeWorker } from '../../pipeline/worker.ts';

/** The worker's lease on a batch, renewed every third of it while the batch is in hand (EFFITAG_LEASE_SECONDS). */
const LEASE_SECONDS = Number(process.env.EFFITAG_LEASE_SECONDS ?? 60);

async function main(): Promise<void> {
  const { config, s3, store, queues } = deployed();
  if (!config.tier) throw new Error('EFFITAG_TIER is not set');
  const tier = config.tiers.tiers[config.tier];
  const log = jsonLogger({ base: { component: 'gpu-worker', tier: config.tier } });
  const engineName = process.env.EFFITAG_ENGINE ?? tier.engine;
  const tfjsBackend = process.env.EFFITAG_TFJS_BACKEND ?? 'tensorflow-gpu';
  if (engineName === 'tfjs') {
    const backend = await useTfjsBackend(tfjsBackend, (m) => log.log('info', m));
    if (backend.name === 'tensorflow-gpu') assertGpuDevice(tf.backend());
  }
  log.log('info', 'engine', { engine: engineName, ...(engineName === 'tfjs' ? { tfjsBackend } : {}) });
  const manifests = await syncWeights(s3, config.weightsLocation, variantsOf(config.tiers, config.tier), config.weightsDir);
  log.log('info', 'weights ready', { variants: manifests.map((m) => `${m.variant}@${m.sha256.slice(0, 12)}`) });
  const engine = createEngine(engineName, { tfjsBackend, ort: { ...WORKER_ORT_OPTIONS, log: (m) => log.log('info', m) } });
  const models = directoryCatalog(config.weightsDir, engine);
  // Load every variant before taking work: the first batch should not wait for weights or PTX JIT.
  for (const m of manifests) await models.load(m.variant);
  const queue = queues[config.tier];
  const worker = makeWorker({
    store, queue, tiers: config.tiers, models, log,
    options: {
      batchSize: tier.batchSize, emitMetrics: (line) => process.stdout.write(`${line}\n`), metricDimensions: { Tier: config.tier },
      // Messages held on a renewed lease: a killed task's batch returns within a minute.
      visibilitySeconds: LEASE_SECONDS, deadLetter: await queue.deadLetterQueue(),
    },
  });
  stopOnSignals([worker], () => log.log('info', 'stopped'));
  await worker.run();
  await models.dispose();
}

if (process.argv.includes('--check-gpu')) {
  // Acceptance check on a GPU instance (see the README's deploy guide): no AWS resources needed.
  const arg = (name: string) => process.argv.find((a) => a.startsWith(`--${name}=`))?.split('=')[1];
  checkGpu({ variant: arg('variant'), batch: arg('batch') ? Number(arg('batch')) : undefined }).then((result) => {
    process.stdout.write(`${JSON.stringify(result)}\n`);
    process.exit(result.gpuDevice ? 0 : 1);
  }, (err) => {
    process.stderr.write(`${JSON.stringify({ level: 'error', msg: 'GPU check failed', error: String(err instanceof Error ? err.message : err) })}\n`);
    process.exit(1);
  });
} else {
  main().catch((err) => {
    process.stderr.write(`${JSON.stringify({ level: 'error', msg: 'worker failed', error: String(err) })}\n`);
    process.exit(1);
  });
}

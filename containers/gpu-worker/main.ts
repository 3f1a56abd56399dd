/**
 * The GPU worker container's entry point (ECS service per GPU tier). Long-polls the tier's queue
 * with the same worker core as the Lambda, on tfjs-node-gpu (or onnxruntime when the tier says
 * `ort`). On SIGTERM (scale-in, deploys, spot drains) it stops polling, finishes the batch in hand,
 * makes prefetched messages visible again and exits 0.
 *
 * Weights published after the stack (the README's order) are waited for, never a reason to exit:
 * the task loads what is published, polls for the rest, and takes work once one of its tier's
 * models is loaded (pipeline/weights-watch.ts).
 *
 * On tfjs it refuses to start unless TensorFlow uses a GPU device: a silent CPU fallback would
 * drain the queue some 50× slower at GPU prices. `EFFITAG_ENGINE=ort` overrides the tier's engine
 * (the deploy rehearsal runs this entry point that way, on a machine without a GPU).
 */
import { messageOf } from '../../base/errors.ts';
import { checkGpu } from './check-gpu.ts';
import { assertGpuDevice, tf, useTfjsBackend } from '../../model/tfjs-backend.ts';
import { deployedWorker } from '../../pipeline/aws/worker-runtime.ts';
import { modelId } from '../../pipeline/models.ts';
import { workerConfig } from '../../pipeline/runtime-config.ts';
import { stopOnSignals } from '../../pipeline/shutdown.ts';

async function main(): Promise<void> {
  // ECS may stop a task while it starts (scaled back to zero while waiting for weights): a signal
  // that arrives before the worker exists is remembered, so the task still stops cleanly (exit 0).
  let stopRequested = false;
  const early = () => {
    stopRequested = true;
  };
  process.once('SIGTERM', early);
  process.once('SIGINT', early);
  const config = workerConfig();
  // The GPU image sets EFFITAG_TFJS_BACKEND=tensorflow-gpu; resolve it before anything is loaded.
  config.tfjsBackend ??= 'tensorflow-gpu';
  if (config.engine === 'tfjs') {
    const backend = await useTfjsBackend(config.tfjsBackend);
    if (backend.name === 'tensorflow-gpu') assertGpuDevice(tf.backend());
  }
  const { worker, models, weights, log } = await deployedWorker({
    component: 'gpu-worker',
    config,
    leased: true,
    // Weights published after the deploy (the README's order) are found by polling, and loaded before use.
    poll: true,
    onReady: (manifest, catalog) => catalog.load(modelId(manifest)).then(() => {}),
  });
  process.off('SIGTERM', early);
  process.off('SIGINT', early);
  // A signal stops the worker and the weights watch; whichever path main is on then ends, and
  // 'stopped' is logged once main is done (the process exits right after).
  stopOnSignals([worker, weights]);
  try {
    if (stopRequested) {
      await Promise.all([worker.stop(), weights.stop()]);
      return;
    }
    // Load every published model before taking work: the first batch should not wait for weights or
    // PTX JIT. A model that does not load is a real failure: the task exits.
    for (const m of weights.ready()) await models.load(m);
    // None of the tier's models published yet: wait without receiving (the router enqueues nothing for
    // this tier meanwhile, so the backlog scaling returns the service to zero). Never exit: a crash
    // loop fails the ECS deployment and rolls the stack back.
    if (!weights.ready().length && !(await weights.anyReady())) return;
    await worker.run();
    await weights.stop();
  } finally {
    await models.dispose();
    log.log('info', 'stopped');
  }
}

if (process.argv.includes('--check-gpu')) {
  // Acceptance check on a GPU instance (see the README's deploy guide): no AWS resources needed.
  const arg = (name: string) => process.argv.find((a) => a.startsWith(`--${name}=`))?.split('=')[1];
  checkGpu({ variant: arg('variant'), batch: arg('batch') ? Number(arg('batch')) : undefined }).then(
    (result) => {
      process.stdout.write(`${JSON.stringify(result)}\n`);
      process.exit(result.gpuDevice ? 0 : 1);
    },
    (err) => {
      process.stderr.write(`${JSON.stringify({ level: 'error', msg: 'GPU check failed', error: messageOf(err) })}\n`);
      process.exit(1);
    },
  );
} else {
  // Exit once the worker has stopped, whatever handle a library may still hold (a task that
  // lingers after SIGTERM is killed by ECS after stopTimeout, and counts as a failed stop).
  main().then(
    () => process.exit(0),
    (err) => {
      process.stderr.write(`${JSON.stringify({ level: 'error', msg: 'worker failed', error: messageOf(err) })}\n`);
      process.exit(1);
    },
  );
}

/**
 * `node worker.mjs --check-gpu`: the image's own acceptance check on a GPU instance, with no AWS
 * resources. Loads tfjs-node-gpu, refuses a CPU fallback, builds a variant with random weights and
 * times the first batch (PTX JIT on A10G/L4 without a warm CUDA cache, cuDNN autotuning) against the
 * steady state. Prints one JSON line; exits 0 only when TensorFlow ran on a GPU device.
 */
import { ENV } from '../../base/runtime-names.ts';
import { assertGpuDevice, tf, useTfjsBackend } from '../../model/tfjs-backend.ts';
import { planModel } from '../../model/plan.ts';
import { randomWeights } from '../../model/random-weights.ts';
import { assignWeights, buildTfjsModel } from '../../model/tfjs-model.ts';

export interface GpuCheck {
  backend: string;
  gpuDevice: boolean;
  variant: string;
  batch: number;
  /** Model build and weight upload. */
  buildMs: number;
  /** The first batch: kernel JIT and autotuning included. */
  firstBatchMs: number;
  /** Median of the following batches. */
  steadyBatchMs: number;
  imagesPerSecond: number;
  error?: string;
}

export async function checkGpu(options: { variant?: string; batch?: number; runs?: number; backend?: string } = {}): Promise<GpuCheck> {
  const variant = options.variant ?? 'b0';
  const batch = options.batch ?? 32;
  const resolved = await useTfjsBackend(options.backend ?? process.env[ENV.tfjsBackend] ?? 'tensorflow-gpu', () => {});
  let error: string | undefined;
  try {
    assertGpuDevice(tf.backend());
  } catch (err) {
    // On the GPU backend this is final; a backend forced for a dry run still gets timed.
    if (resolved.name === 'tensorflow-gpu') throw err;
    error = (err as Error).message;
  }
  const t = performance.now();
  const plan = planModel(variant);
  const built = buildTfjsModel(plan);
  assignWeights(built, randomWeights(plan));
  const buildMs = performance.now() - t;
  const input = tf.randomUniform([batch, plan.resolution, plan.resolution, 3], 0, 255);
  const once = async () => {
    const started = performance.now();
    const out = built.model.predict(input) as tf.Tensor;
    await out.data();
    out.dispose();
    return performance.now() - started;
  };
  const firstBatchMs = await once();
  const steady: number[] = [];
  for (let i = 0; i < (options.runs ?? 5); i++) steady.push(await once());
  steady.sort((a, b) => a - b);
  const steadyBatchMs = steady[Math.floor(steady.length / 2)];
  input.dispose();
  built.model.dispose();
  return {
    backend: resolved.name,
    gpuDevice: !error,
    variant,
    batch,
    buildMs: Math.round(buildMs),
    firstBatchMs: Math.round(firstBatchMs),
    steadyBatchMs: Math.round(steadyBatchMs * 10) / 10,
    imagesPerSecond: Math.round((batch / steadyBatchMs) * 1000 * 10) / 10,
    ...(error ? { error } : {}),
  };
}

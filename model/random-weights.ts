/**
 * Seeded random weights for a plan, scaled so activations stay in a sane range through any depth
 * (He-style fan-in scaling, BatchNorm statistics near identity, the ImageNet normalisation).
 * Used where real weights are unavailable: tests, benchmarks, and `effitag weights random`.
 */
import { planWeights, type ModelPlan } from './plan.ts';
import { IMAGENET_MEAN, IMAGENET_STD } from './spec.ts';

export function seededRandom(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Values for one named weight. `stdAsVariance` mimics the published V1 files' normalisation quirk. */
export function randomWeight(name: string, shape: readonly number[], rand: () => number, stdAsVariance = false): Float32Array {
  const size = shape.reduce((a, b) => a * b, 1);
  const out = new Float32Array(size);
  const uniform = (scale: number, centre = 0) => {
    for (let i = 0; i < size; i++) out[i] = centre + (rand() * 2 - 1) * scale;
  };
  if (name === 'normalization/mean:0') out.set(IMAGENET_MEAN);
  else if (name === 'normalization/variance:0') out.set(stdAsVariance ? IMAGENET_STD : IMAGENET_STD.map((s) => s * s));
  else if (name === 'normalization/count:0') out[0] = 0;
  else if (name.endsWith('/moving_variance:0')) uniform(0.2, 1);
  else if (name.endsWith('/moving_mean:0') || name.endsWith('/beta:0')) uniform(0.05);
  else if (name.endsWith('/gamma:0')) uniform(0.2, 1);
  else if (name.endsWith('/bias:0')) uniform(0.05);
  else {
    // Kernels: fan-in = everything but the output axis (depthwise: k·k).
    const fanIn = name.includes('depthwise_kernel') ? shape[0] * shape[1] : size / shape[shape.length - 1];
    uniform(Math.sqrt(3 / fanIn));
  }
  return out;
}

export function randomWeights(plan: ModelPlan, seed = 1, stdAsVariance = false): Map<string, Float32Array> {
  const rand = seededRandom(seed);
  return new Map(planWeights(plan).map((w) => [w.name, randomWeight(w.name, w.shape, rand, stdAsVariance)]));
}

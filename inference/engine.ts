/**
 * One engine interface for every caller (CLI, pipeline, benchmarks):
 * load(variant, weights) → classify(batch of decoded images) → top-k.
 */
import type { DecodedImage } from './image.ts';
import type { WeightsManifest } from '../model/weights.ts';

export interface Prediction {
  /** ImageNet (or model) class index. */
  index: number;
  label: string;
  probability: number;
}

/** One image's outputs from one inference. */
export interface ImageOutputs {
  probabilities: Float32Array;
  features: Float32Array;
}

export interface LoadedModel {
  /** Engine name and the concrete backend it runs on, e.g. `ort (cpu)`, `tfjs (wasm)`. */
  readonly description: string;
  readonly variant: string;
  /** Input resolution images must be decoded to. */
  readonly resolution: number;
  readonly manifest: WeightsManifest;
  /** Class probabilities for each image (softmax output), one Float32Array per image. */
  classify(images: readonly DecodedImage[]): Promise<Float32Array[]>;
  /**
   * The same inference, also returning each image's pooled features (the global average pool before
   * the classifier; 1,280 values for B0), unnormalized: image embeddings at no second inference.
   * Absent on engines (and test doubles) that cannot; callers then fall back to `classify`.
   */
  classifyWithFeatures?(images: readonly DecodedImage[]): Promise<ImageOutputs[]>;
  dispose(): Promise<void>;
}

export interface Engine {
  readonly name: EngineName;
  load(weightsDir: string, options?: { variant?: string }): Promise<LoadedModel>;
}

export type EngineName = 'ort' | 'tfjs';

/** The k most probable classes, sorted by probability (ties by index). */
export function topK(probabilities: Float32Array, k: number, labels: readonly string[]): Prediction[] {
  const n = Math.min(Math.max(1, Math.floor(k)), probabilities.length);
  const best: number[] = [];
  for (let i = 0; i < probabilities.length; i++) {
    const p = probabilities[i];
    if (best.length < n || p > probabilities[best[best.length - 1]]) {
      let j = best.length < n ? best.length : best.length - 1;
      if (best.length < n) best.push(i);
      while (j > 0 && probabilities[best[j - 1]] < p) {
        best[j] = best[j - 1];
        j--;
      }
      best[j] = i;
    }
  }
  return best.map((index) => ({ index, label: labels[index] ?? `class_${index}`, probability: probabilities[index] }));
}

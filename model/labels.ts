/** ImageNet-1k class labels (English), index = class index of the Keras/TF ImageNet models. */
// Data from the ImageNet class index as published with TensorFlow.js models (Apache-2.0).
// A static JSON import, so bundlers (esbuild for Lambda and the GPU image) carry it along.
import labels from './imagenet-labels.json' with { type: 'json' };

export const IMAGENET_LABELS: readonly string[] = labels;

/** Label list for a class count: ImageNet for 1000, otherwise `class_<i>`. */
export function labelsFor(classes: number): readonly string[] {
  if (classes === IMAGENET_LABELS.length) return IMAGENET_LABELS;
  return Array.from({ length: classes }, (_, i) => `class_${i}`);
}

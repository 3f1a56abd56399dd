/** ImageNet-1k class labels (English), index = class index of the Keras/TF ImageNet models. */
// Data from the ImageNet class index as published with TensorFlow.js models (Apache-2.0).
// A static JSON import, so bundlers (esbuild for Lambda and the GPU image) carry it along.
import labels from './imagenet-labels.json' with { type: 'json' };

export const IMAGENET_LABELS: readonly string[] = labels;

/**
 * Label list of a model: a custom model's own labels, ImageNet for 1000 classes, otherwise `class_<i>`.
 * Callers compare the result with IMAGENET_LABELS to know whether tags roll up through WordNet.
 */
export function labelsFor(manifest: { classes: number; custom?: { labels: readonly string[] } }): readonly string[] {
  if (manifest.custom) return manifest.custom.labels;
  if (manifest.classes === IMAGENET_LABELS.length) return IMAGENET_LABELS;
  return Array.from({ length: manifest.classes }, (_, i) => `class_${i}`);
}

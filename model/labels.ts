/** ImageNet-1k class labels (English), index = class index of the Keras/TF ImageNet models. */
import { createRequire } from 'node:module';

const require = createRequire(import.meta.url);
// Data from the ImageNet class index as published with TensorFlow.js models (Apache-2.0).
export const IMAGENET_LABELS: readonly string[] = require('./imagenet-labels.json');

/** Label list for a class count: ImageNet for 1000, otherwise `class_<i>`. */
export function labelsFor(classes: number): readonly string[] {
  if (classes === IMAGENET_LABELS.length) return IMAGENET_LABELS;
  return Array.from({ length: classes }, (_, i) => `class_${i}`);
}

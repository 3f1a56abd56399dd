/**
 * Training batches from in-memory masters, as tfjs tensors of raw pixels (0–255; every EfficientNet
 * normalises inside the model): random resized crop and flip, RandAugment, Mixup.
 *
 * RandAugment (Cubuk et al. 2020): each image gets N = 2 operations drawn at random, each at one
 * magnitude M on the paper's 0–30 scale. The operations here are the photometric ones plus the crop's
 * translation (rotation and shear need kernels the wasm backend lacks): brightness, contrast,
 * colour, solarize, posterize, autocontrast. Mixup (Zhang et al. 2018) blends each image and its
 * label with another of the batch, λ ~ Beta(α, α).
 */
import { tf } from '../model/tfjs-backend.ts';
import type { Sample } from './dataset.ts';

export interface AugmentOptions {
  /** Output side in pixels. */
  size: number;
  /** RandAugment magnitude, 0–30; 0 turns it off. */
  randAugment: number;
  /** Mixup α; 0 turns it off. */
  mixup: number;
  rand: () => number;
  /** The random resized crop's smallest share of the picture's area (default MIN_CROP_AREA). */
  minCropArea?: number;
}

/**
 * The random resized crop's default smallest share of the area. ImageNet recipes go down to 8 %, the
 * previous default here to 40 %: on a small set whose objects fill a third of the picture or less, such
 * a crop leaves under half of the object in 2 to 4 % of the crops (11 % of a square's area lost on
 * average; at 80 %: none, 2 %), and a network trained so stayed at 75 % training accuracy on unaugmented
 * images (underfitting, not overfitting). Measured with the other defaults: docs/training.md, The defaults.
 */
export const MIN_CROP_AREA = 0.8;

const RANDAUGMENT_OPS = 2;
const MAX_MAGNITUDE = 30;

type Op = (x: tf.Tensor3D, f: number, sign: number) => tf.Tensor3D;

/** Each op at fraction f ∈ [0, 1] of its strongest setting; `sign` flips the direction of the enhancing ones. */
const OPS: Record<string, Op> = {
  brightness: (x, f, s) => x.mul(1 + s * 0.9 * f),
  contrast: (x, f, s) => {
    const mean = x.mean([0, 1, 2]);
    return x
      .sub(mean)
      .mul(1 + s * 0.9 * f)
      .add(mean);
  },
  colour: (x, f, s) => {
    const grey = x.mean(2, true);
    return x
      .sub(grey)
      .mul(1 + s * 0.9 * f)
      .add(grey);
  },
  solarize: (x, f) => {
    const threshold = 256 - 256 * f;
    return tf.where(x.greaterEqual(threshold), tf.scalar(255).sub(x), x) as tf.Tensor3D;
  },
  posterize: (x, f) => {
    const step = 2 ** Math.round(4 * f);
    return x.div(step).floor().mul(step);
  },
  autocontrast: (x) => {
    const lo = x.min([0, 1], true);
    const hi = x.max([0, 1], true);
    return x.sub(lo).mul(tf.scalar(255).div(tf.maximum(hi.sub(lo), 1)));
  },
};
export const RANDAUGMENT_OP_NAMES = Object.keys(OPS);

/** Masters as one [n, s, s, 3] tensor (uint8 values as float). */
function stack(samples: readonly Sample[], masterSize: number): tf.Tensor4D {
  const data = new Float32Array(samples.length * masterSize * masterSize * 3);
  for (const [i, s] of samples.entries()) data.set(s.pixels, i * s.pixels.length);
  return tf.tensor4d(data, [samples.length, masterSize, masterSize, 3]);
}

/** The whole master at `size`: what validation and feature extraction without augmentation see. */
export function evalBatch(samples: readonly Sample[], masterSize: number, size: number): tf.Tensor4D {
  return tf.tidy(() => {
    const x = stack(samples, masterSize);
    return size === masterSize ? x : tf.image.resizeBilinear(x, [size, size], true);
  });
}

/** One-hot labels. */
export function oneHot(samples: readonly Sample[], classes: number): tf.Tensor2D {
  return tf.tidy(
    () =>
      tf
        .oneHot(
          tf.tensor1d(
            samples.map((s) => s.label),
            'int32',
          ),
          classes,
        )
        .toFloat() as tf.Tensor2D,
  );
}

/** Augmented images [n, size, size, 3] in 0–255: random resized crop, mirror, RandAugment (no Mixup). */
export function augmentImages(samples: readonly Sample[], masterSize: number, options: Omit<AugmentOptions, 'mixup'>): tf.Tensor4D {
  const { size, rand } = options;
  return tf.tidy(() => {
    const masters = stack(samples, masterSize);
    // Random resized crop: minCropArea to 100 % of the area, aspect 3:4 to 4:3, anywhere; half the images mirrored.
    const minArea = options.minCropArea ?? MIN_CROP_AREA;
    const boxes: number[][] = [];
    for (let i = 0; i < samples.length; i++) {
      const area = minArea + (1 - minArea) * rand();
      const aspect = Math.exp(Math.log(3 / 4) + rand() * Math.log(16 / 9));
      const h = Math.min(1, Math.sqrt(area / aspect));
      const w = Math.min(1, Math.sqrt(area * aspect));
      const y1 = rand() * (1 - h);
      const x1 = rand() * (1 - w);
      boxes.push(rand() < 0.5 ? [y1, x1, y1 + h, x1 + w] : [y1, x1 + w, y1 + h, x1]); // x2 < x1 mirrors
    }
    const indices = tf.tensor1d(
      samples.map((_, i) => i),
      'int32',
    );
    const x = tf.image.cropAndResize(masters, tf.tensor2d(boxes), indices, [size, size], 'bilinear');
    if (options.randAugment <= 0) return x;
    const f = Math.min(options.randAugment, MAX_MAGNITUDE) / MAX_MAGNITUDE;
    return tf.stack(
      (tf.unstack(x) as tf.Tensor3D[]).map((img) => {
        let y = img;
        for (let k = 0; k < RANDAUGMENT_OPS; k++) {
          const name = RANDAUGMENT_OP_NAMES[Math.floor(rand() * RANDAUGMENT_OP_NAMES.length)];
          y = OPS[name](y, f, rand() < 0.5 ? -1 : 1).clipByValue(0, 255) as tf.Tensor3D;
        }
        return y;
      }),
    ) as tf.Tensor4D;
  });
}

/** An augmented training batch: images [n, size, size, 3] in 0–255 and (soft, with Mixup) labels [n, classes]. */
export function trainBatch(
  samples: readonly Sample[],
  masterSize: number,
  classes: number,
  options: AugmentOptions,
): { x: tf.Tensor4D; y: tf.Tensor2D } {
  return tf.tidy(() => {
    let x = augmentImages(samples, masterSize, options);
    let y: tf.Tensor2D = oneHot(samples, classes);
    if (options.mixup > 0 && samples.length > 1) {
      const lambda = sampleBeta(options.mixup, options.rand);
      const partner = tf.tensor1d(
        samples.map((_, i) => samples.length - 1 - i),
        'int32',
      );
      x = x.mul(lambda).add(x.gather(partner).mul(1 - lambda));
      y = y.mul(lambda).add(y.gather(partner).mul(1 - lambda));
    }
    return { x, y };
  });
}

/** Beta(α, α) from two Gamma(α) draws (Marsaglia–Tsang, with the α < 1 boost). */
export function sampleBeta(alpha: number, rand: () => number): number {
  const a = sampleGamma(alpha, rand);
  const b = sampleGamma(alpha, rand);
  return a + b > 0 ? a / (a + b) : 0.5;
}

function sampleGamma(alpha: number, rand: () => number): number {
  if (alpha < 1) return sampleGamma(alpha + 1, rand) * rand() ** (1 / alpha);
  const d = alpha - 1 / 3;
  const c = 1 / Math.sqrt(9 * d);
  for (;;) {
    let x: number;
    let v: number;
    do {
      // Standard normal by Box–Muller.
      x = Math.sqrt(-2 * Math.log(1 - rand())) * Math.cos(2 * Math.PI * rand());
      v = 1 + c * x;
    } while (v <= 0);
    v = v * v * v;
    const u = rand();
    if (u < 1 - 0.0331 * x ** 4 || Math.log(u) < 0.5 * x * x + d * (1 - v + Math.log(v))) return d * v;
  }
}

/**
 * Set-ups the training tests share: a handful of noise samples and one fixed 32-px stage, for tests
 * of how a stage runs (stopping, learning rate, the frozen part) rather than of what it learns.
 */
import type { Sample } from '../../training/dataset.ts';
import { type Stage, stages } from '../../training/progressive.ts';

/** `count` samples of 40x40 RGB noise drawn from `rand` (a pixel a call, in order), labels 0, 1, 0, 1, … */
export function noiseSamples(count: number, rand: () => number): Sample[] {
  return Array.from({ length: count }, (_, i) => ({
    path: `${i}`,
    label: i % 2,
    pixels: new Uint8Array(40 * 40 * 3).map(() => rand() * 255),
  }));
}

/** One stage at 32 px, RandAugment at `randAugment`, no mixup and no dropout. */
export function stage32(randAugment = 0): Stage {
  const [stage] = stages(
    {
      size: { from: 32, to: 32 },
      randAugment: { from: randAugment, to: randAugment },
      mixup: { from: 0, to: 0 },
      dropout: { from: 0, to: 0 },
    },
    1,
  );
  return stage;
}

/**
 * EfficientNetV2's progressive learning (Tan & Le 2021, §4 and Table 6): training runs in stages;
 * image size grows from a minimum to the variant's resolution, and regularisation grows with it
 * (small images want weak regularisation, large ones strong). Each knob ramps linearly over the stages.
 *
 * The paper's ranges, by model size (Table 6):
 *
 *   | row | image size | RandAugment | Mixup α | dropout |
 *   |-----|------------|-------------|---------|---------|
 *   | S   | 128 → 300  | 5 → 15      | 0 → 0   | 0.1 → 0.3 |
 *   | M   | 128 → 380  | 5 → 20      | 0 → 0.2 | 0.1 → 0.4 |
 *   | L   | 128 → 380  | 5 → 25      | 0 → 0.4 | 0.1 → 0.5 |
 *
 * Scaled to a variant: its row by parameter count (under 30 M → S, under 80 M → M, else L: B0–B6 and
 * V2-S are S, B7 and V2-M are M, V2-L is L); sizes from 128/300 of its resolution (at least 32,
 * a multiple of 8) to its resolution. Every range can be overridden.
 */
import { variantInfo } from '../model/info.ts';

export interface Range {
  from: number;
  to: number;
}

export interface ProgressiveRanges {
  size: Range;
  randAugment: Range;
  mixup: Range;
  dropout: Range;
}

export interface Stage {
  index: number;
  size: number;
  randAugment: number;
  mixup: number;
  dropout: number;
}

const ROWS: Record<'S' | 'M' | 'L', Omit<ProgressiveRanges, 'size'>> = {
  S: { randAugment: { from: 5, to: 15 }, mixup: { from: 0, to: 0 }, dropout: { from: 0.1, to: 0.3 } },
  M: { randAugment: { from: 5, to: 20 }, mixup: { from: 0, to: 0.2 }, dropout: { from: 0.1, to: 0.4 } },
  L: { randAugment: { from: 5, to: 25 }, mixup: { from: 0, to: 0.4 }, dropout: { from: 0.1, to: 0.5 } },
};

export function paperRow(variant: string): 'S' | 'M' | 'L' {
  const params = variantInfo(variant).params;
  return params < 30e6 ? 'S' : params < 80e6 ? 'M' : 'L';
}

/** The paper's ranges scaled to a variant, with overrides. */
export function progressiveRanges(variant: string, overrides: Partial<ProgressiveRanges> = {}): ProgressiveRanges {
  const resolution = variantInfo(variant).resolution;
  const minSize = Math.max(32, Math.round((resolution * 128) / 300 / 8) * 8);
  return { size: { from: Math.min(minSize, resolution), to: resolution }, ...ROWS[paperRow(variant)], ...overrides };
}

/**
 * N stages ramping every range linearly. One stage runs at the top of each range. With progressive
 * learning off, every stage is the last one: full size, full regularisation (the baseline it is compared with).
 */
export function stages(ranges: ProgressiveRanges, count: number, progressive = true): Stage[] {
  if (!Number.isInteger(count) || count < 1) throw new Error(`--stages must be a whole number ≥ 1, got ${count}`);
  const at = (r: Range, t: number) => r.from + (r.to - r.from) * t;
  return Array.from({ length: count }, (_, i) => {
    const t = !progressive || count === 1 ? 1 : i / (count - 1);
    return {
      index: i,
      // Intermediate sizes on a multiple of 8; the last stage at the variant's own resolution.
      size: t === 1 ? ranges.size.to : Math.max(8, Math.round(at(ranges.size, t) / 8) * 8),
      randAugment: Math.round(at(ranges.randAugment, t) * 10) / 10,
      mixup: Math.round(at(ranges.mixup, t) * 1000) / 1000,
      dropout: Math.round(at(ranges.dropout, t) * 1000) / 1000,
    };
  });
}

/** `a:b` or a single number (a constant range), as the CLI takes them. */
export function parseRange(text: string, what: string): Range {
  const parts = text.split(':').map(Number);
  if (parts.length > 2 || parts.some((n) => !Number.isFinite(n) || n < 0)) throw new Error(`${what}: expected N or FROM:TO, got "${text}"`);
  return { from: parts[0], to: parts[1] ?? parts[0] };
}

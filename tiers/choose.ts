/**
 * Size-aware variant choice. Compound scaling gives every variant a native resolution, and an image
 * gains nothing from a network that looks at more pixels than it has. For an image W×H under a tier:
 *
 *   the largest allowed variant whose native resolution r satisfies r ≤ min(W, H) · (1 + tolerance);
 *   if none does, the smallest allowed variant.
 *
 * "Largest" orders by native resolution, then by multiply-adds (the bigger network among equals, e.g.
 * V2-L over V2-M at 480), then by name, so the choice is deterministic. The tolerance (default 10 %,
 * `resolutionTolerance`) lets a 280-px thumbnail still reach B3's 300 px: upsampling by under 10 %
 * costs little accuracy, and the larger network is the more accurate one.
 */
import { variantInfo } from '../model/info.ts';
import type { VariantArgs } from '../model/spec.ts';

export interface VariantChoice {
  variant: string;
  resolution: number;
  reason: string;
}

interface Candidate {
  variant: string;
  resolution: number;
  macs: number;
}

const candidateCache = new Map<string, Candidate>();
function candidate(variant: VariantArgs): Candidate {
  const key = typeof variant === 'string' ? variant : JSON.stringify(variant);
  let c = candidateCache.get(key);
  if (!c) {
    const info = variantInfo(variant);
    c = { variant: info.variant, resolution: info.resolution, macs: info.macs };
    candidateCache.set(key, c);
  }
  return c;
}

const larger = (a: Candidate, b: Candidate) => a.resolution - b.resolution || a.macs - b.macs || a.variant.localeCompare(b.variant);

/** `tier.variants`: a resolved tier's canonical names (or any variant form, for tooling). */
export function chooseVariant(tier: { variants: readonly VariantArgs[] }, width: number, height: number, tolerance = 0.1): VariantChoice {
  if (!(width > 0 && height > 0)) throw new Error(`image dimensions must be positive, got ${width}×${height}`);
  const candidates = tier.variants.map(candidate).sort(larger);
  const shorter = Math.min(width, height);
  const limit = shorter * (1 + tolerance);
  const fitting = candidates.filter((c) => c.resolution <= limit);
  if (fitting.length > 0) {
    const best = fitting[fitting.length - 1];
    const skipped = candidates.filter((c) => larger(c, best) > 0);
    return {
      variant: best.variant,
      resolution: best.resolution,
      reason:
        `shorter side ${shorter}px (+${Math.round(tolerance * 100)}% tolerance = ${Math.floor(limit)}px) fits ${best.variant}'s ${best.resolution}px` +
        (skipped.length
          ? `; ${skipped.map((c) => `${c.variant} (${c.resolution}px)`).join(', ')} would upsample`
          : '; it is the largest allowed'),
    };
  }
  const smallest = candidates[0];
  return {
    variant: smallest.variant,
    resolution: smallest.resolution,
    reason: `shorter side ${shorter}px is below every allowed variant's resolution; using the smallest, ${smallest.variant} (${smallest.resolution}px)`,
  };
}

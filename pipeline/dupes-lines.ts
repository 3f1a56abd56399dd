/**
 * The lines that say which thresholds a duplicates report used, and where each came from: the hash
 * distance of the exact groups (pipeline/dupes.ts, HashThreshold) and each embedding space's near
 * threshold (pipeline/near-calibration.ts, NearThreshold). `effitag dupes` prints them, the gallery's
 * Duplicates view shows them: one wording, so the two never tell a user different things about one
 * bucket. Each names how its reader sets a threshold by hand (the CLI's flags, the gallery's URL
 * parameters).
 */
import { DEFAULT_MAX_DISTANCE, type HashThreshold } from './dupes.ts';
import { modelOfSpace } from './index-writes.ts';
import type { NearThreshold } from './near-calibration.ts';

/** How the reader of a line sets a threshold by hand. */
export interface ThresholdOptions {
  /** The hash distance's option ("--max-distance"). */
  maxDistance: string;
  /** The near threshold's option ("--min-score"). */
  minScore: string;
  /** An option given a value ("--min-score S"). */
  set(option: string, value: string | number): string;
}

/** `effitag dupes`' flags. */
export const DUPES_FLAGS: ThresholdOptions = {
  maxDistance: '--max-distance',
  minScore: '--min-score',
  set: (option, value) => `${option} ${value}`,
};

const day = (iso: string) => iso.slice(0, 10);
const thousands = (n: number) => n.toLocaleString('en-US');

/** The hash distance the exact groups used, and why: one line (`hashed`: the objects with a hash). */
export function describeHashThreshold(t: HashThreshold, hashed: number, o: ThresholdOptions = DUPES_FLAGS): string {
  const chance = `${t.expectedChancePairs < 0.01 ? 'under 0.01' : t.expectedChancePairs.toLocaleString('en-US', { maximumFractionDigits: 2 })} pair(s) of unrelated images expected by chance among ${thousands(hashed)} hashes`;
  if (t.source === 'given')
    return `exact copies: within ${t.maxDistance} bits (${o.maxDistance}): ${chance}${t.expectedChancePairs > 1 ? '; some groups may join unrelated images' : ''}`;
  return t.unscaledChancePairs === undefined
    ? `exact copies: within ${t.maxDistance} bits: ${chance}`
    : `exact copies: within ${t.maxDistance} bits, not ${DEFAULT_MAX_DISTANCE}: ${chance} (${DEFAULT_MAX_DISTANCE} bits would expect ${t.unscaledChancePairs.toLocaleString('en-US', { maximumFractionDigits: 1 })}; ${o.set(o.maxDistance, DEFAULT_MAX_DISTANCE)} finds more edited copies, and that many unrelated pairs with them)`;
}

/** One line per space: which near threshold was used there, and where it came from. */
export function describeThreshold(t: NearThreshold, o: ThresholdOptions = DUPES_FLAGS): string {
  switch (t.source) {
    case 'given':
      return `near threshold for ${t.space}: ${t.minScore} (${o.minScore})`;
    case 'calibrated':
      return `near threshold for ${t.space}: ${t.minScore}, calibrated ${day(t.at)} on ${t.distinct} distinct images (recall ${t.recall.toFixed(3)} of their copies at precision 1.000)`;
    case 'inseparable':
      return `near threshold for ${t.space}: none, no near groups: its calibration (${day(t.at)}) found that these weights cannot tell copies from distinct images (${o.set(o.minScore, 'S')} forces one)`;
    case 'uncalibrated':
      return `near threshold for ${t.space}: ${t.minScore}, UNCALIBRATED (a guess, not measured for these weights): run effitag dupes calibrate --images DIR --model ${modelOfSpace(t.space)}, or pass ${o.minScore}`;
  }
}

/**
 * Fixtures the duplicate tests share: random DCT-like hashes, unit vectors and near-calibration
 * records as `effitag dupes calibrate` writes them.
 */
import { CALIBRATION_FORMAT, type NearCalibration } from '../../pipeline/near-calibration.ts';

/** A random DCT-like hash: exactly 32 of its 64 bits set, as the median split makes them. */
export function balancedHash(rand: () => number): string {
  const bits: number[] = Array.from({ length: 64 }, (_, i) => (i < 32 ? 1 : 0));
  for (let i = 63; i > 0; i--) {
    const j = Math.floor(rand() * (i + 1));
    [bits[i], bits[j]] = [bits[j], bits[i]];
  }
  let hex = '';
  for (let i = 0; i < 64; i += 4) hex += ((bits[i] << 3) | (bits[i + 1] << 2) | (bits[i + 2] << 1) | bits[i + 3]).toString(16);
  return hex;
}

/** The vector scaled to unit length, as the worker stores embeddings. */
export const unit = (...xs: number[]): Float32Array => {
  const n = Math.hypot(...xs);
  return Float32Array.from(xs.map((x) => x / n));
};

/** A calibration record (the fields dupes reads; the rest as `dupes calibrate` writes them). */
export const nearRecord = (o: Partial<NearCalibration> & { space: string }): NearCalibration => ({
  format: CALIBRATION_FORMAT,
  at: '2026-12-07T07:00:00.000Z',
  separable: true,
  minScore: 0.99,
  rule: 'test',
  sample: { distinct: 16, images: 160, copyKinds: [], dataSha256: 'x', skipped: 0 },
  scores: {
    highestDistinct: 0.98,
    lowestCopy: 0.5,
    lowestCopyAbove: 0.995,
    precision: 1,
    recall: 0.8,
    copyPairs: 720,
    distinctPairs: 12000,
    auc: 0.99,
  },
  ...o,
});

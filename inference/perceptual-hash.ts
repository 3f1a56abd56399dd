/**
 * A 64-bit perceptual hash of an image, for exact and near-exact copies whatever the model
 * (`effitag dupes`): two hashes a few bits apart are the same picture resized, recompressed,
 * lightly cropped, brightened or watermarked.
 *
 * It is computed from the pixels the pipeline already decoded for the model (inference/image.ts:
 * EXIF-oriented sRGB, the centre square at the model's resolution), so tagging an image decodes it
 * once, not twice. The method is the DCT hash (pHash): the luma averaged down to 32×32, its 2-D
 * DCT-II, and one bit per coefficient of the 8×8 lowest frequencies (DC left out), set when the
 * coefficient is above their median. It was chosen over a difference hash (dHash) on the same
 * pixels and over the `sharp-phash` package by measurement (README, "Duplicates";
 * bench/reference/hashes.json): at each one's best threshold it had the best precision and recall
 * on near-duplicates of real photographs, and it costs no second decode (`sharp-phash` decodes the
 * file again with sharp, and its plain O(N⁴) DCT costs milliseconds more per image).
 *
 * A hash is 16 lowercase hex digits (what the index record and the `effitag-phash` metadata hold).
 */

/** Side of the luma thumbnail the DCT runs on. */
const SAMPLE = 32;
/** Side of the block of low frequencies kept: 8×8 = 64 bits. */
const LOW = 8;

export const HASH_HEX_DIGITS = 16;
const HASH_RE = /^[0-9a-f]{16}$/;

export const isPerceptualHash = (s: unknown): s is string => typeof s === 'string' && HASH_RE.test(s);

/** An RGB(A) or grey raster, row-major, `channels` bytes per pixel. */
export interface Raster {
  pixels: Uint8Array;
  width: number;
  height: number;
  /** 3 (RGB, what decodeImage gives), 4 (RGBA) or 1 (grey). Default 3. */
  channels?: number;
}

/**
 * The raster's luma (BT.601), box-averaged down to side×side: each output pixel is the mean of the
 * source pixels its cell covers (fractional edges weighted), so any model resolution gives the same
 * thumbnail up to rounding.
 */
export function lumaThumbnail(r: Raster, side = SAMPLE): Float64Array {
  const { pixels, width, height } = r;
  const channels = r.channels ?? 3;
  if (width < 1 || height < 1 || pixels.length < width * height * channels)
    throw new Error(`raster of ${pixels.length} bytes is not ${width}×${height}×${channels}`);
  // Column sums per output column for each source row, then rows folded into output rows.
  const colW = colWeights(width, side);
  const rowW = colWeights(height, side);
  const out = new Float64Array(side * side);
  const rowAcc = new Float64Array(side);
  for (let y = 0; y < height; y++) {
    rowAcc.fill(0);
    const base = y * width * channels;
    for (let x = 0; x < width; x++) {
      const i = base + x * channels;
      const l = channels >= 3 ? 0.299 * pixels[i] + 0.587 * pixels[i + 1] + 0.114 * pixels[i + 2] : pixels[i];
      for (const [ox, w] of colW[x]) rowAcc[ox] += l * w;
    }
    for (const [oy, w] of rowW[y]) for (let ox = 0; ox < side; ox++) out[oy * side + ox] += rowAcc[ox] * w;
  }
  const area = (width / side) * (height / side);
  for (let i = 0; i < out.length; i++) out[i] /= area;
  return out;
}

/** For each source index, the output cells it falls in and its share of each (a box filter's weights). */
function colWeights(n: number, side: number): [number, number][][] {
  const scale = side / n;
  return Array.from({ length: n }, (_, x) => {
    const a = x * scale,
      b = (x + 1) * scale;
    const cells: [number, number][] = [];
    for (let o = Math.floor(a); o < Math.min(side, Math.ceil(b)); o++) {
      const w = (Math.min(b, o + 1) - Math.max(a, o)) / scale;
      if (w > 0) cells.push([o, w]);
    }
    return cells;
  });
}

/** cos((2i+1)uπ / 2N) for the DCT-II, N = SAMPLE; only the LOW+1 lowest frequencies are needed. */
const COS: Float64Array[] = Array.from({ length: LOW + 1 }, (_, u) =>
  Float64Array.from({ length: SAMPLE }, (_, i) => Math.cos(((2 * i + 1) * u * Math.PI) / (2 * SAMPLE))),
);

/** The DCT hash (pHash) of a 32×32 luma thumbnail: 16 hex digits. */
export function dctHashOfThumbnail(thumb: Float64Array): string {
  if (thumb.length !== SAMPLE * SAMPLE) throw new Error(`thumbnail must be ${SAMPLE}×${SAMPLE}`);
  // Separable DCT-II, rows then columns, frequencies 1..LOW only (DC carries brightness, not structure).
  const rows = new Float64Array(SAMPLE * LOW); // [y][v]
  for (let y = 0; y < SAMPLE; y++)
    for (let v = 1; v <= LOW; v++) {
      let s = 0;
      for (let x = 0; x < SAMPLE; x++) s += thumb[y * SAMPLE + x] * COS[v][x];
      rows[y * LOW + v - 1] = s;
    }
  const coeffs = new Float64Array(LOW * LOW); // [u][v]
  for (let u = 1; u <= LOW; u++)
    for (let v = 0; v < LOW; v++) {
      let s = 0;
      for (let y = 0; y < SAMPLE; y++) s += rows[y * LOW + v] * COS[u][y];
      coeffs[(u - 1) * LOW + v] = s;
    }
  const median = medianOf(coeffs);
  return bitsToHex(coeffs.map((c) => (c > median ? 1 : 0)));
}

/** The difference hash (dHash) of a raster: 9×8 luma, one bit per horizontal gradient. Kept for the measured comparison. */
export function differenceHash(r: Raster): string {
  const wide = lumaThumbnail(r, 9 * 8); // 72×72, then folded to 9×8 cells
  const cells = new Float64Array(9 * 8);
  for (let y = 0; y < 72; y++) for (let x = 0; x < 72; x++) cells[Math.floor(y / 9) * 9 + Math.floor(x / 8)] += wide[y * 72 + x];
  const bits = new Float64Array(64);
  for (let y = 0; y < 8; y++) for (let x = 0; x < 8; x++) bits[y * 8 + x] = cells[y * 9 + x + 1] > cells[y * 9 + x] ? 1 : 0;
  return bitsToHex(bits);
}

/** The perceptual hash of a decoded image (inference/image.ts DecodedImage: `size`×`size` RGB). */
export function perceptualHash(image: { pixels: Uint8Array; size: number }): string {
  return dctHashOfThumbnail(lumaThumbnail({ pixels: image.pixels, width: image.size, height: image.size, channels: 3 }));
}

/** A hash as its two 32-bit halves (high, low), for comparing many pairs without parsing each time. */
export function hashHalves(hash: string): [number, number] {
  if (!isPerceptualHash(hash)) throw new Error(`not a perceptual hash: ${hash}`);
  return [Number.parseInt(hash.slice(0, 8), 16), Number.parseInt(hash.slice(8), 16)];
}

/** Bits that differ between two hashes (0–64). */
export function hammingDistance(a: string, b: string): number {
  if (!isPerceptualHash(a) || !isPerceptualHash(b)) throw new Error(`not a perceptual hash: ${isPerceptualHash(a) ? b : a}`);
  return (
    popcount(Number.parseInt(a.slice(0, 8), 16) ^ Number.parseInt(b.slice(0, 8), 16)) +
    popcount(Number.parseInt(a.slice(8), 16) ^ Number.parseInt(b.slice(8), 16))
  );
}

/** Set bits of a 32-bit integer. */
export function popcount(n: number): number {
  let v = n >>> 0;
  v -= (v >>> 1) & 0x55555555;
  v = (v & 0x33333333) + ((v >>> 2) & 0x33333333);
  return (((v + (v >>> 4)) & 0x0f0f0f0f) * 0x01010101) >>> 24;
}

function medianOf(values: Float64Array): number {
  const s = Float64Array.from(values).sort();
  return (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
}

function bitsToHex(bits: ArrayLike<number>): string {
  let hex = '';
  for (let i = 0; i < 64; i += 4) hex += ((bits[i] << 3) | (bits[i + 1] << 2) | (bits[i + 2] << 1) | bits[i + 3]).toString(16);
  return hex;
}

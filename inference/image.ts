/**
 * Image decoding for inference, with sharp (libvips): JPEG, PNG, WebP, GIF (first frame), TIFF, AVIF.
 *
 * Resize policy (documented in the README): apply EXIF orientation; convert grayscale, CMYK and
 * 16-bit to 8-bit sRGB; flatten alpha onto white; scale the shorter side to the model resolution
 * with a Lanczos-3 filter and centre-crop the longer side (sharp `fit: 'cover'`). An image already at
 * the model's resolution is passed through unresampled.
 */
import { messageOf } from '../base/errors.ts';
import sharp, { type Metadata, type Sharp } from 'sharp';
import { decodeHeif } from './heif.ts';
import { sniffFormat } from './image-format.ts';

export { sniffFormat };

export interface DecodedImage {
  /** HWC uint8 RGB pixels at `size`×`size`. */
  pixels: Uint8Array;
  size: number;
  /** Source dimensions after EXIF orientation. */
  sourceWidth: number;
  sourceHeight: number;
  format: string;
  resampled: boolean;
}

export interface DecodeLimits {
  /** Refuse images with more pixels than this (decompression bombs). Default 100 MP. */
  maxPixels?: number;
  /** Refuse inputs larger than this many bytes. Default 64 MiB. */
  maxBytes?: number;
}

export const DEFAULT_LIMITS: Required<DecodeLimits> = { maxPixels: 100_000_000, maxBytes: 64 * 1024 * 1024 };

export type ImageErrorReason = 'empty' | 'too-large' | 'too-many-pixels' | 'unsupported-format' | 'undecodable';

/** A permanent problem with an input image: retrying will not help. */
export class ImageError extends Error {
  constructor(
    readonly reason: ImageErrorReason,
    message: string,
  ) {
    super(message);
    this.name = 'ImageError';
  }
}

/** Decode and resize one image to `size`×`size` RGB. Throws ImageError for bad input. */
export async function decodeImage(input: Uint8Array, size: number, limits: DecodeLimits = {}): Promise<DecodedImage> {
  const { maxPixels, maxBytes } = { ...DEFAULT_LIMITS, ...limits };
  if (input.length === 0) throw new ImageError('empty', 'empty file (0 bytes)');
  if (input.length > maxBytes) throw new ImageError('too-large', `file is ${input.length} bytes, over the ${maxBytes}-byte limit`);
  const format = sniffFormat(input);
  if (!format)
    throw new ImageError('unsupported-format', 'not a supported image (JPEG, PNG, WebP, GIF, TIFF, AVIF, HEIC) by its leading bytes');

  let image: Sharp;
  let meta: Metadata;
  try {
    // limitInputPixels makes libvips refuse bombs before allocating; failOn 'error' rejects truncated data.
    image = sharp(input, { limitInputPixels: maxPixels, failOn: 'error', pages: 1 }).timeout({ seconds: DECODE_TIMEOUT_SECONDS });
    meta = await image.metadata();
  } catch (err) {
    throw classifySharpError(err);
  }
  if (format === 'heif' && meta.compression === 'hevc') ({ image, meta } = await decodeHevc(input, maxPixels));
  const w = meta.width ?? 0,
    h = meta.height ?? 0;
  if (w * h > maxPixels) throw new ImageError('too-many-pixels', `${w}×${h} = ${w * h} pixels, over the ${maxPixels}-pixel limit`);
  const swap = (meta.orientation ?? 1) >= 5;
  const sourceWidth = swap ? h : w,
    sourceHeight = swap ? w : h;

  const alreadySized = sourceWidth === size && sourceHeight === size && (meta.orientation ?? 1) === 1;
  let pipeline = image.rotate(); // EXIF orientation
  if (meta.hasAlpha) pipeline = pipeline.flatten({ background: { r: 255, g: 255, b: 255 } });
  pipeline = pipeline.toColourspace('srgb');
  if (!alreadySized) pipeline = pipeline.resize(size, size, { fit: 'cover', position: 'centre', kernel: 'lanczos3' });
  try {
    const { data, info } = await pipeline.removeAlpha().raw({ depth: 'uchar' }).toBuffer({ resolveWithObject: true });
    if (info.width !== size || info.height !== size || info.channels !== 3) {
      throw new ImageError('undecodable', `decoder produced ${info.width}×${info.height}×${info.channels}, expected ${size}×${size}×3`);
    }
    return {
      pixels: new Uint8Array(data.buffer, data.byteOffset, data.byteLength),
      size,
      sourceWidth,
      sourceHeight,
      format,
      resampled: !alreadySized,
    };
  } catch (err) {
    throw classifySharpError(err);
  }
}

/** libvips gives up on one image after this long (a pathological file, not a large photo). */
const DECODE_TIMEOUT_SECONDS = 30;

/** HEVC-coded HEIF (iPhone photos): decoded by libheif (inference/heif.ts), oriented, handed back to sharp. */
async function decodeHevc(input: Uint8Array, maxPixels: number): Promise<{ image: Sharp; meta: Metadata }> {
  let px: Awaited<ReturnType<typeof decodeHeif>>;
  try {
    px = await decodeHeif(input, maxPixels);
  } catch (err) {
    if ((err as { tooManyPixels?: boolean }).tooManyPixels) throw new ImageError('too-many-pixels', (err as Error).message);
    throw new ImageError('undecodable', `cannot decode HEIC: ${messageOf(err)}`);
  }
  const raw = { width: px.width, height: px.height, channels: 4 as const };
  let oriented = sharp(px.rgba, { raw });
  // EXIF orientations 2–8 as a mirror, then a clockwise rotation: sharp mirrors before it rotates,
  // whatever order the calls are made in (5, the transpose, is flop then 270°; 7 is flop then 90°).
  const ops: Record<number, [number, 'flop' | 'flip' | undefined]> = {
    2: [0, 'flop'],
    3: [180, undefined],
    4: [0, 'flip'],
    5: [270, 'flop'],
    6: [90, undefined],
    7: [90, 'flop'],
    8: [270, undefined],
  };
  const [angle, mirror] = ops[px.orientation] ?? [0, undefined];
  if (angle || mirror) {
    if (angle) oriented = oriented.rotate(angle);
    if (mirror === 'flop') oriented = oriented.flop();
    if (mirror === 'flip') oriented = oriented.flip();
    const { data, info } = await oriented.raw().toBuffer({ resolveWithObject: true });
    oriented = sharp(data, { raw: { width: info.width, height: info.height, channels: 4 } });
  }
  const meta = await oriented.metadata();
  return { image: oriented, meta: { ...meta, format: 'heif', orientation: 1 } };
}

function classifySharpError(err: unknown): ImageError {
  if (err instanceof ImageError) return err;
  const message = messageOf(err);
  if (/pixel limit/i.test(message)) return new ImageError('too-many-pixels', `image exceeds the pixel limit (${message})`);
  if (/unsupported image format/i.test(message)) return new ImageError('unsupported-format', message);
  if (/timeout/i.test(message)) return new ImageError('undecodable', `decoding took over ${DECODE_TIMEOUT_SECONDS} s: ${message}`);
  return new ImageError('undecodable', `cannot decode image: ${message}`);
}

/**
 * Pack decoded images into one NCHW float32 batch of normalised values (x·scale[c] + shift[c]), the
 * input of the engine's ONNX export (model/onnx/cache.ts ensureOnnx with layout 'nchw' gives the
 * factors): the bytes are converted to floats here anyway, so the layout change and the
 * normalisation cost nothing, where they were three passes over the batch in the graph.
 */
export function toNchwBatch(
  images: readonly DecodedImage[],
  scale: readonly number[] = [1, 1, 1],
  shift: readonly number[] = [0, 0, 0],
): Float32Array {
  if (images.length === 0) return new Float32Array(0);
  const size = images[0].size;
  const plane = size * size;
  const out = new Float32Array(images.length * 3 * plane);
  const [sr, sg, sb] = scale,
    [hr, hg, hb] = shift;
  images.forEach((img, i) => {
    if (img.size !== size) throw new Error(`mixed image sizes in one batch (${img.size} vs ${size})`);
    const px = img.pixels;
    const r = i * 3 * plane,
      g = r + plane,
      b = g + plane;
    for (let p = 0, q = 0; p < plane; p++, q += 3) {
      out[r + p] = px[q] * sr + hr;
      out[g + p] = px[q + 1] * sg + hg;
      out[b + p] = px[q + 2] * sb + hb;
    }
  });
  return out;
}

/** Pack decoded images into one NHWC float32 batch of raw [0,255] values (the models normalise inside). */
export function toBatch(images: readonly DecodedImage[]): Float32Array {
  if (images.length === 0) return new Float32Array(0);
  const size = images[0].size;
  const stride = size * size * 3;
  const out = new Float32Array(images.length * stride);
  images.forEach((img, i) => {
    if (img.size !== size) throw new Error(`mixed image sizes in one batch (${img.size} vs ${size})`);
    out.set(img.pixels, i * stride);
  });
  return out;
}

/**
 * Image decoding for inference, with sharp (libvips): JPEG, PNG, WebP, GIF (first frame), TIFF, AVIF.
 *
 * Resize policy (documented in the README): apply EXIF orientation; convert grayscale, CMYK and
 * 16-bit to 8-bit sRGB; flatten alpha onto white; scale the shorter side to the model resolution
 * with a Lanczos-3 filter and centre-crop the longer side (sharp `fit: 'cover'`). An image already at
 * the model's resolution is passed through unresampled.
 */
import sharp, { type Metadata, type Sharp } from 'sharp';
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
  constructor(readonly reason: ImageErrorReason, message: string) {
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
  if (!format) throw new ImageError('unsupported-format', 'not a supported image (JPEG, PNG, WebP, GIF, TIFF, AVIF) by its leading bytes');

  let image: Sharp;
  let meta: Metadata;
  try {
    // limitInputPixels makes libvips refuse bombs before allocating; failOn 'error' rejects truncated data.
    image = sharp(input, { limitInputPixels: maxPixels, failOn: 'error', pages: 1 });
    meta = await image.metadata();
  } catch (err) {
    throw classifySharpError(err);
  }
  const w = meta.width ?? 0, h = meta.height ?? 0;
  if (w * h > maxPixels) throw new ImageError('too-many-pixels', `${w}×${h} = ${w * h} pixels, over the ${maxPixels}-pixel limit`);
  const swap = (meta.orientation ?? 1) >= 5;
  const sourceWidth = swap ? h : w, sourceHeight = swap ? w : h;

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
      pixels: new Uint8Array(data.buffer, data.byteOffset, data.byteLength), size, sourceWidth, sourceHeight, format,
      resampled: !alreadySized,
    };
  } catch (err) {
    throw classifySharpError(err);
  }
}

function classifySharpError(err: unknown): ImageError {
  if (err instanceof ImageError) return err;
  const message = err instanceof Error ? err.message : String(err);
  if (/pixel limit/i.test(message)) return new ImageError('too-many-pixels', `image exceeds the pixel limit (${message})`);
  if (/unsupported image format/i.test(message)) return new ImageError('unsupported-format', message);
  return new ImageError('undecodable', `cannot decode image: ${message}`);
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

/**
 * HEIC/HEIF photos (iPhones save HEIC by default). sharp's prebuilt libvips reads the HEIF container
 * but has no HEVC decoder, so HEVC-coded images are decoded by libheif compiled to WebAssembly
 * (heic-decode over libheif-js) into RGBA, which sharp then resizes like any other image.
 *
 * Orientation: libheif applies the container's own transforms (irot, imir), as the HEIF standard
 * asks, and iPhones write them. Some encoders instead only copy the source's EXIF orientation (heif-enc
 * does): when the file has no such transform, its EXIF orientation is applied (read by exifr).
 * Limits: the pixel count is read from the container before anything is decoded, so a bomb is refused
 * without allocating its pixels; decoding time is bounded by that pixel limit.
 */
import exifr from 'exifr';
import decodeHeic from 'heic-decode';

export interface HeifPixels {
  rgba: Uint8Array;
  width: number;
  height: number;
  /** EXIF orientation still to apply (1: none): set only when the container had no transform of its own. */
  orientation: number;
}

/** Does the container carry a rotation or mirror property (`irot`/`imir` boxes, 9 bytes each)? */
function hasContainerTransform(bytes: Uint8Array): boolean {
  const head = Buffer.from(bytes.buffer, bytes.byteOffset, Math.min(bytes.length, 1 << 16));
  for (const box of ['irot', 'imir']) {
    for (let i = head.indexOf(box); i >= 4; i = head.indexOf(box, i + 1)) {
      if (head.readUInt32BE(i - 4) === 9) return true;
    }
  }
  return false;
}

/**
 * The EXIF orientation of a HEIF file: its Exif item holds a TIFF structure, found by its byte-order
 * mark and parsed by exifr. The first candidate that parses wins.
 */
async function exifOrientation(bytes: Uint8Array): Promise<number> {
  const buf = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.length);
  const whole = await exifr.orientation(buf).catch(() => undefined);
  if (whole) return whole;
  for (const mark of [Buffer.from('II*\0', 'latin1'), Buffer.from('MM\0*', 'latin1')]) {
    for (let i = buf.indexOf(mark), tries = 0; i >= 0 && tries < 3; i = buf.indexOf(mark, i + 1), tries++) {
      const o = await exifr.orientation(buf.subarray(i)).catch(() => undefined);
      if (o) return o;
    }
  }
  return 1;
}

/** Decode the primary image, refusing more than `maxPixels` before decoding. */
export async function decodeHeif(bytes: Uint8Array, maxPixels: number): Promise<HeifPixels> {
  const images = await decodeHeic.all({ buffer: bytes });
  const first = images[0];
  if (!first) throw new Error('no image in the HEIF file');
  if (first.width * first.height > maxPixels) {
    throw Object.assign(
      new Error(`${first.width}×${first.height} = ${first.width * first.height} pixels, over the ${maxPixels}-pixel limit`),
      { tooManyPixels: true },
    );
  }
  const { width, height, data } = await first.decode();
  return {
    rgba: new Uint8Array(data.buffer, data.byteOffset, data.byteLength),
    width,
    height,
    orientation: hasContainerTransform(bytes) ? 1 : await exifOrientation(bytes),
  };
}

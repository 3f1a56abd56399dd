/**
 * Decompression bombs in other formats than PNG (see png-bomb.ts), made by rewriting the dimensions
 * a small valid file declares in its header: a decoder that trusts them would allocate gigabytes.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';

export const HEIC_FIXTURES = join(import.meta.dirname, '..', 'fixtures', 'heic');

/** A HEIC whose `ispe` (image spatial extents) property claims width×height. */
export function heicBomb(width = 30000, height = 30000): Buffer {
  const b = Buffer.from(readFileSync(join(HEIC_FIXTURES, 'photo.heic')));
  // ispe: size(4) 'ispe' version/flags(4) width(4) height(4)
  for (let i = b.indexOf('ispe'); i >= 0; i = b.indexOf('ispe', i + 1)) {
    b.writeUInt32BE(width, i + 8);
    b.writeUInt32BE(height, i + 12);
  }
  return b;
}

/** A JPEG whose start-of-frame claims width×height (at most 65535 each). */
export function jpegBomb(jpeg: Buffer, width = 60000, height = 60000): Buffer {
  const b = Buffer.from(jpeg);
  for (let i = 2; i < b.length - 9; ) {
    if (b[i] !== 0xff) throw new Error('not a JPEG marker');
    const marker = b[i + 1];
    const length = b.readUInt16BE(i + 2);
    if (marker >= 0xc0 && marker <= 0xc2) {
      b.writeUInt16BE(height, i + 5);
      b.writeUInt16BE(width, i + 7);
      return b;
    }
    i += 2 + length;
  }
  throw new Error('no start-of-frame marker');
}

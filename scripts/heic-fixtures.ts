/**
 * Makes the HEIC test fixtures in test/fixtures/heic/ with a real HEVC encoder: Debian's
 * `heif-enc` (package libheif-examples). sharp's prebuilt binaries cannot write HEVC, and no npm
 * package encodes it, so the files are committed; this script says how they were made.
 *   apt-get install libheif-examples && npx tsx scripts/heic-fixtures.ts
 * (Made with Debian 12's heif-enc, libheif 1.15.)
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import sharp from 'sharp';
import { gradientImage } from '../test/support/fixtures.ts';

const out = join(import.meta.dirname, '..', 'test', 'fixtures', 'heic');
const work = mkdtempSync(join(tmpdir(), 'heic-'));

// 64×32, left half red and right half blue, stored unrotated with EXIF orientation 6 (rotate 90°
// clockwise to view): upright it is 32×64, red on top.
const raw = Buffer.alloc(64 * 32 * 3);
for (let y = 0; y < 32; y++) for (let x = 0; x < 64; x++) raw[(y * 64 + x) * 3 + (x < 32 ? 0 : 2)] = 255;
await sharp(raw, { raw: { width: 64, height: 32, channels: 3 } })
  .jpeg({ quality: 95 })
  .withMetadata({ orientation: 6 })
  .toFile(join(work, 'orientation-6.jpg'));
execFileSync('heif-enc', ['-q', '90', '-o', join(out, 'orientation-6.heic'), join(work, 'orientation-6.jpg')]);

// Every EXIF orientation, 1 to 8: a 64×32 image of four quadrants (red, green / blue, yellow, top row
// first) stored unrotated with that orientation, so each rotation and mirror gives another layout.
// heif-enc copies the EXIF and writes no irot/imir transform: the decoder must apply the EXIF.
export const QUADRANTS = [
  [255, 0, 0],
  [0, 255, 0],
  [0, 0, 255],
  [255, 255, 0],
] as const;
const quads = Buffer.alloc(64 * 32 * 3);
for (let y = 0; y < 32; y++) for (let x = 0; x < 64; x++) quads.set(QUADRANTS[(y < 16 ? 0 : 2) + (x < 32 ? 0 : 1)], (y * 64 + x) * 3);
for (let orientation = 1; orientation <= 8; orientation++) {
  const jpg = join(work, `exif-orientation-${orientation}.jpg`);
  await sharp(quads, { raw: { width: 64, height: 32, channels: 3 } })
    .jpeg({ quality: 95 })
    .withMetadata({ orientation })
    .toFile(jpg);
  execFileSync('heif-enc', ['-q', '90', '-o', join(out, `exif-orientation-${orientation}.heic`), jpg]);
}

// A 320×240 photo-like gradient, to be tagged end to end.
await sharp(await gradientImage(320, 240, 'png', 11)).toFile(join(work, 'photo.png'));
execFileSync('heif-enc', ['-q', '80', '-o', join(out, 'photo.heic'), join(work, 'photo.png')]);
console.log(`HEIC fixtures in ${out}`);

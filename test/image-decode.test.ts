import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import sharp from 'sharp';
import { decodeImage, ImageError, sniffFormat } from '../inference/image.ts';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { gradientImage } from './support/fixtures.ts';
import { heicBomb, HEIC_FIXTURES, jpegBomb } from './support/bombs.ts';
import { pngBomb } from './support/png-bomb.ts';

const reason = (r: string) => (err: unknown) => err instanceof ImageError && err.reason === r;

describe('image decoding', () => {
  for (const format of ['jpeg', 'png', 'webp', 'gif', 'tiff', 'avif'] as const) {
    it(`${format}: decodes to size×size RGB`, async () => {
      const input = await gradientImage(120, 80, format);
      assert.equal(sniffFormat(input), format === 'avif' ? 'avif' : format);
      const img = await decodeImage(input, 64);
      assert.equal(img.pixels.length, 64 * 64 * 3);
      assert.deepEqual([img.sourceWidth, img.sourceHeight, img.resampled], [120, 80, true]);
    });
  }

  it('an image already at the model resolution passes unresampled (identical pixels)', async () => {
    const png = await gradientImage(64, 64, 'png');
    const raw = await sharp(png).raw().toBuffer();
    const img = await decodeImage(png, 64);
    assert.equal(img.resampled, false);
    assert.deepEqual(Buffer.from(img.pixels), raw);
  });

  it('applies EXIF orientation (a 6-rotated 80×40 JPEG is 40×80)', async () => {
    const jpeg = await sharp(await gradientImage(80, 40, 'png'))
      .jpeg()
      .withMetadata({ orientation: 6 })
      .toBuffer();
    const img = await decodeImage(jpeg, 32);
    assert.deepEqual([img.sourceWidth, img.sourceHeight], [40, 80]);
  });

  it('grayscale, CMYK, alpha and 16-bit inputs all become 8-bit RGB', async () => {
    const base = await gradientImage(50, 50, 'png');
    const gray = await sharp(base).grayscale().png().toBuffer();
    const cmyk = await sharp(base).toColourspace('cmyk').jpeg().toBuffer();
    const alpha = await sharp({ create: { width: 50, height: 50, channels: 4, background: { r: 0, g: 0, b: 0, alpha: 0 } } })
      .png()
      .toBuffer();
    const sixteen = await sharp(base).toColourspace('rgb16').png().toBuffer();
    assert.equal((await sharp(sixteen).metadata()).depth, 'ushort');
    for (const input of [gray, cmyk, alpha, sixteen]) {
      const img = await decodeImage(input, 50);
      assert.equal(img.pixels.length, 50 * 50 * 3);
    }
    // Transparent pixels are flattened onto white.
    const flat = await decodeImage(alpha, 50);
    assert.deepEqual([...flat.pixels.subarray(0, 3)], [255, 255, 255]);
    const g = await decodeImage(gray, 50);
    assert.equal(g.pixels[300], g.pixels[301]);
  });

  it('rejects empty, non-image, truncated and oversized inputs with a reason', async () => {
    await assert.rejects(decodeImage(new Uint8Array(0), 32), reason('empty'));
    await assert.rejects(decodeImage(Buffer.from('hello, I am text named photo.jpg'), 32), reason('unsupported-format'));
    const png = await gradientImage(200, 200, 'png');
    await assert.rejects(decodeImage(png.subarray(0, png.length >> 1), 32), reason('undecodable'));
    await assert.rejects(decodeImage(png, 32, { maxBytes: 100 }), reason('too-large'));
    await assert.rejects(decodeImage(png, 32, { maxPixels: 1000 }), reason('too-many-pixels'));
  });

  it("HEIC (HEVC, made by heif-enc): decoded by libheif, as sharp's prebuilt binaries cannot", async () => {
    const heic = readFileSync(join(HEIC_FIXTURES, 'photo.heic'));
    assert.equal(sniffFormat(heic), 'heif');
    await assert.rejects(sharp(heic).raw().toBuffer(), 'sharp alone cannot decode HEVC');
    const img = await decodeImage(heic, 64);
    assert.deepEqual([img.sourceWidth, img.sourceHeight, img.format, img.pixels.length], [320, 240, 'heif', 64 * 64 * 3]);
    // Same picture as the PNG it was encoded from, within HEVC's loss.
    const fromPng = await decodeImage(await gradientImage(320, 240, 'png', 11), 64);
    const diff = img.pixels.reduce((sum, v, i) => sum + Math.abs(v - fromPng.pixels[i]), 0) / img.pixels.length;
    assert.ok(diff < 6, `mean absolute difference ${diff.toFixed(2)}`);
  });

  it('HEIC with EXIF orientation 6 (and no container rotation): a stored 64×32 is upright 32×64', async () => {
    const img = await decodeImage(readFileSync(join(HEIC_FIXTURES, 'orientation-6.heic')), 32);
    assert.deepEqual([img.sourceWidth, img.sourceHeight], [32, 64]);
    // Stored: red left, blue right. Rotated 90° clockwise: red on top, blue below (centre crop 32×32).
    const at = (x: number, y: number) => [...img.pixels.subarray((y * 32 + x) * 3, (y * 32 + x) * 3 + 3)];
    assert.ok(at(16, 2)[0] > 200 && at(16, 2)[2] < 60, `top is red: ${at(16, 2)}`);
    assert.ok(at(16, 29)[2] > 200 && at(16, 29)[0] < 60, `bottom is blue: ${at(16, 29)}`);
  });

  // Every EXIF orientation: a stored 64×32 image of quadrants [[red, green], [blue, yellow]] (top row
  // first) must come out upright as the EXIF standard defines each one (a mirror, a rotation, or both).
  // Written out per orientation from the definitions, not computed by the code under test.
  const R = 'red',
    G = 'green',
    B = 'blue',
    Y = 'yellow';
  const UPRIGHT: Record<number, [string, string, string, string]> = {
    1: [R, G, B, Y], // as stored
    2: [G, R, Y, B], // mirrored left-right
    3: [Y, B, G, R], // rotated 180°
    4: [B, Y, R, G], // mirrored top-bottom
    5: [R, B, G, Y], // transposed (mirrored about the main diagonal)
    6: [B, R, Y, G], // rotated 90° clockwise
    7: [Y, G, B, R], // transversed (mirrored about the other diagonal)
    8: [G, Y, R, B], // rotated 90° counter-clockwise
  };
  const COLOURS: Record<string, number[]> = { red: [255, 0, 0], green: [0, 255, 0], blue: [0, 0, 255], yellow: [255, 255, 0] };
  /** The four quadrants of a decoded 32×32 image, each named by the nearest of the four colours. */
  const quadrants = (pixels: Uint8Array) =>
    [
      [8, 8],
      [24, 8],
      [8, 24],
      [24, 24],
    ].map(([x, y]) => {
      const px = [...pixels.subarray((y * 32 + x) * 3, (y * 32 + x) * 3 + 3)];
      const dist = (c: number[]) => c.reduce((s, v, i) => s + (v - px[i]) ** 2, 0);
      return Object.keys(COLOURS).sort((a, b) => dist(COLOURS[a]) - dist(COLOURS[b]))[0];
    });
  const quadrantImage = () => {
    const raw = Buffer.alloc(64 * 32 * 3);
    for (let y = 0; y < 32; y++)
      for (let x = 0; x < 64; x++) raw.set(COLOURS[[R, G, B, Y][(y < 16 ? 0 : 2) + (x < 32 ? 0 : 1)]], (y * 64 + x) * 3);
    return sharp(raw, { raw: { width: 64, height: 32, channels: 3 } });
  };

  for (let orientation = 1; orientation <= 8; orientation++) {
    const size = orientation >= 5 ? [32, 64] : [64, 32];
    it(`HEIC with EXIF orientation ${orientation} (heif-enc, no container transform) is upright: ${size.join('×')}, ${UPRIGHT[orientation].join(', ')}`, async () => {
      const heic = readFileSync(join(HEIC_FIXTURES, `exif-orientation-${orientation}.heic`));
      const img = await decodeImage(heic, 32);
      assert.equal(img.format, 'heif');
      assert.deepEqual([img.sourceWidth, img.sourceHeight], size);
      assert.deepEqual(quadrants(img.pixels), UPRIGHT[orientation]);
    });
    it(`JPEG with EXIF orientation ${orientation} is upright: ${size.join('×')}, ${UPRIGHT[orientation].join(', ')}`, async () => {
      const jpeg = await quadrantImage().jpeg({ quality: 95 }).withMetadata({ orientation }).toBuffer();
      const img = await decodeImage(jpeg, 32);
      assert.deepEqual([img.sourceWidth, img.sourceHeight], size);
      assert.deepEqual(quadrants(img.pixels), UPRIGHT[orientation]);
    });
  }

  const bombs: [string, () => Promise<Buffer>][] = [
    ['PNG', async () => pngBomb(30000, 30000)],
    ['JPEG', async () => jpegBomb(await gradientImage(64, 64, 'jpeg'))],
    ['HEIC', async () => heicBomb()],
  ];
  for (const [name, make] of bombs) {
    it(`a ${name} decompression bomb is refused from its header: quickly, without the memory its pixels would take`, async () => {
      const bomb = await make();
      const rss = process.memoryUsage().rss;
      const started = performance.now();
      await assert.rejects(decodeImage(bomb, 224), reason('too-many-pixels'));
      assert.ok(performance.now() - started < 5000, 'refused at once');
      assert.ok(process.memoryUsage().rss - rss < 256 * 1024 ** 2, 'no allocation of its pixels (a 30000×30000 RGB image is 2.7 GB)');
    });
  }
});

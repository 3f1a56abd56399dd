import sharp from 'sharp';

/** A photo-like synthetic JPEG (gradients plus noise, so the encoder does real work). */
export async function syntheticJpeg(width: number, height: number, seed = 1): Promise<Buffer> {
  const raw = Buffer.alloc(width * height * 3);
  let s = seed;
  for (let i = 0; i < raw.length; i += 3) {
    const p = i / 3,
      x = p % width,
      y = Math.floor(p / width);
    s = (s * 1103515245 + 12345) & 0x7fffffff;
    const noise = (s >> 16) & 31;
    raw[i] = (x * 255) / width + noise;
    raw[i + 1] = (y * 255) / height + noise;
    raw[i + 2] = ((x ^ y) & 255) / 2 + noise;
  }
  return sharp(raw, { raw: { width, height, channels: 3 } })
    .jpeg({ quality: 90 })
    .toBuffer();
}

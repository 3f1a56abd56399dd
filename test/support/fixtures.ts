/** Shared test fixtures: temporary directories, random-weight artifacts, generated images. */
import { rmSync } from 'node:fs';
import { mkdtemp } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import sharp from 'sharp';
import { planModel, type PlanOptions } from '../../model/plan.ts';
import { randomWeights } from '../../model/random-weights.ts';
import { writeArtifact, type WeightsManifest } from '../../model/weights.ts';

const created: string[] = [];
process.on('exit', () => {
  for (const dir of created) rmSync(dir, { recursive: true, force: true });
});

/** A temporary directory, removed when the test process exits (safe to call from any hook). */
export async function tempDir(prefix = 'effitag-test-'): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), prefix));
  created.push(dir);
  return dir;
}

export async function randomArtifact(
  dir: string,
  variant: string,
  options: PlanOptions & { seed?: number } = {},
): Promise<WeightsManifest> {
  const plan = planModel(variant, options);
  return writeArtifact(dir, plan, randomWeights(plan, options.seed ?? 7), { kind: 'random', note: 'test fixture' });
}

/** A smooth RGB gradient image with some structure, encoded in the given format. */
export async function gradientImage(
  width: number,
  height: number,
  format: 'jpeg' | 'png' | 'webp' | 'gif' | 'tiff' | 'avif' = 'jpeg',
  seed = 0,
): Promise<Buffer> {
  const raw = Buffer.alloc(width * height * 3);
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      const i = (y * width + x) * 3;
      raw[i] = (x * 255) / Math.max(1, width - 1);
      raw[i + 1] = (y * 255) / Math.max(1, height - 1);
      raw[i + 2] = ((x + y + seed * 37) * 7) % 256;
    }
  }
  return sharp(raw, { raw: { width, height, channels: 3 } })
    .toFormat(format)
    .toBuffer();
}

/**
 * An artifact whose classifier answers the same for every image: a zero kernel and these logits as
 * its bias (`{207: 6, 852: 5}`: golden retriever 0.73, tennis ball 0.27). The rest of the network is
 * random and runs for real, so the engine, decoding and pipeline are exercised while the top
 * classes are known.
 */
export async function arrangedArtifact(dir: string, variant: string, logits: Record<number, number>): Promise<WeightsManifest> {
  const plan = planModel(variant);
  const weights = randomWeights(plan, 7);
  const kernel = weights.get('predictions/kernel:0');
  const bias = weights.get('predictions/bias:0');
  if (!kernel || !bias) throw new Error(`${variant} has no classifier`);
  kernel.fill(0);
  bias.fill(0);
  for (const [cls, logit] of Object.entries(logits)) bias[Number(cls)] = logit;
  return writeArtifact(dir, plan, weights, { kind: 'random', note: `test fixture: arranged logits ${JSON.stringify(logits)}` });
}

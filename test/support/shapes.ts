/**
 * Generated training data with known labels: shapes and textures in random colours, at random
 * positions and sizes, on random backgrounds (a colour gradient plus pixel noise). Written in the
 * usual layout, one folder per label, as PNG. Seeded: the same call writes the same files.
 */
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import sharp from 'sharp';
import { planModel } from '../../model/plan.ts';
import { randomWeights, seededRandom } from '../../model/random-weights.ts';
import { writeArtifact } from '../../model/weights.ts';
import { shuffle } from '../../training/dataset.ts';
import { buildNet, disposeNet, readWeights, recalibrateBatchNorm } from '../../training/trainer.ts';

type Rgb = [number, number, number];
type Painter = (x: number, y: number) => boolean;
type Pattern = (size: number, rand: () => number) => Painter;

const colour = (rand: () => number): Rgb => [rand() * 255, rand() * 255, rand() * 255];
const far = (a: Rgb, rand: () => number): Rgb => {
  for (;;) {
    const c = colour(rand);
    if (Math.hypot(c[0] - a[0], c[1] - a[1], c[2] - a[2]) > 120) return c;
  }
};

/** Shapes (one object somewhere in the picture) and textures (a pattern over the picture). */
export const PATTERNS: Record<string, Pattern> = {
  /** No pattern: the background alone. */
  plain: () => () => false,
  /** Salt and pepper in the two colours: the finest texture there is. */
  grain: (_, rand) => () => rand() < 0.5,
  disc: (n, rand) => {
    const r = n * (0.18 + 0.17 * rand());
    const cx = r + rand() * (n - 2 * r);
    const cy = r + rand() * (n - 2 * r);
    return (x, y) => (x - cx) ** 2 + (y - cy) ** 2 < r * r;
  },
  square: (n, rand) => {
    const s = n * (0.3 + 0.3 * rand());
    const x0 = rand() * (n - s);
    const y0 = rand() * (n - s);
    return (x, y) => x >= x0 && x < x0 + s && y >= y0 && y < y0 + s;
  },
  /** A plus sign: two crossing bars. */
  cross: (n, rand) => {
    const arm = n * (0.2 + 0.15 * rand());
    const bar = arm * (0.3 + 0.15 * rand());
    const cx = arm + rand() * (n - 2 * arm);
    const cy = arm + rand() * (n - 2 * arm);
    return (x, y) => (Math.abs(x - cx) < bar / 2 && Math.abs(y - cy) < arm) || (Math.abs(y - cy) < bar / 2 && Math.abs(x - cx) < arm);
  },
  /** A circle's outline. */
  ring: (n, rand) => {
    const r = n * (0.2 + 0.15 * rand());
    const w = r * (0.2 + 0.1 * rand());
    const cx = r + rand() * (n - 2 * r);
    const cy = r + rand() * (n - 2 * r);
    return (x, y) => Math.abs(Math.hypot(x - cx, y - cy) - (r - w / 2)) < w / 2;
  },
  stripes: (n, rand) => {
    const angle = rand() * Math.PI;
    const period = n * (0.16 + 0.1 * rand());
    const [c, s] = [Math.cos(angle), Math.sin(angle)];
    return (x, y) => {
      const v = (x * c + y * s) / period;
      return v - Math.floor(v) < 0.5;
    };
  },
  checks: (n, rand) => {
    const cell = n * (0.14 + 0.08 * rand());
    const [ox, oy] = [rand() * cell, rand() * cell];
    return (x, y) => (Math.floor((x + ox) / cell) + Math.floor((y + oy) / cell)) % 2 === 0;
  },
  dots: (n, rand) => {
    const cell = n * (0.2 + 0.08 * rand());
    const r = cell * (0.22 + 0.1 * rand());
    const [ox, oy] = [rand() * cell, rand() * cell];
    return (x, y) => {
      const dx = ((x + ox) % cell) - cell / 2;
      const dy = ((y + oy) % cell) - cell / 2;
      return dx * dx + dy * dy < r * r;
    };
  },
};

/** One image of a pattern as raw RGB. */
export function drawPattern(pattern: string, size: number, rand: () => number): Buffer {
  const paint = PATTERNS[pattern](size, rand);
  const bg1 = colour(rand);
  const bg2 = colour(rand);
  const fg = far(bg1, rand);
  const noise = 6 + rand() * 14;
  const out = Buffer.alloc(size * size * 3);
  for (let y = 0; y < size; y++)
    for (let x = 0; x < size; x++) {
      const t = (x + y) / (2 * size);
      const on = paint(x, y);
      for (let ch = 0; ch < 3; ch++) {
        const base = on ? fg[ch] : bg1[ch] * (1 - t) + bg2[ch] * t * 0.35 + bg1[ch] * t * 0.65;
        out[(y * size + x) * 3 + ch] = Math.max(0, Math.min(255, base + (rand() * 2 - 1) * noise));
      }
    }
  return out;
}

/** Write `perLabel` images of each pattern under `dir/<pattern>/`. Returns the label folders, sorted. */
export async function writePatternDataset(
  dir: string,
  options: { patterns?: string[]; perLabel: number | Record<string, number>; size?: number; seed?: number },
): Promise<string[]> {
  const patterns = options.patterns ?? Object.keys(PATTERNS);
  const size = options.size ?? 80;
  const rand = seededRandom(options.seed ?? 1);
  for (const p of patterns) {
    await mkdir(join(dir, p), { recursive: true });
    const count = typeof options.perLabel === 'number' ? options.perLabel : (options.perLabel[p] ?? 0);
    for (let i = 0; i < count; i++) {
      const png = await sharp(drawPattern(p, size, rand), { raw: { width: size, height: size, channels: 3 } })
        .png({ compressionLevel: 1 })
        .toBuffer();
      await writeFile(join(dir, p, `${p}-${String(i).padStart(4, '0')}.png`), png);
    }
  }
  return [...patterns].sort();
}

/**
 * A random-weight artifact whose BatchNorm statistics are measured on generated pictures (data-dependent
 * initialisation): plain random weights make a deep network whose signal fades to nothing, so neither
 * its features nor its gradients would mean anything. The stand-in for pretrained weights in training tests.
 */
export async function calibratedArtifact(dir: string, variant: string, seed = 3): Promise<void> {
  const plan = planModel(variant);
  const net = buildNet(plan, randomWeights(plan, seed));
  const size = Math.ceil((plan.resolution * 1.125) / 8) * 8;
  const rand = seededRandom(seed);
  const samples = Object.keys(PATTERNS).flatMap((p, label) =>
    Array.from({ length: 6 }, (_, i) => ({ path: `${p}/${i}`, label, pixels: new Uint8Array(drawPattern(p, size, rand)) })),
  );
  recalibrateBatchNorm(net, shuffle(samples, rand), size, plan.resolution, 14);
  await writeArtifact(dir, plan, readWeights(net), {
    kind: 'random',
    note: 'test fixture: BatchNorm statistics measured on generated pictures',
  });
  disposeNet(net);
}

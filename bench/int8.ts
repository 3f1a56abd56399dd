/**
 * The int8 engine against the float one: for each variant at its resolution, the float artifact and
 * its `weights quantize` result on the ort engine (2 intra-op threads, spinning, batch 8), timed in
 * interleaved rounds so both see the same machine load; the ratio is what to read. Random weights:
 * speed does not depend on the values, but the quality gate is meaningless on them, so quantization is
 * forced (the gate's figures on real photographs: README, Engines).
 *
 * Images per second per core and the decode share: decoding (sharp, a 1024×768 JPEG to the model's
 * size, 2 in flight per core) is CPU time too; its share is decode CPU-ms / (decode + inference CPU-ms).
 */
import { cpus } from 'node:os';
import { join } from 'node:path';
import { decodeImage, type DecodedImage } from '../inference/image.ts';
import { ortEngine } from '../inference/ort-engine.ts';
import { planModel } from '../model/plan.ts';
import { quantizeArtifact } from '../model/quantize.ts';
import { randomWeights } from '../model/random-weights.ts';
import { writeArtifact } from '../model/weights.ts';
import { syntheticJpeg } from './images.ts';
import { cpuMsSince, median, type BenchContext } from './util.ts';

export interface Int8Row {
  variant: string;
  resolution: number;
  batch: number;
  floatMsPerImage: number;
  int8MsPerImage: number;
  /** Per core: images/s ÷ intra-op threads (both threads busy while a batch runs). */
  floatImagesPerSecondPerCore: number;
  int8ImagesPerSecondPerCore: number;
  int8OverFloat: number;
  /** Decode CPU-ms per image, and its share of all CPU time per image with each engine. */
  decodeCpuMsPerImage: number;
  decodeShareFloat: number;
  decodeShareInt8: number;
  /** Each round's int8/float ratio (interleaved). */
  rounds: number[];
}

const THREADS = 2;
const BATCH = 8;

export async function benchInt8(ctx: BenchContext, opts: { variants: string[]; runs: number }) {
  const rows: Int8Row[] = [];
  const jpegs = await Promise.all(Array.from({ length: 12 }, (_, i) => syntheticJpeg(640 + 32 * i, 480 + 16 * i, i + 1)));
  for (const variant of opts.variants) {
    const plan = planModel(variant);
    const floatDir = join(ctx.workDir, `${variant}-float`);
    const int8Dir = join(ctx.workDir, `${variant}-int8`);
    await writeArtifact(floatDir, plan, randomWeights(plan, 1), { kind: 'random', note: 'benchmark' });
    await quantizeArtifact({
      weightsDir: floatDir,
      out: int8Dir,
      force: true,
      images: jpegs.length,
      source: { describe: 'synthetic JPEGs', list: async () => jpegs.map((_, i) => String(i)), read: async (p) => jpegs[Number(p)] },
    });
    const images: DecodedImage[] = await Promise.all(jpegs.slice(0, BATCH).map((j) => decodeImage(j, plan.resolution)));

    // Decode: CPU per image with enough in flight to keep the cores busy.
    const inFlight = 2 * cpus().length;
    const big = await syntheticJpeg(1024, 768);
    await Promise.all(Array.from({ length: inFlight }, () => decodeImage(big, plan.resolution)));
    const c0 = process.cpuUsage();
    const n = 32;
    for (let done = 0; done < n; done += inFlight)
      await Promise.all(Array.from({ length: inFlight }, () => decodeImage(big, plan.resolution)));
    const decodeCpu = cpuMsSince(c0) / n;

    const engine = ortEngine({ threads: THREADS, log: () => {}, spinning: true });
    const models = { float: await engine.load(floatDir), int8: await engine.load(int8Dir) };
    const times = { float: [] as number[], int8: [] as number[] };
    try {
      for (const m of Object.values(models)) await m.classify(images); // warm-up
      for (let r = 0; r < opts.runs; r++) {
        // Alternate which goes first, so neither always follows the other.
        const order = r % 2 ? (['int8', 'float'] as const) : (['float', 'int8'] as const);
        for (const k of order) {
          const t0 = performance.now();
          await models[k].classify(images);
          times[k].push((performance.now() - t0) / BATCH);
        }
      }
    } finally {
      await models.float.dispose();
      await models.int8.dispose();
    }
    const [f, q] = [median(times.float), median(times.int8)];
    const share = (ms: number) => decodeCpu / (decodeCpu + ms * THREADS);
    const row: Int8Row = {
      variant,
      resolution: plan.resolution,
      batch: BATCH,
      floatMsPerImage: f,
      int8MsPerImage: q,
      floatImagesPerSecondPerCore: 1000 / f / THREADS,
      int8ImagesPerSecondPerCore: 1000 / q / THREADS,
      int8OverFloat: f / q,
      decodeCpuMsPerImage: decodeCpu,
      decodeShareFloat: share(f),
      decodeShareInt8: share(q),
      rounds: times.float.map((t, i) => t / times.int8[i]),
    };
    rows.push(row);
    ctx.log(
      `${variant.padEnd(4)} ${plan.resolution}px batch ${BATCH}: float ${f.toFixed(1)} ms/image (${row.floatImagesPerSecondPerCore.toFixed(1)} images/s/core), int8 ${q.toFixed(1)} ms/image (${row.int8ImagesPerSecondPerCore.toFixed(1)} images/s/core): int8 ${row.int8OverFloat.toFixed(2)}× float (rounds ${row.rounds.map((x) => x.toFixed(2)).join(' ')}); decode ${decodeCpu.toFixed(1)} CPU-ms/image = ${(100 * row.decodeShareFloat).toFixed(0)} % of float's CPU, ${(100 * row.decodeShareInt8).toFixed(0)} % of int8's`,
    );
  }
  return {
    machine: { cpus: cpus().length, model: cpus()[0]?.model, node: process.version },
    rows,
    summary: {
      int8OverFloatB0: rows.find((r) => r.variant === 'b0')?.int8OverFloat,
      goal: 'int8 ≥ 2× the float export on B0 (issue 25: against a reference export, which cannot be made here)',
    },
  };
}

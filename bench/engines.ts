/**
 * Engine benchmark: images/s and ms/image for each engine × batch × variant, plus sharp's
 * decode+resize cost per image. Median of several timed runs after a warm-up run. Random weights
 * (the speed of a network does not depend on its values).
 */
import { cpus } from 'node:os';
import { join } from 'node:path';
import { planModel } from '../model/plan.ts';
import { randomWeights } from '../model/random-weights.ts';
import { writeArtifact } from '../model/weights.ts';
import { createEngine } from '../inference/engines.ts';
import { decodeImage, type DecodedImage } from '../inference/image.ts';
import type { EngineName } from '../inference/engine.ts';
import { syntheticJpeg } from './images.ts';
import { cpuMsSince, median, type BenchContext } from './util.ts';
import type { DecodeRow } from '../tiers/cost.ts';

export interface EngineRow {
  engine: string;
  backend: string;
  variant: string;
  batch: number;
  msPerImage: number;
  imagesPerSecond: number;
  runs: number;
}
export type { DecodeRow } from '../tiers/cost.ts';

/** onnxruntime is measured as the engine runs by default (spinning) and as pipeline workers run it (idle threads sleep). */
const CONFIGS: { label: string; engine: EngineName; spinning?: boolean }[] = [
  { label: 'ort', engine: 'ort', spinning: true },
  { label: 'ort-worker', engine: 'ort', spinning: false },
  { label: 'tfjs', engine: 'tfjs' },
];

export async function benchEngines(
  ctx: BenchContext,
  opts: { variants: string[]; batches: number[]; engines: EngineName[]; runs: number },
) {
  const rows: EngineRow[] = [];
  for (const variant of opts.variants) {
    const plan = planModel(variant);
    const dir = join(ctx.workDir, variant);
    await writeArtifact(dir, plan, randomWeights(plan, 1), { kind: 'random', note: 'benchmark' });
    const jpeg = await syntheticJpeg(1024, 768);
    const image = await decodeImage(jpeg, plan.resolution);
    for (const config of CONFIGS.filter((c) => opts.engines.includes(c.engine))) {
      const engineName = config.engine;
      const model = await createEngine(engineName, { ort: { log: () => {}, spinning: config.spinning } }).load(dir);
      for (const batch of opts.batches) {
        const images: DecodedImage[] = Array.from({ length: batch }, () => image);
        // tfjs on CPU is ~15× slower: fewer runs keep the benchmark within minutes, still median-of-3.
        const runs = engineName === 'tfjs' ? Math.min(opts.runs, 3) : opts.runs;
        await model.classify(images); // warm-up (graph optimisation, kernel selection, allocation)
        const times: number[] = [];
        for (let r = 0; r < runs; r++) {
          const t0 = performance.now();
          await model.classify(images);
          times.push(performance.now() - t0);
        }
        const ms = median(times) / batch;
        const row = {
          engine: config.label,
          backend: `${model.description}${config.spinning === false ? ' worker' : ''}`,
          variant,
          batch,
          msPerImage: ms,
          imagesPerSecond: 1000 / ms,
          runs,
        };
        rows.push(row);
        ctx.log(
          `${row.backend.padEnd(15)} ${variant.padEnd(5)} batch ${String(batch).padStart(2)}: ${ms.toFixed(1).padStart(7)} ms/image ${row.imagesPerSecond.toFixed(1).padStart(7)} images/s`,
        );
      }
      await model.dispose();
    }
  }
  const decode = await benchDecode(opts.runs);
  for (const d of decode)
    ctx.log(
      `sharp decode+resize ${d.source} (${Math.round((d.bytes ?? 0) / 1024)} KB) → 224, ${d.inFlight} in flight: ${d.msPerImage.toFixed(2)} ms/image, ${(d.cpuMsPerImage ?? NaN).toFixed(1)} CPU-ms`,
    );
  const ratio = (engine: string, variant: string, batch: number) => {
    const ort = rows.find((r) => r.engine === engine && r.variant === variant && r.batch === batch);
    const tfjs = rows.find((r) => r.engine === 'tfjs' && r.variant === variant && r.batch === batch);
    return ort && tfjs ? ort.imagesPerSecond / tfjs.imagesPerSecond : undefined;
  };
  const summary = {
    ortB0Batch8ImagesPerSecond: rows.find((r) => r.engine === 'ort' && r.variant === 'b0' && r.batch === 8)?.imagesPerSecond,
    ortOverTfjsB0Batch8: ratio('ort', 'b0', 8),
    ortWorkerB0Batch8ImagesPerSecond: rows.find((r) => r.engine === 'ort-worker' && r.variant === 'b0' && r.batch === 8)?.imagesPerSecond,
    ortWorkerOverTfjsB0Batch8: ratio('ort-worker', 'b0', 8),
    goals: 'ort B0 batch 8 ≥ 100 images/s and ≥ 10× tfjs in the same run',
  };
  return { machine: { cpus: cpus().length, model: cpus()[0]?.model, node: process.version }, rows, decode, summary };
}

/**
 * Decoding cost by image size (the cost model prices an image's decoding from its bytes): one in
 * flight (latency) and, for each size, enough in flight to keep every core busy (CPU per image).
 */
async function benchDecode(runs: number): Promise<DecodeRow[]> {
  const out: DecodeRow[] = [];
  const busy = Math.max(4, 2 * cpus().length);
  for (const [width, height, inFlights] of [
    [640, 480, [busy]],
    [1024, 768, [1, 16]],
    [2048, 1536, [busy]],
    [4032, 3024, [busy]],
  ] as const) {
    const jpeg = await syntheticJpeg(width, height);
    const n = Math.max(16, Math.round((64 * (786_432 / (width * height)) ** 0.5) / 16) * 16);
    for (const inFlight of inFlights) {
      await Promise.all(Array.from({ length: inFlight }, () => decodeImage(jpeg, 224)));
      const times: number[] = [];
      const cpu: number[] = [];
      for (let r = 0; r < runs; r++) {
        const t0 = performance.now();
        const c0 = process.cpuUsage();
        for (let done = 0; done < n; done += inFlight) {
          await Promise.all(Array.from({ length: Math.min(inFlight, n - done) }, () => decodeImage(jpeg, 224)));
        }
        times.push((performance.now() - t0) / n);
        cpu.push(cpuMsSince(c0) / n);
      }
      out.push({ source: `${width}×${height} JPEG`, bytes: jpeg.length, inFlight, msPerImage: median(times), cpuMsPerImage: median(cpu) });
    }
  }
  return out;
}

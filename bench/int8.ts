/**
 * The project's float export and its int8 quantization against a reference export of the same network
 * (torchvision's EfficientNet exported by PyTorch: scripts/reference-export/export.py), for each variant
 * at its resolution, timed in interleaved rounds so all three see the same machine load: the ratios are
 * what to read on a shared machine. All three run as the ort engine runs a model: a session on a worker
 * thread (2 intra-op threads, idle threads sleeping as pipeline workers run them), fed normalised NCHW
 * batches packed by toNchwBatch. Where PyTorch is missing the reference is skipped, and said so.
 *
 * Random weights: speed does not depend on the values, but the quality gate is meaningless on them, so
 * quantization is forced (the gate's figures on real photographs: bench/gate.ts, README, Engines).
 *
 * Per image: wall ms (batch time / batch) and CPU-ms (the process's CPU time over the batch / batch, all
 * threads); images per second per core = 1000 / CPU-ms, which other work on the machine disturbs less
 * than wall time. Decoding (sharp, a 1024×768 JPEG to the model's size, 2 in flight per core) is CPU
 * time too: its share is decode CPU-ms / (decode + inference CPU-ms).
 *
 * EfficientNet-Lite rows (`--lite`) also run B0's reference export in the same rounds (the issue's
 * baseline), beside a Lite reference built from torchvision's classes by the same script; and the
 * B0 row can run int8 layouts that are experiments only (uint8 weights: U8U8 kernels; per-tensor
 * weight scales; 8-bit weights), exported straight from the same ranges.
 */
import { spawn } from 'node:child_process';
import { cpus, loadavg } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { decodeImage, toNchwBatch, type DecodedImage } from '../inference/image.ts';
import { ortEngine } from '../inference/ort-engine.ts';
import { startSessionThread } from '../inference/ort-thread.ts';
import { writeFile } from 'node:fs/promises';
import { exportOnnx, inputNormalization, type QuantizeSpec } from '../model/onnx/export.ts';
import { planModel } from '../model/plan.ts';
import { quantizeArtifact } from '../model/quantize.ts';
import { randomWeights } from '../model/random-weights.ts';
import { loadArtifact, planFor, type WeightsArtifact, writeArtifact } from '../model/weights.ts';
import { benchGate } from './gate.ts';
import { syntheticJpeg } from './images.ts';
import { cpuMsSince, int8CpuFeatures, median, type BenchContext } from './util.ts';

export interface EngineFigures {
  msPerImage: number;
  cpuMsPerImage: number;
  imagesPerSecondPerCore: number;
  /** Decoding's share of all CPU time per image (decode + this inference). */
  decodeShare: number;
}

export interface Int8Row {
  variant: string;
  resolution: number;
  batch: number;
  threads: number;
  float: EngineFigures;
  int8: EngineFigures;
  /** torchvision's export; absent where it could not be made (`referenceUnavailable` says why). */
  reference?: EngineFigures;
  /** Speed ratios: medians of the per-round ratios (wall), and of CPU-ms per image. */
  int8OverFloat: number;
  int8OverFloatCpu: number;
  floatOverReference?: number;
  floatOverReferenceCpu?: number;
  int8OverReference?: number;
  int8OverReferenceCpu?: number;
  /** Lite rows: B0's reference export at 224 px in the same rounds, and each model's speed over it. */
  referenceB0?: EngineFigures;
  floatOverReferenceB0?: number;
  floatOverReferenceB0Cpu?: number;
  int8OverReferenceB0?: number;
  int8OverReferenceB0Cpu?: number;
  /** Experiments (B0): other int8 layouts, each over the reference export and over the default int8. */
  experiments?: Record<
    string,
    EngineFigures & { overReference?: number; overReferenceCpu?: number; overInt8: number; overInt8Cpu: number }
  >;
  decodeCpuMsPerImage: number;
  /** Each round's wall time per image, per model. */
  rounds: Record<string, number[]>;
}

const THREADS = 2;
const BATCH = 8;
const SCRIPT = fileURLToPath(new URL('../scripts/reference-export/export.py', import.meta.url));

/** torchvision's preprocessing (ImageNet mean and std on [0, 1] pixels) as x·scale + shift on raw [0, 255]. */
const TORCHVISION = (() => {
  const mean = [0.485, 0.456, 0.406],
    std = [0.229, 0.224, 0.225];
  return { scale: std.map((s) => 1 / (255 * s)), shift: mean.map((m, c) => -m / std[c]) };
})();

function run(cmd: string, args: string[]): Promise<{ code: number | null; out: string; error?: Error }> {
  return new Promise((resolve) => {
    let out = '';
    const child = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    child.stdout.on('data', (d) => (out += d));
    child.stderr.on('data', (d) => (out += d));
    child.on('error', (error) => resolve({ code: null, out, error }));
    child.on('close', (code) => resolve({ code, out }));
  });
}

/**
 * torchvision's EfficientNet `variant` at `resolution` as ONNX, by the committed script, with the first
 * Python that has PyTorch (EFFITAG_PYTHON, python3, Debian's /usr/bin/python3). A reason where none can.
 */
export async function referenceExport(
  variant: string,
  resolution: number,
  out: string,
): Promise<{ path: string } | { unavailable: string }> {
  if (!/^(b[0-7]|lite[0-4])$/.test(variant)) return { unavailable: `torchvision has no ${variant}` };
  const pythons = [process.env.EFFITAG_PYTHON, 'python3', '/usr/bin/python3'].filter((p): p is string => !!p);
  const reasons: string[] = [];
  for (const python of [...new Set(pythons)]) {
    const r = await run(python, [SCRIPT, '--variant', variant, '--resolution', String(resolution), '--out', out]);
    if (r.code === 0) return { path: out };
    reasons.push(`${python}: ${r.error ? r.error.message : (r.out.trim().split('\n').at(-1) ?? `exit ${r.code}`)}`);
  }
  return { unavailable: reasons.join('; ') };
}

/**
 * `variant` with random weights (seed 1) and its int8 quantization, ranges calibrated on `jpegs`, as
 * this suite and bench/profile-int8.ts make them: the two artifact folders under `workDir`.
 */
export async function benchArtifacts(workDir: string, variant: string, jpegs: readonly Buffer[]) {
  const plan = planModel(variant);
  const floatDir = join(workDir, `${variant}-float`);
  const int8Dir = join(workDir, `${variant}-int8`);
  await writeArtifact(floatDir, plan, randomWeights(plan, 1), { kind: 'random', note: 'benchmark' });
  await quantizeArtifact({
    weightsDir: floatDir,
    out: int8Dir,
    force: true,
    images: jpegs.length,
    source: { describe: 'synthetic JPEGs', list: async () => jpegs.map((_, i) => String(i)), read: async (p) => jpegs[Number(p)] },
  });
  return { floatDir, int8Dir };
}

/** An int8 artifact's graph (NCHW input, as the engine runs it) with part of its quantization changed: an experiment's layout. */
export function int8Graph(q: WeightsArtifact, change: Partial<QuantizeSpec> = {}): Uint8Array {
  const spec = q.manifest.quantization!;
  const quantize: QuantizeSpec = {
    ranges: spec.ranges,
    ops: spec.ops,
    floatSqueezeExcite: spec.floatSqueezeExcite,
    weightBits: spec.weightBits,
    ...change,
  };
  return exportOnnx(planFor(q.manifest), q.weights, { layout: 'nchw', quantize });
}

export async function benchInt8(
  ctx: BenchContext,
  opts: {
    variants: string[];
    runs: number;
    reference?: boolean;
    gate?: { copies: number };
    /** B0: also time these int8 layouts (experiments, not artifacts). */
    experiments?: Record<string, Partial<QuantizeSpec>>;
  },
) {
  const rows: Int8Row[] = [];
  const unavailable: string[] = [];
  const load = [loadavg()[0]];
  ctx.log(`CPU: ${cpus().length} × ${cpus()[0]?.model}; int8 features: ${int8CpuFeatures().join(', ') || 'none found'}`);
  const jpegs = await Promise.all(Array.from({ length: 12 }, (_, i) => syntheticJpeg(640 + 32 * i, 480 + 16 * i, i + 1)));
  for (const variant of opts.variants) {
    const R = planModel(variant).resolution;
    const { floatDir, int8Dir } = await benchArtifacts(ctx.workDir, variant, jpegs);
    const images: DecodedImage[] = await Promise.all(jpegs.slice(0, BATCH).map((j) => decodeImage(j, R)));

    // Decode: CPU per image with enough in flight to keep the cores busy.
    const inFlight = 2 * cpus().length;
    const big = await syntheticJpeg(1024, 768);
    await Promise.all(Array.from({ length: inFlight }, () => decodeImage(big, R)));
    const c0 = process.cpuUsage();
    const n = 32;
    for (let done = 0; done < n; done += inFlight) await Promise.all(Array.from({ length: inFlight }, () => decodeImage(big, R)));
    const decodeCpu = cpuMsSince(c0) / n;

    // The three models, each behind `classify(images)` as the engine runs it.
    const engine = ortEngine({ threads: THREADS, log: () => {}, spinning: false });
    const float = await engine.load(floatDir);
    const int8 = await engine.load(int8Dir);
    const models: Record<string, { classify(i: DecodedImage[]): Promise<unknown>; dispose(): Promise<void> }> = { float, int8 };
    /** An ONNX file on a session thread as the engine runs one, fed NCHW batches normalised by `norm` (at `size` px). */
    const sessionModel = async (path: string, norm: { scale: number[]; shift: number[] }, size: number, batchImages?: DecodedImage[]) => {
      const session = await startSessionThread(path, {
        graphOptimizationLevel: 'all',
        intraOpNumThreads: THREADS,
        interOpNumThreads: 1,
        executionMode: 'sequential',
        executionProviders: ['cpu'],
        extra: { session: { intra_op: { allow_spinning: '0' } } },
      });
      return {
        classify: (batch: DecodedImage[]) =>
          session.run(toNchwBatch(batchImages ?? batch, norm.scale, norm.shift), [(batchImages ?? batch).length, 3, size, size]),
        dispose: () => session.close(),
      };
    };
    if (opts.reference !== false) {
      const ref = await referenceExport(variant, R, join(ctx.workDir, `${variant}-reference.onnx`));
      if ('path' in ref) models.reference = await sessionModel(ref.path, TORCHVISION, R);
      else {
        unavailable.push(`${variant}: ${ref.unavailable}`);
        ctx.log(`${variant}: reference export unavailable (${ref.unavailable}); float and int8 only`);
      }
      if (variant.startsWith('lite')) {
        // The issue's baseline: B0's reference export, at its 224 px, in the same rounds.
        const b0 = await referenceExport('b0', 224, join(ctx.workDir, 'b0-reference.onnx'));
        if ('path' in b0) {
          const at224 = R === 224 ? images : await Promise.all(jpegs.slice(0, BATCH).map((j) => decodeImage(j, 224)));
          models['reference-b0'] = await sessionModel(b0.path, TORCHVISION, 224, at224);
        } else unavailable.push(`b0 (for ${variant}): ${b0.unavailable}`);
      }
    }
    if (opts.experiments && variant === 'b0') {
      const q = await loadArtifact(int8Dir);
      const qplan = planFor(q.manifest);
      for (const [name, change] of Object.entries(opts.experiments)) {
        const path = join(ctx.workDir, `${variant}-${name}.onnx`);
        await writeFile(path, int8Graph(q, change));
        models[name] = await sessionModel(path, inputNormalization(qplan, q.weights), R);
      }
    }
    const names = Object.keys(models);
    const wall: Record<string, number[]> = Object.fromEntries(names.map((k) => [k, []]));
    const cpu: Record<string, number[]> = Object.fromEntries(names.map((k) => [k, []]));
    try {
      for (const k of names) await models[k].classify(images); // warm-up (graph optimisation, allocation)
      for (let r = 0; r < opts.runs; r++) {
        // Rotate the order, so none always follows another.
        const order = names.map((_, i) => names[(i + r) % names.length]);
        for (const k of order) {
          const c = process.cpuUsage();
          const t0 = performance.now();
          await models[k].classify(images);
          wall[k].push((performance.now() - t0) / BATCH);
          cpu[k].push(cpuMsSince(c) / BATCH);
        }
        load.push(loadavg()[0]);
      }
    } finally {
      for (const m of Object.values(models)) await m.dispose();
    }
    const figures = (k: string): EngineFigures => {
      const c = median(cpu[k]);
      return { msPerImage: median(wall[k]), cpuMsPerImage: c, imagesPerSecondPerCore: 1000 / c, decodeShare: decodeCpu / (decodeCpu + c) };
    };
    /** How many times faster `a` runs than `b`: the median of the per-round wall ratios, and the ratio of median CPU-ms. */
    const faster = (a: string, b: string) => [median(wall[b].map((t, i) => t / wall[a][i])), median(cpu[b]) / median(cpu[a])];
    const [qf, qfCpu] = faster('int8', 'float');
    const row: Int8Row = {
      variant,
      resolution: R,
      batch: BATCH,
      threads: THREADS,
      float: figures('float'),
      int8: figures('int8'),
      int8OverFloat: qf,
      int8OverFloatCpu: qfCpu,
      decodeCpuMsPerImage: decodeCpu,
      rounds: wall,
    };
    if (models.reference) {
      row.reference = figures('reference');
      [row.floatOverReference, row.floatOverReferenceCpu] = faster('float', 'reference');
      [row.int8OverReference, row.int8OverReferenceCpu] = faster('int8', 'reference');
    }
    if (models['reference-b0']) {
      row.referenceB0 = figures('reference-b0');
      [row.floatOverReferenceB0, row.floatOverReferenceB0Cpu] = faster('float', 'reference-b0');
      [row.int8OverReferenceB0, row.int8OverReferenceB0Cpu] = faster('int8', 'reference-b0');
    }
    const experiments = names.filter((k) => !['float', 'int8', 'reference', 'reference-b0'].includes(k));
    if (experiments.length) {
      row.experiments = Object.fromEntries(
        experiments.map((k) => {
          const [overInt8, overInt8Cpu] = faster(k, 'int8');
          const [overReference, overReferenceCpu] = models.reference ? faster(k, 'reference') : [undefined, undefined];
          return [k, { ...figures(k), overReference, overReferenceCpu, overInt8, overInt8Cpu }];
        }),
      );
    }
    rows.push(row);
    const show = (k: string, f: EngineFigures) =>
      `${k} ${f.msPerImage.toFixed(1)} ms, ${f.cpuMsPerImage.toFixed(1)} CPU-ms/image (${f.imagesPerSecondPerCore.toFixed(1)} images/s/core; decode ${(100 * f.decodeShare).toFixed(0)} % of CPU)`;
    const x = (v: number | undefined, c: number | undefined) => (v === undefined ? 'n/a' : `${v.toFixed(2)}× (CPU ${c!.toFixed(2)}×)`);
    ctx.log(
      `${variant.padEnd(4)} ${R}px batch ${BATCH}, ${THREADS} threads, ${opts.runs} interleaved rounds: ${names.map((k) => show(k, figures(k))).join('; ')}`,
    );
    ctx.log(
      `     float/reference ${x(row.floatOverReference, row.floatOverReferenceCpu)}, int8/reference ${x(row.int8OverReference, row.int8OverReferenceCpu)}, int8/float ${x(qf, qfCpu)}; decode ${decodeCpu.toFixed(1)} CPU-ms/image`,
    );
    if (row.referenceB0)
      ctx.log(
        `     over B0's reference export: float ${x(row.floatOverReferenceB0, row.floatOverReferenceB0Cpu)}, int8 ${x(row.int8OverReferenceB0, row.int8OverReferenceB0Cpu)}`,
      );
    for (const [k, e] of Object.entries(row.experiments ?? {}))
      ctx.log(`     ${k}: over reference ${x(e.overReference, e.overReferenceCpu)}, over int8 ${x(e.overInt8, e.overInt8Cpu)}`);
  }
  const b0 = rows.find((r) => r.variant === 'b0');
  const lite0 = rows.find((r) => r.variant === 'lite0');
  // The quality gate on photographs, per variant (image size) measured above.
  const gate = opts.gate ? await benchGate(ctx, { variants: opts.variants, copies: opts.gate.copies, opsVariants: true }) : undefined;
  return {
    machine: {
      cpus: cpus().length,
      model: cpus()[0]?.model,
      int8Features: int8CpuFeatures(),
      node: process.version,
      loadAverage: { min: Math.min(...load), median: median(load), max: Math.max(...load) },
    },
    rows,
    ...(unavailable.length ? { referenceUnavailable: unavailable } : {}),
    ...(gate ? { gate } : {}),
    summary: {
      floatOverReferenceB0: b0?.floatOverReference,
      floatOverReferenceCpuB0: b0?.floatOverReferenceCpu,
      int8OverReferenceB0: b0?.int8OverReference,
      int8OverReferenceCpuB0: b0?.int8OverReferenceCpu,
      int8OverFloatB0: b0?.int8OverFloat,
      ...(lite0
        ? {
            int8Lite0OverReferenceB0Cpu: lite0.int8OverReferenceB0Cpu,
            floatLite0OverReferenceB0Cpu: lite0.floatOverReferenceB0Cpu,
            int8Lite0OverReferenceLite0Cpu: lite0.int8OverReferenceCpu,
          }
        : {}),
      goals: 'float ≥ 1.0× the reference export; int8 ≥ 2× the float reference export on B0 (issue 25)',
    },
  };
}

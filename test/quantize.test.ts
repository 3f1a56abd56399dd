/**
 * effitag weights quantize: calibration on the user's images, the held-out quality gate (a model that
 * tags differently from its float model is refused, or written only when forced and then says so), and
 * the int8 artifact as a model like any other (its own name and marker, the ort engine runs its QDQ graph).
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { existsSync } from 'node:fs';
import { mkdir, readdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { before, describe, it } from 'node:test';
import { decodeImage } from '../inference/image.ts';
import { ortEngine } from '../inference/ort-engine.ts';
import { tfjsEngine } from '../inference/tfjs-engine.ts';
import { ensureOnnx } from '../model/onnx/cache.ts';
import { ModelProto } from '../model/onnx/schema.ts';
import { exportOnnx } from '../model/onnx/export.ts';
import { planModel } from '../model/plan.ts';
import { randomWeights } from '../model/random-weights.ts';
import { agreement, folderCalibrationSource, QualityGateError, quantizeArtifact, topK } from '../model/quantize.ts';
import { modelHash, readManifest } from '../model/weights.ts';
import { directoryCatalog, modelId } from '../pipeline/models.ts';
import { modelMarker } from '../pipeline/marker.ts';
import { estimateCosts, type BenchFile } from '../tiers/cost.ts';
import { parseTiers } from '../tiers/schema.ts';
import { arrangedArtifact, tempDir } from './support/fixtures.ts';
import { calibratedArtifact, writePatternDataset } from './support/shapes.ts';

const VARIANT = 'custom-w0.25-d0.25-r32';
const quiet = { log: () => {} };

async function opTypes(path: string): Promise<Set<string>> {
  const model = ModelProto.decode(await readFile(path)) as unknown as { graph: { node: { op_type: string }[] } };
  return new Set(model.graph.node.map((n) => n.op_type));
}

describe('agreement figures', () => {
  it('top-k, top-1 agreement and top-5 overlap', () => {
    assert.deepEqual(topK([0.1, 0.5, 0.2, 0.9, 0.3, 0, 0.05], 3), [3, 1, 4]);
    const ref = Float32Array.from([0.9, 0.05, 0.02, 0.01, 0.01, 0.01, /* image 2 */ 0.1, 0.6, 0.1, 0.1, 0.05, 0.05]);
    const cand = Float32Array.from([0.8, 0.1, 0.05, 0.03, 0.01, 0.01, /* image 2 */ 0.5, 0.2, 0.1, 0.1, 0.05, 0.05]);
    const a = agreement(ref, cand, 6);
    assert.equal(a.images, 2);
    assert.equal(a.top1, 0.5);
    assert.ok(a.top5Overlap > 0.7 && a.top5Overlap <= 1, String(a.top5Overlap));
  });
});

describe('weights quantize', () => {
  let images: string;
  before(async () => {
    images = await tempDir('effitag-q-images-');
    await writePatternDataset(images, { perLabel: 8, size: 64 });
  });

  it('refuses a model that disagrees with its float model, writes it only when forced, and records the figures', async () => {
    // Random weights (BatchNorm calibrated) with 1000 near-tied classes: int8 rounding flips many top-1s.
    const root = await tempDir('effitag-q-gate-');
    const float = join(root, 'float');
    await calibratedArtifact(float, VARIANT);
    const out = join(root, 'int8');
    const options = { weightsDir: float, source: folderCalibrationSource(images), out, threads: 1, ...quiet };
    await assert.rejects(quantizeArtifact(options), (err: unknown) => {
      assert.ok(err instanceof QualityGateError, String(err));
      assert.match(err.message, /refused: top-1 agreement .* below 99\.0 %/);
      assert.ok(err.record.agreement[0].top1 < 0.99);
      return true;
    });
    assert.equal(existsSync(out), false, 'nothing written below the gate');

    const forced = await quantizeArtifact({ ...options, force: true });
    const m = await readManifest(out);
    assert.equal(m.quantization?.forced, true);
    assert.equal(m.quantization?.agreement[0].top1, forced.record.agreement[0].top1);
    const paths = (await readdir(images, { recursive: true })).filter((p) => p.endsWith('.png'));
    assert.equal(m.quantization!.calibration.images + m.quantization!.calibration.heldOut, paths.length);
    assert.equal(m.quantization!.calibration.heldOut, Math.round(paths.length / 4));

    // The recorded disagreement is real: the two models, run by the engine on every image, differ.
    const decoded = await Promise.all(paths.map(async (p) => decodeImage(await readFile(join(images, p)), 32)));
    const engine = ortEngine({ threads: 1, ...quiet });
    const [f, q] = [await engine.load(float), await engine.load(out)];
    try {
      assert.match(q.description, /int8/);
      const [pf, pq] = [await f.classify(decoded), await q.classify(decoded)];
      const flat = (rows: Float32Array[]) => Float32Array.from(rows.flatMap((r) => Array.from(r)));
      assert.ok(agreement(flat(pf), flat(pq), 1000).top1 < 0.99);
    } finally {
      await f.dispose();
      await q.dispose();
    }
  });

  it('the CLI: refused below the gate (exit code, the figures, nothing written); --force writes and says so', async () => {
    const root = await tempDir('effitag-q-cli-');
    const float = join(root, 'float');
    await calibratedArtifact(float, VARIANT);
    const out = join(root, 'int8');
    const args = ['bin/effitag.js', 'weights', 'quantize', '--weights', float, '--calibrate', images, '--out', out, '--images', '24'];
    const refused = await promisify(execFile)(process.execPath, args).then(
      () => undefined,
      (err: { code: number; stderr: string }) => err,
    );
    assert.ok(refused, 'the command must fail');
    assert.notEqual(refused.code, 0);
    assert.match(refused.stderr, /int8 model refused: top-1 agreement .* on 6 held-out image\(s\)/);
    assert.equal(existsSync(out), false);
    const { stdout } = await promisify(execFile)(process.execPath, [...args, '--force']);
    assert.match(stdout, /top-1 agreement .* \(FORCED below the 99 % gate\)/);
    assert.equal((await readManifest(out)).quantization?.forced, true);
  });

  it('writes an int8 model that agrees: its own name, an int8 QDQ graph on ort, refused by tfjs', async () => {
    const root = await tempDir('effitag-q-pass-');
    const float = join(root, 'float');
    await arrangedArtifact(float, VARIANT, { 207: 6, 852: 5 });
    const out = join(root, 'int8');
    const r = await quantizeArtifact({ weightsDir: float, source: folderCalibrationSource(images), out, threads: 1, images: 20, ...quiet });
    assert.equal(r.record.forced, false);
    assert.deepEqual(r.record.agreement, [{ resolution: 32, images: 5, top1: 1, top5Overlap: 1 }]);
    const m = await readManifest(out);
    assert.equal(m.quantization?.ops, 'all');
    assert.equal(modelId(m), `${VARIANT}-int8`);
    assert.equal(m.sha256, (await readManifest(float)).sha256, 'the same float weights.bin');
    // Its marker names it and its ranges: re-quantizing the same float weights is a new model.
    assert.notEqual(modelHash(m), m.sha256);
    // A catalog folder b0-int8 (its manifest alone decides the marker): named, and hashed with its ranges.
    const b0 = { ...m, variant: 'b0' };
    await mkdir(join(root, 'catalog', 'b0-int8'), { recursive: true });
    await writeFile(join(root, 'catalog', 'b0-int8', 'manifest.json'), JSON.stringify(b0));
    assert.equal(directoryCatalog(join(root, 'catalog')).marker('b0-int8'), modelMarker('b0-int8', modelHash(b0)));
    const [first] = Object.keys(m.quantization!.ranges);
    const shifted = { ...m.quantization!, ranges: { ...m.quantization!.ranges, [first]: [-1, 1] as [number, number] } };
    assert.notEqual(modelHash({ ...m, quantization: shifted }), modelHash(m));

    const exported = await ensureOnnx(out);
    const ops = await opTypes(exported.path);
    assert.ok(ops.has('QuantizeLinear') && ops.has('DequantizeLinear'), [...ops].join(','));
    assert.notEqual(exported.path, (await ensureOnnx(float)).path, 'int8 and float exports cached apart');

    const model = await ortEngine({ threads: 1, ...quiet }).load(out);
    try {
      const [p] = await model.classify([
        await decodeImage(
          await readFile(join(images, (await readdir(images))[0], (await readdir(join(images, (await readdir(images))[0])))[0])),
          32,
        ),
      ]);
      assert.deepEqual(topK(p, 2), [207, 852]);
    } finally {
      await model.dispose();
    }
    await assert.rejects(tfjsEngine().load(out), /int8 model, which only the ort engine runs/);
    await assert.rejects(
      quantizeArtifact({ weightsDir: out, source: folderCalibrationSource(images), out: join(root, 'again'), ...quiet }),
      /already int8/,
    );
  });
});

describe('int8 weight range', () => {
  it('7-bit weights by default (no VPMADDUBSW saturation without VNNI), 8-bit on request; each its own model', async () => {
    const plan = planModel(VARIANT);
    const weights = randomWeights(plan, 7);
    const probes: string[] = [];
    exportOnnx(plan, weights, { probe: true }, probes);
    const ranges = Object.fromEntries(probes.map((p) => [p, [-3, 3] as [number, number]]));
    const maxWeight = (bits?: 7 | 8) => {
      const m = ModelProto.decode(
        exportOnnx(plan, weights, { layout: 'nchw', quantize: { ranges, ops: 'all', floatSqueezeExcite: false, weightBits: bits } }),
      ) as unknown as { graph: { initializer: { name: string; raw_data: Uint8Array }[] } };
      let max = 0;
      for (const t of m.graph.initializer.filter((i) => i.name.endsWith('/W_q')))
        for (const v of new Int8Array(t.raw_data.buffer, t.raw_data.byteOffset, t.raw_data.byteLength)) max = Math.max(max, Math.abs(v));
      return max;
    };
    assert.equal(maxWeight(7), 63);
    assert.equal(maxWeight(8), 127);
    assert.equal(maxWeight(), 127, 'a manifest without weightBits (the first int8 models) stays 8-bit');

    const root = await tempDir('effitag-q-bits-');
    const images = join(root, 'images');
    await writePatternDataset(images, { perLabel: 3, size: 40 });
    const float = join(root, 'float');
    await arrangedArtifact(float, VARIANT, { 207: 6, 852: 5 });
    const source = folderCalibrationSource(images);
    const seven = await quantizeArtifact({ weightsDir: float, source, out: join(root, 'w7'), threads: 1, ...quiet });
    const eight = await quantizeArtifact({ weightsDir: float, source, out: join(root, 'w8'), threads: 1, weightBits: 8, ...quiet });
    assert.equal(seven.record.weightBits, 7);
    assert.equal(eight.record.weightBits, 8);
    assert.notEqual(modelHash(seven.manifest), modelHash(eight.manifest), 'a different graph is a different model (marker)');
    assert.notEqual((await ensureOnnx(join(root, 'w7'))).path, (await ensureOnnx(join(root, 'w8'))).path);
  });
});

describe('tiers cost of an int8 tier', () => {
  /** Two tiers alike but for the model: b0 and its int8 model. */
  const tier = (model?: string) => ({
    variants: ['b0'],
    ...(model ? { model } : {}),
    compute: { target: 'lambda-cpu', memoryMb: 3538 },
    engine: 'ort',
    batchSize: 8,
  });
  const config = parseTiers({
    version: 1,
    tiers: { float: tier(), int8: tier('b0-int8') },
    routing: { default: { tier: 'float' }, rules: [] },
  });

  it('prices model NAME-int8 from the float row times the measured int8 ratio', () => {
    const bench: BenchFile = {
      machine: { cpus: 2 },
      rows: [{ engine: 'ort', variant: 'b0', batch: 8, imagesPerSecond: 100 }],
      int8: { rows: [{ variant: 'b0', int8OverFloat: 2 }] },
    };
    const rows = estimateCosts(config, bench).rows;
    const [f, q] = ['float', 'int8'].map((t) => rows.find((r) => r.tier === t)!);
    // No decode figures in this file: throughput is inference alone, so exactly twice.
    assert.ok(Math.abs(q.imagesPerSecond! / f.imagesPerSecond! - 2) < 1e-9, `${q.imagesPerSecond} vs ${f.imagesPerSecond}`);
    assert.match(q.throughputSource!, /int8, 2\.00× float/);
    assert.ok(q.dollarsPerMillion! < f.dollarsPerMillion!);
  });

  it('prefers the CPU-time ratio where the run measured one (wall time on a shared host is noisier)', () => {
    const bench: BenchFile = {
      machine: { cpus: 2 },
      rows: [{ engine: 'ort', variant: 'b0', batch: 8, imagesPerSecond: 100 }],
      int8: { rows: [{ variant: 'b0', int8OverFloat: 2, int8OverFloatCpu: 1.5 }] },
    };
    const rows = estimateCosts(config, bench).rows;
    const [f, q] = ['float', 'int8'].map((t) => rows.find((r) => r.tier === t)!);
    assert.ok(Math.abs(q.imagesPerSecond! / f.imagesPerSecond! - 1.5) < 1e-9, `${q.imagesPerSecond} vs ${f.imagesPerSecond}`);
  });
});

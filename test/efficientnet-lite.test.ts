/**
 * EfficientNet-Lite0–4 in the model library: the architecture from the V1 table (no squeeze-and-excite,
 * ReLU6, stem and head fixed, first and last stages' repeats fixed), the import of timm's
 * `tf_efficientnet_liteN` safetensors layout, the ONNX export (ReLU6 as Clip) and its int8 graph, in
 * which onnxruntime folds every ReLU6 into the quantized convolution.
 */
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import * as ort from 'onnxruntime-node';
import { decodeImage } from '../inference/image.ts';
import { ortEngine } from '../inference/ort-engine.ts';
import { tfjsEngine } from '../inference/tfjs-engine.ts';
import { topK } from '../inference/engine.ts';
import { variantInfo } from '../model/info.ts';
import { exportOnnx } from '../model/onnx/export.ts';
import { ModelProto } from '../model/onnx/schema.ts';
import { planModel, planWeights, type ModelPlan } from '../model/plan.ts';
import { folderCalibrationSource, quantizeArtifact } from '../model/quantize.ts';
import { randomWeights } from '../model/random-weights.ts';
import { decodeVariant, LIBRARY_VARIANTS, LITE_VARIANTS } from '../model/spec.ts';
import { importTimmWeights, parseSafetensors } from '../model/weights-timm.ts';
import { loadArtifact, planFor, writeArtifact } from '../model/weights.ts';
import { runEffitag } from './support/effitag-local.ts';
import { gradientImage, tempDir } from './support/fixtures.ts';
import { writePatternDataset } from './support/shapes.ts';

/**
 * Trainable parameters (PyTorch's count: no BatchNorm statistics) of the Lite variants as the same
 * architecture built from torchvision's classes counts them (scripts/reference-export/export.py
 * --variant liteN prints it), equal to timm's tf_efficientnet_liteN (4.652M, 5.417M, 6.092M, 8.197M,
 * 13.007M as published) — and multiply-adds as published (0.385, 0.600, 0.860, 1.383, 2.553 G).
 */
const LITE: Record<string, { trainable: number; total: number; blocks: number[]; resolution: number; gmacs: number }> = {
  lite0: { trainable: 4_652_008, total: 4_694_024, blocks: [1, 2, 2, 3, 3, 4, 1], resolution: 224, gmacs: 0.385 },
  lite1: { trainable: 5_416_680, total: 5_470_344, blocks: [1, 3, 3, 4, 4, 5, 1], resolution: 240, gmacs: 0.6 },
  lite2: { trainable: 6_092_072, total: 6_150_168, blocks: [1, 3, 3, 4, 4, 5, 1], resolution: 260, gmacs: 0.86 },
  lite3: { trainable: 8_197_096, total: 8_273_768, blocks: [1, 3, 3, 5, 5, 6, 1], resolution: 280, gmacs: 1.383 },
  lite4: { trainable: 13_006_568, total: 13_118_936, blocks: [1, 4, 4, 6, 6, 8, 1], resolution: 300, gmacs: 2.553 },
};

describe('EfficientNet-Lite architecture', () => {
  it('Lite0–4 are in the library under their names (efficientnet- prefix and case allowed)', () => {
    assert.deepEqual([...LITE_VARIANTS], Object.keys(LITE));
    for (const v of LITE_VARIANTS) assert.ok(LIBRARY_VARIANTS.includes(v), v);
    assert.equal(decodeVariant('EfficientNet-Lite3').variant, 'lite3');
    assert.equal(decodeVariant('efficientnet_lite0').family, 'lite');
    assert.throws(() => decodeVariant('lite5'), /unknown variant "lite5"; known: .*lite0, lite1, lite2, lite3, lite4/);
  });

  for (const [variant, want] of Object.entries(LITE)) {
    it(`${variant}: ${want.trainable} trainable parameters as the torchvision-built Lite and timm, ${want.gmacs} GMACs, blocks ${want.blocks.join('-')} at ${want.resolution} px`, () => {
      const info = variantInfo(variant);
      assert.equal(info.paramsTrainable, want.trainable);
      assert.equal(info.params, want.total);
      assert.deepEqual(info.blocksPerStage, want.blocks);
      assert.equal(info.resolution, want.resolution);
      assert.ok(Math.abs(info.macs / 1e9 - want.gmacs) < 0.0005, `${variant}: ${info.macs / 1e9} GMACs`);
    });
  }

  it('no squeeze-and-excite, ReLU6 everywhere, stem 32 and head 1280 at every width; the first stage reads the stem', () => {
    for (const variant of LITE_VARIANTS) {
      const plan = planModel(variant);
      const byName = new Map(plan.nodes.map((n) => [n.name, n]));
      assert.ok(!plan.nodes.some((n) => n.name.includes('_se_')), `${variant} has squeeze-and-excite`);
      const acts = plan.nodes.filter((n) => n.op === 'activation').map((n) => (n.op === 'activation' ? n.activation : ''));
      assert.ok(acts.length > 0 && acts.every((a) => a === 'relu6'), `${variant}: ${[...new Set(acts)].join(',')}`);
      const stem = byName.get('stem_conv')!,
        top = byName.get('top_conv')!;
      assert.equal(stem.op === 'conv' && stem.filters, 32, `${variant} stem`);
      assert.equal(top.op === 'conv' && top.filters, 1280, `${variant} head`);
      assert.equal(
        byName.get('block1a_dwconv')!.outShape.at(-1),
        32,
        `${variant}: block1a's depthwise conv runs on the stem's 32 channels`,
      );
    }
    // B4's width would make them 48 and 1792 (and B4 has squeeze-and-excite and swish).
    const b4 = planModel('b4');
    assert.equal(b4.nodes.find((n) => n.name === 'stem_conv')!.outShape.at(-1), 48);
    assert.equal(b4.nodes.find((n) => n.name === 'top_conv')!.outShape.at(-1), 1792);
  });

  it('preprocessing is the Lite builder’s (x − 127) / 128, inside the model', () => {
    const rescale = planModel('lite0').nodes.find((n) => n.name === 'rescaling')!;
    assert.ok(rescale.op === 'rescale');
    if (rescale.op === 'rescale') {
      assert.equal(0 * rescale.scale + rescale.offset, -127 / 128);
      assert.equal(255 * rescale.scale + rescale.offset, 1);
    }
    assert.ok(!planModel('lite0').nodes.some((n) => n.op === 'normalize'));
  });
});

// ---- timm layout ----------------------------------------------------------------------------------

/** Keras layout → timm (PyTorch) layout, written out index by index (the importer's inverse, independently). */
function toTimm(plan: ModelPlan, weights: ReadonlyMap<string, Float32Array>): Map<string, { shape: number[]; data: Float32Array }> {
  const out = new Map<string, { shape: number[]; data: Float32Array }>();
  const bn: Record<string, string> = { gamma: 'weight', beta: 'bias', moving_mean: 'running_mean', moving_variance: 'running_var' };
  const layers = new Set(plan.nodes.map((n) => n.name));
  const moduleOf = (layer: string) => {
    const fixed: Record<string, string> = {
      stem_conv: 'conv_stem',
      stem_bn: 'bn1',
      top_conv: 'conv_head',
      top_bn: 'bn2',
      predictions: 'classifier',
    };
    if (fixed[layer]) return fixed[layer];
    const [, s, l, part] = /^block(\d)([a-z])_(.+)$/.exec(layer)!;
    const ds = !layers.has(`block${s}${l}_expand_conv`);
    const map: Record<string, string> = ds
      ? { dwconv: 'conv_dw', bn: 'bn1', project_conv: 'conv_pw', project_bn: 'bn2' }
      : { expand_conv: 'conv_pw', expand_bn: 'bn1', dwconv: 'conv_dw', bn: 'bn2', project_conv: 'conv_pwl', project_bn: 'bn3' };
    return `blocks.${Number(s) - 1}.${'abcdefghij'.indexOf(l)}.${map[part]}`;
  };
  for (const node of plan.nodes) {
    for (const w of node.weights) {
      const v = weights.get(w.name)!;
      const param = w.name.split('/')[1].replace(':0', '');
      const m = moduleOf(node.name);
      if (node.op === 'bn') {
        out.set(`${m}.${bn[param]}`, { shape: [...w.shape], data: v });
        if (param === 'gamma') out.set(`${m}.num_batches_tracked`, { shape: [], data: new Float32Array(0) });
      } else if (param === 'bias') out.set(`${m}.bias`, { shape: [...w.shape], data: v });
      else if (node.op === 'dense') {
        const [i, o] = w.shape;
        const t = new Float32Array(v.length);
        for (let a = 0; a < o; a++) for (let b = 0; b < i; b++) t[a * i + b] = v[b * o + a];
        out.set(`${m}.weight`, { shape: [o, i], data: t });
      } else {
        const [kh, kw, ci, co] = w.shape;
        const t = new Float32Array(v.length);
        if (node.op === 'dwconv') {
          for (let c = 0; c < ci; c++)
            for (let h = 0; h < kh; h++) for (let x = 0; x < kw; x++) t[(c * kh + h) * kw + x] = v[(h * kw + x) * ci + c];
          out.set(`${m}.weight`, { shape: [ci, 1, kh, kw], data: t });
        } else {
          for (let o = 0; o < co; o++)
            for (let c = 0; c < ci; c++)
              for (let h = 0; h < kh; h++)
                for (let x = 0; x < kw; x++) t[((o * ci + c) * kh + h) * kw + x] = v[((h * kw + x) * ci + c) * co + o];
          out.set(`${m}.weight`, { shape: [co, ci, kh, kw], data: t });
        }
      }
    }
  }
  return out;
}

/** A safetensors file as PyTorch writes one (F32 tensors, I64 BatchNorm counters, `__metadata__`). */
function encodeSafetensors(tensors: ReadonlyMap<string, { shape: number[]; data: Float32Array }>): Uint8Array {
  const header: Record<string, unknown> = { __metadata__: { format: 'pt' } };
  const parts: Uint8Array[] = [];
  let offset = 0;
  for (const [name, t] of [...tensors].sort(([a], [b]) => (a < b ? -1 : 1))) {
    const counter = name.endsWith('num_batches_tracked');
    const bytes = counter
      ? new Uint8Array(new BigInt64Array([12345n]).buffer)
      : new Uint8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength);
    header[name] = { dtype: counter ? 'I64' : 'F32', shape: t.shape, data_offsets: [offset, offset + bytes.length] };
    parts.push(bytes);
    offset += bytes.length;
  }
  let json = new TextEncoder().encode(JSON.stringify(header));
  const pad = (8 - (json.length % 8)) % 8; // the format pads the header with spaces to 8 bytes
  json = new TextEncoder().encode(JSON.stringify(header) + ' '.repeat(pad));
  const out = new Uint8Array(8 + json.length + offset);
  new DataView(out.buffer).setBigUint64(0, BigInt(json.length), true);
  out.set(json, 8);
  let at = 8 + json.length;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

describe('timm-safetensors import (tf_efficientnet_liteN)', () => {
  for (const [variant, includeTop] of [
    ['lite0', true],
    ['lite4', false],
  ] as const) {
    it(`${variant}${includeTop ? '' : ' without top'}: every value of a timm-layout file lands where it is named, in Keras layout`, async () => {
      const dir = await tempDir('effitag-lite-');
      const plan = planModel(variant, { includeTop });
      const weights = randomWeights(plan, 21);
      const file = join(dir, 'model.safetensors');
      await writeFile(file, encodeSafetensors(toTimm(plan, weights)));
      const manifest = await importTimmWeights(file, { variant, out: join(dir, 'art') });
      assert.equal(manifest.variant, variant);
      assert.equal(manifest.includeTop, includeTop);
      assert.equal(manifest.source.kind, 'timm-safetensors');
      const artifact = await loadArtifact(join(dir, 'art'), variant);
      assert.equal(artifact.weights.size, planWeights(plan).length);
      for (const [name, values] of weights) assert.deepEqual(artifact.weights.get(name), values, name);
    });
  }

  it('refuses a file that does not fit, naming the tensor, and writes nothing', async () => {
    const dir = await tempDir('effitag-lite-bad-');
    const plan = planModel('lite0');
    const good = toTimm(plan, randomWeights(plan, 5));
    const attempt = async (tensors: Map<string, { shape: number[]; data: Float32Array }>, variant = 'lite0') => {
      const file = join(dir, `${Math.random()}.safetensors`);
      await writeFile(file, encodeSafetensors(tensors));
      const out = join(dir, `out-${Math.random()}`);
      const err = await importTimmWeights(file, { variant, out }).then(
        () => undefined,
        (e: Error) => e,
      );
      assert.ok(!existsSync(out), 'nothing written');
      return err?.message ?? 'no error';
    };
    const missing = new Map(good);
    missing.delete('blocks.3.1.conv_dw.weight');
    assert.match(
      await attempt(missing),
      /missing tensor blocks\.3\.1\.conv_dw\.weight \(expected shape \[480, 1, 3, 3\], for block4b_dwconv\/depthwise_kernel:0\)/,
    );
    const transposed = new Map(good);
    const head = good.get('conv_head.weight')!;
    transposed.set('conv_head.weight', { shape: [320, 1280, 1, 1], data: head.data });
    assert.match(await attempt(transposed), /tensor conv_head\.weight has shape \[320, 1280, 1, 1\], expected \[1280, 320, 1, 1\]/);
    const extra = new Map(good);
    extra.set('blocks.0.0.se.conv_reduce.weight', { shape: [8, 32, 1, 1], data: new Float32Array(256) });
    assert.match(await attempt(extra), /unexpected tensor blocks\.0\.0\.se\.conv_reduce\.weight/);
    // Lite1 has 3 blocks in stage 2: Lite0's file lacks them.
    assert.match(await attempt(good, 'lite1'), /does not fit lite1 .*missing tensor blocks\.1\.2\./s);
    assert.match(await attempt(good, 'b0'), /reads EfficientNet-Lite .*b0's official weights are Keras \.h5 files/);
    const notSafetensors = join(dir, 'x.safetensors');
    await writeFile(notSafetensors, Buffer.from('PK\x03\x04 a .pth zip, not safetensors'));
    await assert.rejects(
      importTimmWeights(notSafetensors, { variant: 'lite0', out: join(dir, 'z') }),
      /not a safetensors file \(header length/,
    );
    const bytes = encodeSafetensors(good);
    await writeFile(notSafetensors, bytes.subarray(0, bytes.length - 4));
    await assert.rejects(importTimmWeights(notSafetensors, { variant: 'lite0', out: join(dir, 'z') }), /does not hold .* values within/);
    assert.ok(!existsSync(join(dir, 'z')));
  });

  it('the CLI: weights import --timm writes the artifact; exactly one of --keras and --timm', async () => {
    const dir = await tempDir('effitag-lite-cli-');
    const plan = planModel('lite0', { includeTop: false });
    const file = join(dir, 'model.safetensors');
    await writeFile(file, encodeSafetensors(toTimm(plan, randomWeights(plan, 3))));
    const ok = await runEffitag(['weights', 'import', '--timm', file, '--variant', 'lite0', '--out', join(dir, 'art'), '--json']);
    assert.equal(ok.code, 0, ok.stderr);
    const { manifest } = JSON.parse(ok.stdout) as { manifest: { variant: string; includeTop: boolean; source: { kind: string } } };
    assert.deepEqual([manifest.variant, manifest.includeTop, manifest.source.kind], ['lite0', false, 'timm-safetensors']);
    const bad = await runEffitag(['weights', 'import', '--timm', file, '--keras', 'x.h5', '--variant', 'lite0', '--out', join(dir, 'no')]);
    assert.notEqual(bad.code, 0);
    assert.match(bad.stderr, /give exactly one of --keras <file\.h5> and --timm <file\.safetensors>/);
    assert.ok(!existsSync(join(dir, 'no')));
  });

  it('parseSafetensors reads a tensor’s values and shape (the header padded with spaces, as the format allows)', () => {
    const t = parseSafetensors(encodeSafetensors(new Map([['a', { shape: [2, 2], data: Float32Array.of(1, 2, 3, 4.5) }]])));
    assert.deepEqual([...t.get('a')!.data], [1, 2, 3, 4.5]);
    assert.deepEqual(t.get('a')!.shape, [2, 2]);
  });
});

// ---- export and int8 ------------------------------------------------------------------------------

const SIZE = 112;

const opCounts = (bytes: Uint8Array) => {
  const m = ModelProto.decode(bytes) as unknown as { graph: { node: { op_type: string }[] } };
  const c: Record<string, number> = {};
  for (const n of m.graph.node) c[n.op_type] = (c[n.op_type] ?? 0) + 1;
  return c;
};

describe('EfficientNet-Lite on the engines', () => {
  it(`lite0 at ${SIZE} px: the ONNX export (ReLU6 as Clip) gives tfjs' top-5 and probabilities within 1e-4`, async () => {
    const dir = await tempDir('effitag-lite-eq-');
    const plan = planModel('lite0', { resolution: SIZE });
    const weights = randomWeights(plan, 7);
    const kernel = weights.get('predictions/kernel:0')!;
    for (let i = 0; i < kernel.length; i++) kernel[i] *= 100;
    await writeArtifact(dir, plan, weights, { kind: 'random' });
    const ops = opCounts(exportOnnx(plan, weights, { layout: 'nchw' }));
    assert.equal(ops.Clip, 33, 'one Clip per ReLU6 (stem, 16 blocks × 2 but block1a × 1, head)');
    assert.equal(ops.Sigmoid, undefined, 'no swish, no squeeze-and-excite gate');
    const batch = await Promise.all(
      [0, 1, 2].map(async (i) => decodeImage(await gradientImage(130 + 17 * i, 100 + 9 * i, 'png', i), SIZE)),
    );
    const a = await ortEngine({ log: () => {} }).load(dir);
    const b = await tfjsEngine().load(dir);
    try {
      const [pa, pb] = [await a.classify(batch), await b.classify(batch)];
      const labels = Array.from({ length: 1000 }, (_, k) => String(k));
      for (let i = 0; i < batch.length; i++) {
        const top = topK(pa[i], 5, labels);
        assert.deepEqual(
          top.map((p) => p.index),
          topK(pb[i], 5, labels).map((p) => p.index),
        );
        assert.ok(top[0].probability > 0.01, `peaked (top-1 ${top[0].probability})`);
        let max = 0;
        for (let k = 0; k < 1000; k++) max = Math.max(max, Math.abs(pa[i][k] - pb[i][k]));
        assert.ok(max < 1e-4, `image ${i}: max |Δp| = ${max}`);
      }
    } finally {
      await a.dispose();
      await b.dispose();
    }
  });

  it('quantize: the int8 Lite graph is integer end to end on onnxruntime, every ReLU6 folded into its QLinearConv', async () => {
    const root = await tempDir('effitag-lite-q-');
    const plan = planModel('lite0', { resolution: 64 });
    await writeArtifact(join(root, 'float'), plan, randomWeights(plan, 2), { kind: 'random' });
    await writePatternDataset(join(root, 'images'), { perLabel: 3, size: 64 });
    const r = await quantizeArtifact({
      weightsDir: join(root, 'float'),
      source: folderCalibrationSource(join(root, 'images')),
      out: join(root, 'int8'),
      force: true,
      threads: 1,
      images: 20,
      log: () => {},
    });
    // The ranges are the ReLU6 outputs' (within [0, 6]), not the convolutions' raw outputs.
    const clipped = Object.entries(r.record.ranges).filter(([t]) => /_activation$/.test(t));
    assert.equal(clipped.length, 33);
    for (const [t, [lo, hi]] of clipped) assert.ok(lo >= 0 && hi <= 6, `${t}: [${lo}, ${hi}]`);
    const a = await loadArtifact(join(root, 'int8'));
    const q = a.manifest.quantization!;
    const bytes = exportOnnx(planFor(a.manifest), a.weights, {
      layout: 'nchw',
      quantize: { ranges: q.ranges, ops: q.ops, floatSqueezeExcite: q.floatSqueezeExcite, weightBits: q.weightBits },
    });
    const optimized = join(root, 'optimized.onnx');
    const session = await ort.InferenceSession.create(bytes, {
      graphOptimizationLevel: 'all',
      optimizedModelFilePath: optimized,
      logSeverityLevel: 3,
    });
    await session.release();
    const ops = opCounts(await readFile(optimized));
    assert.equal(ops.QLinearConv, 49, JSON.stringify(ops));
    assert.equal(ops.Clip, undefined, `a ReLU6 stayed float: ${JSON.stringify(ops)}`);
    assert.equal(ops.Conv, undefined, JSON.stringify(ops));
    assert.equal(ops.QuantizeLinear, 1, `one quantize at the input, none between layers: ${JSON.stringify(ops)}`);
    // And the engine runs it.
    const model = await ortEngine({ threads: 1, log: () => {} }).load(join(root, 'int8'));
    try {
      const [p] = await model.classify([await decodeImage(await gradientImage(80, 60, 'png', 1), 64)]);
      assert.equal(p.length, 1000);
      assert.ok(Math.abs(p.reduce((s, v) => s + v, 0) - 1) < 1e-3);
    } finally {
      await model.dispose();
    }
  });
});

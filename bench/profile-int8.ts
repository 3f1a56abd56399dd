/**
 * Where int8 time goes: onnxruntime's own profile of the float export and its int8 quantization (7-bit
 * and 8-bit weights) of one variant (default B0; random weights, ranges from synthetic JPEGs, as
 * `npm run bench -- int8` makes them), batch 8, 2 threads, 10 timed runs after 3 warm-ups; kernel time
 * per op type, convolutions split into dense (pointwise, stem, head), depthwise and squeeze-and-excite.
 * A diagnostic, not a benchmark suite: it prints and writes nothing under bench/results.
 *   node --import tsx bench/profile-int8.ts [variant]
 */
import { mkdtempSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as ort from 'onnxruntime-node';
import { decodeImage, toNchwBatch } from '../inference/image.ts';
import { exportOnnx, inputNormalization } from '../model/onnx/export.ts';
import { planModel } from '../model/plan.ts';
import { loadArtifact, planFor } from '../model/weights.ts';
import { syntheticJpeg } from './images.ts';
import { benchArtifacts, int8Graph } from './int8.ts';
import { int8CpuFeatures } from './util.ts';

const variant = process.argv[2] ?? 'b0';
const dir = mkdtempSync(join(tmpdir(), `effitag-profile-${variant}-`));
console.log(`int8 features: ${int8CpuFeatures().join(', ') || 'none found'}`);
const plan = planModel(variant);
const R = plan.resolution;
const jpegs = await Promise.all(Array.from({ length: 12 }, (_, i) => syntheticJpeg(640 + 32 * i, 480 + 16 * i, i + 1)));
const { floatDir, int8Dir } = await benchArtifacts(dir, variant, jpegs);
const f = await loadArtifact(floatDir);
const q = await loadArtifact(int8Dir);
const qp = planFor(q.manifest);
const variants: Record<string, Uint8Array> = {
  float: exportOnnx(planFor(f.manifest), f.weights, { layout: 'nchw' }),
  int8: int8Graph(q),
  int8w8: int8Graph(q, { weightBits: 8 }),
};
const images = await Promise.all(jpegs.slice(0, 8).map((j) => decodeImage(j, R)));
const norm = inputNormalization(qp, q.weights);
const input = toNchwBatch(images, norm.scale, norm.shift);
for (const [name, bytes] of Object.entries(variants)) {
  const path = join(dir, `${name}.onnx`);
  writeFileSync(path, bytes);
  const s = await ort.InferenceSession.create(path, {
    graphOptimizationLevel: 'all',
    intraOpNumThreads: 2,
    interOpNumThreads: 1,
    executionMode: 'sequential',
    enableProfiling: true,
    profileFilePrefix: join(dir, `${name}-prof`),
  });
  const feeds = { [s.inputNames[0]]: new ort.Tensor('float32', input, [8, 3, R, R]) };
  for (let i = 0; i < 3; i++) await s.run(feeds);
  const t0 = performance.now();
  for (let i = 0; i < 10; i++) await s.run(feeds);
  const ms = (performance.now() - t0) / 10 / 8;
  s.endProfiling();
  await s.release();
  const file = readdirSync(dir)
    .filter((x) => x.startsWith(`${name}-prof`))
    .sort()
    .at(-1)!;
  const events = JSON.parse(readFileSync(join(dir, file), 'utf8')) as {
    cat: string;
    name: string;
    dur: number;
    args?: { op_name?: string };
  }[];
  const byOp = new Map<string, number>();
  let total = 0;
  for (const e of events)
    if (e.cat === 'Node' && e.name.endsWith('_kernel_time')) {
      const op0 = e.args?.op_name ?? '?';
      const op = /Conv/.test(op0) ? `${op0} ${/dwconv/.test(e.name) ? 'depthwise' : /_se_/.test(e.name) ? 'SE' : 'dense'}` : op0;
      byOp.set(op, (byOp.get(op) ?? 0) + e.dur);
      total += e.dur;
    }
  console.log(`${name}: ${ms.toFixed(2)} ms/image; kernel time by op (13 runs, ms):`);
  for (const [op, d] of [...byOp].sort((a, b) => b[1] - a[1]))
    console.log(`  ${op.padEnd(28)} ${(d / 1000).toFixed(0).padStart(6)}  ${((100 * d) / total).toFixed(1)} %`);
}

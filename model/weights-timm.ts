/**
 * Import of EfficientNet-Lite weights in timm's layout (`tf_efficientnet_liteN`, a .safetensors file).
 *
 * The official Lite weights are TensorFlow checkpoints (tensorflow/tpu, efficientnet-liteN.tar.gz), whose
 * reader would be a hand-written parser of TF's undocumented tensor-bundle format. timm ports the same
 * checkpoints to PyTorch (`tf_efficientnet_lite0` … `lite4`, TF 'same' padding and BatchNorm ε 1e-3 kept)
 * and publishes them on the Hugging Face hub as safetensors: a documented format (an 8-byte little-endian
 * header length, a JSON table of name → dtype, shape, byte range, then the raw tensors) that this module
 * reads in full, checking every entry. Names are mapped from the plan (never by order), and layouts
 * converted: conv OIHW → HWIO, depthwise C×1×k×k → k×k×C×1, linear out×in → in×out; BatchNorm
 * weight/bias/running_mean/running_var → gamma/beta/moving_mean/moving_variance.
 */
import { readFile } from 'node:fs/promises';
import { planModel, planWeights, type ModelPlan } from './plan.ts';
import { decodeVariant } from './spec.ts';
import { validateAgainstPlan, writeArtifact, type WeightsManifest } from './weights.ts';

/** The layout's name, as the CLI (`weights import --timm`) and manifests (`source.kind`) say it. */
export const TIMM_LAYOUT = 'timm-safetensors';

/** Where a Lite variant's official weights are published (timm's port; no Keras .h5 exists for Lite). */
export const timmHubPage = (variant: string): string => `https://huggingface.co/timm/tf_efficientnet_${variant}.in1k`;

/**
 * How to make a Lite variant's artifact in DIR: what every "weights missing" hint says for Lite
 * (`weights fetch` knows Keras files only). Publish it afterwards like any artifact.
 */
export const timmImportHint = (variant: string, out: string): string =>
  `download model.safetensors from ${timmHubPage(variant)} and run npx effitag weights import --timm model.safetensors --variant ${variant} --out ${out}`;

export interface SafetensorsEntry {
  dtype: string;
  shape: number[];
  data: Float32Array;
}

const DTYPE_BYTES: Record<string, number> = { F32: 4, F64: 8, F16: 2, BF16: 2, I64: 8, I32: 4, I16: 2, I8: 1, U8: 1, BOOL: 1 };

/**
 * Parse a safetensors file. Float tensors (F32, F64) come back as Float32Array; others (timm's
 * `num_batches_tracked` counters are I64) are listed with an empty array, as the importer ignores them.
 */
export function parseSafetensors(bytes: Uint8Array, where = 'safetensors file'): Map<string, SafetensorsEntry> {
  const fail = (msg: string): never => {
    throw new Error(`${where}: not a safetensors file (${msg})`);
  };
  if (bytes.length < 8) fail('shorter than its 8-byte header length');
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const headerLength = Number(view.getBigUint64(0, true));
  if (headerLength < 2 || 8 + headerLength > bytes.length) fail(`header length ${headerLength} does not fit ${bytes.length} bytes`);
  let header: Record<string, unknown>;
  try {
    header = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(bytes.subarray(8, 8 + headerLength)));
  } catch (err) {
    return fail(`header is not JSON: ${(err as Error).message}`);
  }
  if (!header || typeof header !== 'object' || Array.isArray(header)) fail('header is not a JSON object');
  const dataStart = 8 + headerLength;
  const dataLength = bytes.length - dataStart;
  const out = new Map<string, SafetensorsEntry>();
  for (const [name, raw] of Object.entries(header)) {
    if (name === '__metadata__') continue;
    const e = raw as { dtype?: unknown; shape?: unknown; data_offsets?: unknown };
    const shape = e.shape,
      offsets = e.data_offsets,
      dtype = e.dtype;
    if (typeof dtype !== 'string' || !(dtype in DTYPE_BYTES)) fail(`${name}: unknown dtype ${JSON.stringify(dtype)}`);
    if (!Array.isArray(shape) || !shape.every((d) => Number.isInteger(d) && d >= 0)) fail(`${name}: bad shape`);
    if (!Array.isArray(offsets) || offsets.length !== 2 || !offsets.every((d) => Number.isInteger(d) && d >= 0))
      fail(`${name}: bad data_offsets`);
    const [begin, end] = offsets as [number, number];
    const count = (shape as number[]).reduce((a, b) => a * b, 1);
    if (end < begin || end > dataLength || end - begin !== count * DTYPE_BYTES[dtype as string])
      fail(`${name}: byte range [${begin}, ${end}) does not hold ${count} ${dtype} values within ${dataLength} data bytes`);
    // Copied into aligned buffers (the file's offsets need not be multiples of 4 or 8), little-endian as the format says.
    const stored = bytes.subarray(dataStart + begin, dataStart + end);
    let data = new Float32Array(0);
    if (dtype === 'F32') {
      data = new Float32Array(count);
      new Uint8Array(data.buffer).set(stored);
    } else if (dtype === 'F64') {
      const wide = new Float64Array(count);
      new Uint8Array(wide.buffer).set(stored);
      data = Float32Array.from(wide);
    }
    out.set(name, { dtype: dtype as string, shape: shape as number[], data });
  }
  return out;
}

type Transform = 'conv' | 'depthwise' | 'dense' | 'none';

/**
 * Keras weight name → timm tensor name and the layout conversion, for every weight of a Lite plan.
 * timm's blocks: `blocks.<stage>.<block>`; a block without expansion (DepthwiseSeparableConv) is
 * conv_dw, bn1, conv_pw, bn2; with expansion (InvertedResidual) conv_pw, bn1, conv_dw, bn2, conv_pwl, bn3.
 */
export function timmNames(plan: ModelPlan): Map<string, { timm: string; transform: Transform }> {
  const layers = new Set(plan.nodes.map((n) => n.name));
  const module = (layer: string): string => {
    const fixed: Record<string, string> = {
      stem_conv: 'conv_stem',
      stem_bn: 'bn1',
      top_conv: 'conv_head',
      top_bn: 'bn2',
      predictions: 'classifier',
    };
    if (fixed[layer]) return fixed[layer];
    const m = /^block(\d+)([a-z])_(.+)$/.exec(layer);
    if (!m) throw new Error(`no timm name for layer ${layer}`);
    const [, stage, letter, part] = m;
    const expands = layers.has(`block${stage}${letter}_expand_conv`);
    const parts: Record<string, string> = expands
      ? { expand_conv: 'conv_pw', expand_bn: 'bn1', dwconv: 'conv_dw', bn: 'bn2', project_conv: 'conv_pwl', project_bn: 'bn3' }
      : { dwconv: 'conv_dw', bn: 'bn1', project_conv: 'conv_pw', project_bn: 'bn2' };
    if (!parts[part]) throw new Error(`no timm name for layer ${layer}`);
    return `blocks.${Number(stage) - 1}.${letter.charCodeAt(0) - 97}.${parts[part]}`;
  };
  const bnParam: Record<string, string> = { gamma: 'weight', beta: 'bias', moving_mean: 'running_mean', moving_variance: 'running_var' };
  const out = new Map<string, { timm: string; transform: Transform }>();
  for (const node of plan.nodes) {
    for (const w of node.weights) {
      const param = w.name.slice(node.name.length + 1, -2); // `layer/param:0`
      const base = module(node.name);
      if (node.op === 'bn') out.set(w.name, { timm: `${base}.${bnParam[param]}`, transform: 'none' });
      else if (param === 'bias') out.set(w.name, { timm: `${base}.bias`, transform: 'none' });
      else if (node.op === 'dwconv') out.set(w.name, { timm: `${base}.weight`, transform: 'depthwise' });
      else if (node.op === 'dense') out.set(w.name, { timm: `${base}.weight`, transform: 'dense' });
      else if (node.op === 'conv') out.set(w.name, { timm: `${base}.weight`, transform: 'conv' });
      else throw new Error(`no timm name for weight ${w.name}`);
    }
  }
  return out;
}

/** The timm (PyTorch) shape of a Keras-shaped weight. */
export function timmShape(kerasShape: readonly number[], transform: Transform): number[] {
  if (transform === 'conv') return [kerasShape[3], kerasShape[2], kerasShape[0], kerasShape[1]];
  if (transform === 'depthwise') return [kerasShape[2], 1, kerasShape[0], kerasShape[1]];
  if (transform === 'dense') return [kerasShape[1], kerasShape[0]];
  return [...kerasShape];
}

/** PyTorch layout (data in `timmShape`) → Keras layout (data in `kerasShape`). */
export function fromTimm(data: Float32Array, kerasShape: readonly number[], transform: Transform): Float32Array {
  if (transform === 'none') return data;
  const out = new Float32Array(data.length);
  if (transform === 'dense') {
    const [cin, cout] = kerasShape;
    for (let o = 0; o < cout; o++) for (let i = 0; i < cin; i++) out[i * cout + o] = data[o * cin + i];
    return out;
  }
  const [kh, kw, ci, co] = kerasShape; // depthwise: co = 1, ci = channels
  for (let o = 0; o < co; o++)
    for (let i = 0; i < ci; i++)
      for (let h = 0; h < kh; h++)
        for (let w = 0; w < kw; w++) {
          const src = transform === 'conv' ? ((o * ci + i) * kh + h) * kw + w : (i * kh + h) * kw + w;
          out[((h * kw + w) * ci + i) * co + o] = data[src];
        }
  return out;
}

/** PyTorch num_batches_tracked counters: training state, not weights. */
const IGNORED = /\.num_batches_tracked$/;

export interface TimmImportOptions {
  variant: string;
  out: string;
  source?: Partial<WeightsManifest['source']>;
}

/** Read a timm-layout safetensors file into named Keras-layout weights that fit a Lite plan (top or not). */
export function timmWeights(
  tensors: ReadonlyMap<string, SafetensorsEntry>,
  variant: string,
  where: string,
): { plan: ModelPlan; weights: Map<string, Float32Array> } {
  const spec = decodeVariant(variant);
  if (spec.family !== 'lite')
    throw new Error(
      `the ${TIMM_LAYOUT} import reads EfficientNet-Lite (lite0…lite4); ${spec.variant}'s official weights are Keras .h5 files (weights import --keras)`,
    );
  const classifier = tensors.get('classifier.weight');
  const includeTop = classifier !== undefined;
  const plan = planModel(spec, { includeTop, classes: classifier?.shape[0] ?? 1000, pooling: 'avg' });
  const names = timmNames(plan);
  const wanted = new Set([...names.values()].map((n) => n.timm));
  const problems: string[] = [];
  for (const [name, t] of tensors) {
    if (IGNORED.test(name)) continue;
    if (!wanted.has(name)) problems.push(`unexpected tensor ${name}`);
    else if (t.dtype !== 'F32' && t.dtype !== 'F64') problems.push(`tensor ${name} is ${t.dtype}; float32 expected`);
  }
  const weights = new Map<string, Float32Array>();
  const shapes = new Map<string, { shape: number[] }>();
  for (const w of planWeights(plan)) {
    const { timm, transform } = names.get(w.name)!;
    const t = tensors.get(timm);
    const expected = timmShape(w.shape, transform);
    if (!t) {
      problems.push(`missing tensor ${timm} (expected shape [${expected.join(', ')}], for ${w.name})`);
      continue;
    }
    if (t.shape.length !== expected.length || t.shape.some((d, i) => d !== expected[i])) {
      problems.push(`tensor ${timm} has shape [${t.shape.join(', ')}], expected [${expected.join(', ')}] (${spec.variant})`);
      continue;
    }
    weights.set(w.name, fromTimm(t.data, w.shape, transform));
    shapes.set(w.name, { shape: [...w.shape] });
  }
  if (problems.length) {
    const shown = problems.slice(0, 10).join('\n  ');
    throw new Error(
      `${where} does not fit ${spec.variant} in ${TIMM_LAYOUT} layout:\n  ${shown}${problems.length > 10 ? `\n  … and ${problems.length - 10} more` : ''}`,
    );
  }
  validateAgainstPlan(plan, shapes, where);
  return { plan, weights };
}

/** Import a timm `tf_efficientnet_liteN` .safetensors file into an artifact. Nothing is written unless every tensor fits. */
export async function importTimmWeights(file: string, options: TimmImportOptions): Promise<WeightsManifest> {
  const { plan, weights } = timmWeights(parseSafetensors(await readFile(file), file), options.variant, file);
  return writeArtifact(options.out, plan, weights, { kind: TIMM_LAYOUT, file, ...options.source });
}

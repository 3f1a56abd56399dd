/**
 * EffiTag's weights artifact and the import of official Keras weights into it.
 *
 * An artifact is a directory with `manifest.json` (variant, top/classes, source, tensor table) and
 * `weights.bin` (float32 little-endian, tensors back to back in plan order). Its identity is the
 * SHA-256 of `weights.bin`, recorded in the manifest and checked on every load; exported ONNX graphs
 * are cached beside it under that hash. Loading is one file read and zero-copy views.
 */
import { createHash } from 'node:crypto';
import { mkdir, readFile, rename, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { planModel, planWeights, type ModelPlan, type Pooling } from './plan.ts';
import { IMAGENET_STD, decodeVariant, isVariantName } from './spec.ts';

export const ARTIFACT_FORMAT = 'effitag-weights/1';

export interface TensorEntry {
  name: string;
  shape: number[];
  /** Offset in float32 elements into weights.bin. */
  offset: number;
}

export interface WeightsManifest {
  format: typeof ARTIFACT_FORMAT;
  variant: string;
  includeTop: boolean;
  classes: number;
  pooling: Pooling;
  resolution: number;
  sha256: string;
  bytes: number;
  createdAt: string;
  source: {
    kind: 'keras-h5' | 'timm-safetensors' | 'random' | 'trained' | 'other';
    file?: string;
    md5?: string;
    url?: string;
    note?: string;
  };
  /** Present on a model trained on a user's own labels (`effitag train`). */
  custom?: CustomModelRecord;
  /** Present on an int8 model (`effitag weights quantize`): the onnxruntime engine runs its QDQ export. */
  quantization?: QuantizationRecord;
  tensors: TensorEntry[];
}

/** How an int8 artifact was made and how closely it agrees with its float model. */
export interface QuantizationRecord {
  scheme: 'int8-qdq';
  /** The float artifact's weights hash (weights.bin is the same float file; the ranges make it int8). */
  floatSha256: string;
  ops: 'conv' | 'all';
  floatSqueezeExcite: boolean;
  /** 7: weights in [-63, 63] (no VPMADDUBSW saturation on CPUs without VNNI); absent or 8: [-127, 127]. */
  weightBits?: 7 | 8;
  /** Calibrated [min, max] per tensor a quantized convolution reads or writes. */
  ranges: Record<string, [number, number]>;
  calibration: { images: number; heldOut: number; skipped: number; dataSha256: string };
  /** On the held-out images: top-1 agreement and mean top-5 overlap with the float model, per resolution. */
  agreement: { resolution: number; images: number; top1: number; top5Overlap: number }[];
  forced: boolean;
}

/** What a custom model is, and how it came to be: enough to reproduce and to judge it. */
export interface CustomModelRecord {
  /** The name tiers use (`model: NAME`); never a variant name. */
  name: string;
  /** Class index → label, as the tags say them. */
  labels: string[];
  /** The artifact it was fine-tuned from (variant and weights hash), or `scratch`. */
  base: { variant: string; sha256?: string };
  /** SHA-256 over the training images' paths and contents, in order. */
  dataSha256: string;
  images: { train: number; val: number; skipped: number };
  /** One entry per phase and stage, in order. */
  stages: { phase: string; resolution: number; epochs: number; valAccuracy: number; seconds: number }[];
  metrics: { valAccuracy: number; perClass: { label: string; precision: number; recall: number; support: number }[] };
  backend: string;
}

export interface WeightsArtifact {
  dir: string;
  manifest: WeightsManifest;
  weights: Map<string, Float32Array>;
}

const sha256 = (buf: Uint8Array) => createHash('sha256').update(buf).digest('hex');

/**
 * What a model marker names: the weights' hash, and for an int8 model also its quantization (it
 * shares the float weights.bin, so re-quantizing with other ranges must read as a new model).
 */
export function modelHash(manifest: Pick<WeightsManifest, 'sha256' | 'quantization'>): string {
  const q = manifest.quantization;
  // weightBits only when 7, so the first int8 models (8-bit, no field) keep their markers.
  const bits = q?.weightBits === 7 ? [7] : [];
  return q ? sha256(Buffer.from(JSON.stringify([manifest.sha256, q.ops, q.floatSqueezeExcite, q.ranges, ...bits]))) : manifest.sha256;
}

/** The plan a manifest describes. */
export function planFor(manifest: Pick<WeightsManifest, 'variant' | 'includeTop' | 'classes' | 'pooling' | 'resolution'>): ModelPlan {
  return planModel(manifest.variant, {
    includeTop: manifest.includeTop,
    classes: manifest.classes || 1000,
    pooling: manifest.pooling,
    resolution: manifest.resolution,
  });
}

/** Check a set of named weights against a plan: every weight present with its exact shape, nothing extra. */
export function validateAgainstPlan(plan: ModelPlan, weights: ReadonlyMap<string, { shape: readonly number[] }>, where = 'weights'): void {
  const problems: string[] = [];
  const expected = planWeights(plan);
  const names = new Set(expected.map((w) => w.name));
  for (const w of expected) {
    const got = weights.get(w.name);
    if (!got) problems.push(`missing weight ${w.name} (expected shape [${w.shape.join(', ')}])`);
    else if (got.shape.length !== w.shape.length || got.shape.some((d, i) => d !== w.shape[i])) {
      problems.push(`weight ${w.name} has shape [${got.shape.join(', ')}], expected [${w.shape.join(', ')}]`);
    }
  }
  for (const name of weights.keys()) if (!names.has(name)) problems.push(`unexpected weight ${name}`);
  if (problems.length) {
    const shown = problems.slice(0, 10).join('\n  ');
    throw new Error(
      `${where} do not fit ${plan.spec.variant}${plan.includeTop ? '' : ' (no top)'}:\n  ${shown}${problems.length > 10 ? `\n  … and ${problems.length - 10} more` : ''}`,
    );
  }
}

/** Write an artifact from named weights that fit `plan`. Returns its manifest. */
export async function writeArtifact(
  dir: string,
  plan: ModelPlan,
  weights: ReadonlyMap<string, Float32Array>,
  source: WeightsManifest['source'],
  custom?: CustomModelRecord,
  quantization?: QuantizationRecord,
): Promise<WeightsManifest> {
  const specs = planWeights(plan);
  const known = new Set(specs.map((w) => w.name));
  const unexpected = [...weights.keys()].filter((n) => !known.has(n));
  if (unexpected.length) throw new Error(`unexpected weight ${unexpected[0]} for ${plan.spec.variant}`);
  const total = specs.reduce((s, w) => s + w.shape.reduce((a, b) => a * b, 1), 0);
  const all = new Float32Array(total);
  const tensors: TensorEntry[] = [];
  let offset = 0;
  for (const w of specs) {
    const data = weights.get(w.name);
    if (!data) throw new Error(`missing weight ${w.name} (expected shape [${w.shape.join(', ')}])`);
    const size = w.shape.reduce((a, b) => a * b, 1);
    if (data.length !== size)
      throw new Error(`weight ${w.name} has ${data.length} values, expected ${size} for shape [${w.shape.join(', ')}]`);
    all.set(data, offset);
    tensors.push({ name: w.name, shape: [...w.shape], offset });
    offset += size;
  }
  const bytes = new Uint8Array(all.buffer);
  const manifest: WeightsManifest = {
    format: ARTIFACT_FORMAT,
    variant: plan.spec.variant,
    includeTop: plan.includeTop,
    classes: plan.classes,
    pooling: plan.pooling,
    resolution: plan.resolution,
    sha256: sha256(bytes),
    bytes: bytes.length,
    createdAt: new Date().toISOString(),
    source,
    ...(custom ? { custom } : {}),
    ...(quantization ? { quantization } : {}),
    tensors,
  };
  await mkdir(dir, { recursive: true });
  // Write both files under temporary names, then rename: a crash never leaves a half artifact.
  await writeFile(join(dir, 'weights.bin.tmp'), bytes);
  await writeFile(join(dir, 'manifest.json.tmp'), `${JSON.stringify(manifest, null, 1)}\n`);
  await rename(join(dir, 'weights.bin.tmp'), join(dir, 'weights.bin'));
  await rename(join(dir, 'manifest.json.tmp'), join(dir, 'manifest.json'));
  return manifest;
}

export async function readManifest(dir: string): Promise<WeightsManifest> {
  let text: string;
  try {
    text = await readFile(join(dir, 'manifest.json'), 'utf8');
  } catch {
    throw new Error(
      `${dir}: no weights artifact here (manifest.json missing); create one with 'effitag weights import' or 'effitag weights fetch'`,
    );
  }
  const manifest = JSON.parse(text) as WeightsManifest;
  if (manifest.format !== ARTIFACT_FORMAT) throw new Error(`${dir}: unknown artifact format ${String(manifest.format)}`);
  return manifest;
}

/**
 * Load an artifact, verifying its content hash. `expect` (a variant, or a custom model's name) guards
 * against mixing up directories.
 */
export async function loadArtifact(dir: string, expect?: string): Promise<WeightsArtifact> {
  const manifest = await readManifest(dir);
  if (expect) {
    const [wanted, held] = isVariantName(expect)
      ? [decodeVariant(expect).variant, manifest.variant]
      : [
          expect,
          manifest.custom || manifest.quantization
            ? `${manifest.custom?.name ?? manifest.variant}${manifest.quantization ? '-int8' : ''}`
            : `${manifest.variant} (ImageNet)`,
        ];
    if (wanted !== held) throw new Error(`${dir} holds weights for ${held}, not ${wanted}`);
  }
  const buf = await readFile(join(dir, 'weights.bin'));
  if (buf.length !== manifest.bytes || sha256(buf) !== manifest.sha256) {
    throw new Error(`${dir}/weights.bin does not match its manifest hash (corrupt or partially written); re-import the weights`);
  }
  // Copy into an aligned buffer once; every tensor is then a view.
  const all = new Float32Array(buf.buffer.slice(buf.byteOffset, buf.byteOffset + buf.byteLength));
  const weights = new Map<string, Float32Array>();
  for (const t of manifest.tensors) {
    weights.set(t.name, all.subarray(t.offset, t.offset + t.shape.reduce((a, b) => a * b, 1)));
  }
  return { dir, manifest, weights };
}

export type NormalizationMode = 'auto' | 'std-as-variance' | 'variance';

export interface ImportOptions {
  variant: string;
  out: string;
  /** How the V1 `normalization/variance:0` is to be read. 'auto' recognises the published files. */
  normalization?: NormalizationMode;
  source?: Partial<WeightsManifest['source']>;
}

/**
 * Import an official Keras .h5 (V1 or V2, with or without top) into an artifact.
 *
 * V1 quirk: the published V1 files store the ImageNet *std* as the Normalization *variance*
 * (Keras compensates with an extra Rescaling(1/sqrt(std)) when it loads ImageNet weights). The
 * importer stores the true variance (std²) instead, so the model computes (x/255 − mean)/std with a
 * single Normalization layer. 'auto' applies this when the stored variance equals the ImageNet std.
 */
export async function importKerasWeights(file: string, options: ImportOptions): Promise<WeightsManifest> {
  // Loaded on demand: the HDF5 reader (wasm) is only needed here, not by the deployed workers.
  const { readKerasWeights } = await import('./keras-h5.ts');
  const h5 = await readKerasWeights(file);
  const includeTop = h5.weights.has('predictions/kernel:0');
  const classes = includeTop ? h5.weights.get('predictions/kernel:0')!.shape[1] : 0;
  const plan = planModel(options.variant, { includeTop, classes: classes || 1000, pooling: 'avg' });
  validateAgainstPlan(plan, h5.weights, file);

  const weights = new Map<string, Float32Array>([...h5.weights].map(([k, v]) => [k, v.data]));
  let note: string | undefined;
  const variance = weights.get('normalization/variance:0');
  if (variance) {
    const mode = options.normalization ?? 'auto';
    const looksLikeStd = IMAGENET_STD.every((s, i) => Math.abs(variance[i] - s) < 1e-5);
    if (mode === 'std-as-variance' || (mode === 'auto' && looksLikeStd)) {
      weights.set(
        'normalization/variance:0',
        variance.map((s) => s * s),
      );
      note = 'normalization/variance:0 stored the ImageNet std (published V1 quirk); squared on import';
    }
  }
  return writeArtifact(options.out, plan, weights, {
    kind: 'keras-h5',
    file,
    ...options.source,
    ...(note ? { note } : {}),
  });
}

/**
 * Exported ONNX graphs are cached beside the weights artifact, keyed by the artifact's content hash
 * and the exporter version: `<weights dir>/onnx/<sha256[0:16]>-x<version>-r<resolution>.onnx`.
 * Where the weights directory is read-only (a Lambda layer, a read-only mount), the cache directory
 * is used instead.
 */
import { createHash } from 'node:crypto';
import { mkdir, rename, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { cacheDir } from '../weights-fetch.ts';
import { loadArtifact, planFor, type WeightsManifest } from '../weights.ts';
import { EXPORTER_VERSION, exportOnnx, inputNormalization, type ExportOptions } from './export.ts';

/** The graph input: raw NHWC pixels (tfjs's, the default) or normalised NCHW ones (the engine's: inference/image.ts toNchwBatch). */
export type OnnxLayout = NonNullable<ExportOptions['layout']>;

export function onnxFileName(manifest: WeightsManifest, layout: OnnxLayout = 'nhwc'): string {
  // An int8 artifact shares its float weights.bin hash: its ranges name its export apart.
  const q = manifest.quantization
    ? `-q${createHash('sha256')
        .update(
          JSON.stringify([
            manifest.quantization.ops,
            manifest.quantization.floatSqueezeExcite,
            manifest.quantization.ranges,
            ...(manifest.quantization.weightBits === 7 ? [7] : []),
          ]),
        )
        .digest('hex')
        .slice(0, 12)}`
    : '';
  // -nchw: the engine's export, which takes NCHW pixels (ortEngine); without it, NHWC (export-onnx, training, parity).
  return `${manifest.sha256.slice(0, 16)}-x${EXPORTER_VERSION}-r${manifest.resolution}${q}${layout === 'nchw' ? '-nchw' : ''}.onnx`;
}

const exists = (p: string) =>
  stat(p).then(
    (s) => s.size > 0,
    () => false,
  );

export interface ExportResult {
  path: string;
  cached: boolean;
  manifest: WeightsManifest;
  /** What the graph takes: its layout and, for 'nchw', the per-channel x·scale + shift the caller applies to raw pixels. */
  input: { layout: OnnxLayout; scale: number[]; shift: number[] };
}

/** The ONNX graph for an artifact: reuse a cached export or write one. `out` forces a location. */
export async function ensureOnnx(
  weightsDir: string,
  options: { variant?: string; out?: string; layout?: OnnxLayout } = {},
): Promise<ExportResult> {
  const artifact = await loadArtifact(weightsDir, options.variant);
  const layout = options.layout ?? 'nhwc';
  const name = onnxFileName(artifact.manifest, layout);
  const plan = planFor(artifact.manifest);
  const { scale, shift } = layout === 'nchw' ? inputNormalization(plan, artifact.weights) : { scale: [1, 1, 1], shift: [0, 0, 0] };
  const input = { layout, scale, shift };
  const candidates = options.out ? [options.out] : [join(weightsDir, 'onnx', name), join(cacheDir(), 'onnx', name)];
  for (const path of candidates) if (await exists(path)) return { path, cached: true, manifest: artifact.manifest, input };

  const bytes = exportOnnx(plan, artifact.weights, {
    layout,
    metadata: { weights_sha256: artifact.manifest.sha256, source: artifact.manifest.source.kind },
    quantize: artifact.manifest.quantization
      ? {
          ranges: artifact.manifest.quantization.ranges,
          ops: artifact.manifest.quantization.ops,
          floatSqueezeExcite: artifact.manifest.quantization.floatSqueezeExcite,
          weightBits: artifact.manifest.quantization.weightBits,
        }
      : undefined,
  });
  let lastError: unknown;
  for (const path of candidates) {
    try {
      await mkdir(join(path, '..'), { recursive: true });
      const tmp = `${path}.${process.pid}.tmp`;
      await writeFile(tmp, bytes);
      await rename(tmp, path);
      return { path, cached: false, manifest: artifact.manifest, input };
    } catch (err) {
      lastError = err; // read-only location: try the next one
    }
  }
  throw new Error(`cannot write the ONNX export anywhere (${candidates.join(', ')}): ${String(lastError)}`);
}

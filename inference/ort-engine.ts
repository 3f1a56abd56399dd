/**
 * The onnxruntime engine: the exported ONNX graph on onnxruntime-node. CPU execution provider with
 * intra-op threads = cores and full graph optimisation; the CUDA provider first when its library is
 * installed (the GPU image opts into it; the root install skips that download).
 */
import { existsSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import * as ort from 'onnxruntime-node';
import { ensureOnnx } from '../model/onnx/cache.ts';
import type { Engine, LoadedModel } from './engine.ts';
import { toBatch } from './image.ts';

function cudaInstalled(): boolean {
  try {
    const pkg = dirname(createRequire(import.meta.url).resolve('onnxruntime-node/package.json'));
    return existsSync(join(pkg, 'bin', 'napi-v6', process.platform, process.arch, 'libonnxruntime_providers_cuda.so'));
  } catch {
    return false;
  }
}

export interface OrtOptions {
  /** Intra-op threads; default: all available cores. */
  threads?: number;
  /** 'auto' uses CUDA when installed; 'cpu' forces the CPU provider. */
  provider?: 'auto' | 'cpu' | 'cuda';
  log?: (msg: string) => void;
}

export function ortEngine(options: OrtOptions = {}): Engine {
  const log = options.log ?? ((m: string) => process.stderr.write(`${m}\n`));
  return {
    name: 'ort',
    async load(weightsDir, { variant } = {}): Promise<LoadedModel> {
      const exported = await ensureOnnx(weightsDir, { variant });
      const { manifest } = exported;
      if (!manifest.includeTop) throw new Error(`${weightsDir}: weights without a classifier top cannot tag images`);
      const threads = options.threads ?? availableParallelism();
      const wantCuda = options.provider === 'cuda' || ((options.provider ?? 'auto') === 'auto' && cudaInstalled());
      const base: ort.InferenceSession.SessionOptions = {
        graphOptimizationLevel: 'all', intraOpNumThreads: threads, interOpNumThreads: 1, executionMode: 'sequential',
      };
      let session: ort.InferenceSession;
      let provider = 'cpu';
      if (wantCuda) {
        try {
          session = await ort.InferenceSession.create(exported.path, { ...base, executionProviders: ['cuda', 'cpu'] });
          provider = 'cuda';
        } catch (err) {
          if (options.provider === 'cuda') throw err;
          log(`onnxruntime: CUDA provider unavailable (${err instanceof Error ? err.message.split('\n')[0] : String(err)}); using CPU`);
          session = await ort.InferenceSession.create(exported.path, { ...base, executionProviders: ['cpu'] });
        }
      } else {
        session = await ort.InferenceSession.create(exported.path, { ...base, executionProviders: ['cpu'] });
      }
      log(`onnxruntime: ${provider} provider, ${threads} intra-op threads, ${exported.cached ? 'cached' : 'fresh'} export ${exported.path}`);
      const { resolution, classes } = manifest;
      return {
        description: `ort (${provider})`,
        variant: manifest.variant,
        resolution,
        manifest,
        async classify(images) {
          if (images.length === 0) return [];
          const input = new ort.Tensor('float32', toBatch(images), [images.length, resolution, resolution, 3]);
          const result = await session.run({ images: input });
          const data = result.probabilities.data as Float32Array;
          return images.map((_, i) => data.slice(i * classes, (i + 1) * classes));
        },
        async dispose() {
          await session.release();
        },
      };
    },
  };
}

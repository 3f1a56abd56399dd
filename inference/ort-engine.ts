/**
 * The onnxruntime engine: the exported ONNX graph on onnxruntime-node. CPU execution provider with
 * intra-op threads = cores and full graph optimisation; the CUDA provider first when its library is
 * installed (the GPU image opts into it; the root install skips that download).
 *
 * The session lives on a worker thread (ort-session-thread.mjs): onnxruntime-node runs inference
 * synchronously on its calling thread, which would stall every download and queue call meanwhile.
 */
import { messageOf } from '../base/errors.ts';
import { existsSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import type * as ort from 'onnxruntime-node';
import { ensureOnnx } from '../model/onnx/cache.ts';
import type { Engine, LoadedModel } from './engine.ts';
import { toNchwBatch } from './image.ts';
import { startSessionThread, type SessionThread } from './ort-thread.ts';

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
  /**
   * Let idle intra-op threads spin-wait (onnxruntime's own default, and this option's). Inference
   * alone is faster with it (measured here: B0 batch 8 137 vs 110 images/s). Pipeline workers pass
   * `false` (WORKER_ORT_OPTIONS), because they decode and do I/O between batches: the pipeline ran
   * 60.0 images/s without spinning and 46.7 with it. EFFITAG_ORT_SPINNING=1|0 overrides both.
   */
  spinning?: boolean;
  log?: (msg: string) => void;
}

/** onnxruntime settings for pipeline workers (see OrtOptions.spinning). */
export const WORKER_ORT_OPTIONS: OrtOptions = { spinning: false };

export function ortEngine(options: OrtOptions = {}): Engine {
  const log = options.log ?? ((m: string) => process.stderr.write(`${m}\n`));
  return {
    name: 'ort',
    async load(weightsDir, { variant } = {}): Promise<LoadedModel> {
      const exported = await ensureOnnx(weightsDir, { variant, layout: 'nchw' });
      const { manifest, input } = exported;
      if (!manifest.includeTop) throw new Error(`${weightsDir}: weights without a classifier top cannot tag images`);
      const threads = options.threads ?? availableParallelism();
      const env = process.env.EFFITAG_ORT_SPINNING;
      const spinning = env === '1' ? true : env === '0' ? false : (options.spinning ?? true);
      const wantCuda = options.provider === 'cuda' || ((options.provider ?? 'auto') === 'auto' && cudaInstalled());
      const base: ort.InferenceSession.SessionOptions = {
        graphOptimizationLevel: 'all',
        intraOpNumThreads: threads,
        interOpNumThreads: 1,
        executionMode: 'sequential',
        // Whether idle intra-op threads spin-wait (onnxruntime's default) or sleep. See OrtOptions.spinning.
        extra: { session: { intra_op: { allow_spinning: spinning ? '1' : '0' } } },
      };
      let session: SessionThread;
      let provider = 'cpu';
      if (wantCuda) {
        try {
          session = await startSessionThread(exported.path, { ...base, executionProviders: ['cuda', 'cpu'] });
          provider = 'cuda';
        } catch (err) {
          if (options.provider === 'cuda') throw err;
          log(`onnxruntime: CUDA provider unavailable (${messageOf(err).split('\n')[0]}); using CPU`);
          session = await startSessionThread(exported.path, { ...base, executionProviders: ['cpu'] });
        }
      } else {
        session = await startSessionThread(exported.path, { ...base, executionProviders: ['cpu'] });
      }
      log(
        `onnxruntime: ${provider} provider, ${threads} intra-op threads, ${exported.cached ? 'cached' : 'fresh'} export ${exported.path}`,
      );
      const { resolution, classes } = manifest;
      return {
        description: `ort (${provider})${manifest.quantization ? ' int8' : ''}`,
        variant: manifest.variant,
        resolution,
        manifest,
        async classify(images) {
          if (images.length === 0) return [];
          // The export takes normalised NCHW pixels (ensureOnnx's input); toNchwBatch makes a fresh buffer, so handing it to the thread costs no copy.
          const { data } = await session.run(toNchwBatch(images, input.scale, input.shift), [images.length, 3, resolution, resolution]);
          return images.map((_, i) => data.slice(i * classes, (i + 1) * classes));
        },
        async classifyWithFeatures(images) {
          if (images.length === 0) return [];
          const { data, outputs } = await session.run(toNchwBatch(images, input.scale, input.shift), [
            images.length,
            3,
            resolution,
            resolution,
          ]);
          // The export's second output (model/onnx/export.ts); an export without it is a bug, not a fallback.
          const pooled = outputs[1];
          if (!pooled) throw new Error(`${exported.path} has no pooled features output (an export older than this code?)`);
          const width = pooled.dims[1];
          return images.map((_, i) => ({
            probabilities: data.slice(i * classes, (i + 1) * classes),
            features: pooled.data.slice(i * width, (i + 1) * width),
          }));
        },
        async dispose() {
          await session.close();
        },
      };
    },
  };
}

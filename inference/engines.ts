/** Engine registry: every caller picks engines by name from here. */
import type { Engine, EngineName } from './engine.ts';
import { ortEngine, WORKER_ORT_OPTIONS, type OrtOptions } from './ort-engine.ts';

export const ENGINE_NAMES: readonly EngineName[] = ['ort', 'tfjs'];
export const DEFAULT_ENGINE: EngineName = 'ort';

export function createEngine(name: string, options: { tfjsBackend?: string; ort?: OrtOptions } = {}): Engine {
  switch (name) {
    case 'ort':
      return ortEngine(options.ort);
    case 'tfjs':
      return lazyTfjsEngine(options.tfjsBackend);
    default:
      throw new Error(`unknown engine "${name}"; choose one of ${ENGINE_NAMES.join(', ')}`);
  }
}

/**
 * tfjs is evaluated only when a model is loaded on it: a CPU Lambda whose tier runs onnxruntime
 * never pays for initialising tfjs at cold start (its bundle carries it, for tiers that ask).
 */
function lazyTfjsEngine(backend?: string): Engine {
  return {
    name: 'tfjs',
    async load(weightsDir, options) {
      const { tfjsEngine } = await import('./tfjs-engine.ts');
      return tfjsEngine({ backend }).load(weightsDir, options);
    },
  };
}

/**
 * One engine per engine name, made on first use: each tier runs on its own `engine`, unless an
 * override says otherwise (the CLI's --engine, EFFITAG_ENGINE, a test's counting engine).
 */
/** `log` receives the engines' one-line notes (which onnxruntime threading, which tfjs backend). */
export function engineChooser(
  options: { override?: Engine; log?: (message: string) => void; tfjsBackend?: string } = {},
): (name: EngineName) => Engine {
  const made = new Map<EngineName, Engine>();
  return (name) => {
    if (options.override) return options.override;
    let engine = made.get(name);
    if (!engine) {
      engine = createEngine(name, {
        tfjsBackend: options.tfjsBackend,
        ort: { ...WORKER_ORT_OPTIONS, ...(options.log ? { log: options.log } : {}) },
      });
      made.set(name, engine);
    }
    return engine;
  };
}

/** Engine registry: every caller picks engines by name from here. */
import type { Engine, EngineName } from './engine.ts';
import { tfjsEngine } from './tfjs-engine.ts';
import { ortEngine, type OrtOptions } from './ort-engine.ts';

export const ENGINE_NAMES: readonly EngineName[] = ['ort', 'tfjs'];
export const DEFAULT_ENGINE: EngineName = 'ort';

export function createEngine(name: string, options: { tfjsBackend?: string; ort?: OrtOptions } = {}): Engine {
  switch (name) {
    case 'ort':
      return ortEngine(options.ort);
    case 'tfjs':
      return tfjsEngine({ backend: options.tfjsBackend });
    default:
      throw new Error(`unknown engine "${name}"; choose one of ${ENGINE_NAMES.join(', ')}`);
  }
}

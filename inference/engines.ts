/** Engine registry: every caller picks engines by name from here. */
import type { Engine, EngineName } from './engine.ts';
import { tfjsEngine } from './tfjs-engine.ts';

export const ENGINE_NAMES: readonly EngineName[] = ['tfjs'];

export function createEngine(name: string, options: { tfjsBackend?: string } = {}): Engine {
  switch (name) {
    case 'tfjs':
      return tfjsEngine({ backend: options.tfjsBackend });
    default:
      throw new Error(`unknown engine "${name}"; choose one of ${ENGINE_NAMES.join(', ')}`);
  }
}

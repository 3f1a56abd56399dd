import { join } from 'node:path';
import { planModel } from '../model/plan.ts';
import { randomWeights } from '../model/random-weights.ts';
import { writeArtifact } from '../model/weights.ts';

export interface BenchContext {
  workDir: string;
  log: (line: string) => void;
}

export function median(values: readonly number[]): number {
  const s = [...values].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

/** The benchmarks' configuration: one tier of one variant (B0 unless said) on the CPU engine. */
export function benchTiers(batchSize: number, variant = 'b0') {
  return {
    version: 1 as const,
    tiers: { bench: { variants: [variant], compute: { target: 'lambda-cpu' as const, memoryMb: 3538 }, engine: 'ort' as const, batchSize } },
    routing: { default: { tier: 'bench' } },
  };
}

/** Random weights as a catalog `<dir>/<variant>/` (speed does not depend on the values). */
export async function writeBenchWeights(dir: string, variant = 'b0'): Promise<string> {
  const plan = planModel(variant);
  await writeArtifact(join(dir, variant), plan, randomWeights(plan, 1), { kind: 'random', note: 'benchmark' });
  return dir;
}

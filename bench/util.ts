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

/** The benchmarks' configuration: one B0 tier on the CPU engine. */
export function benchTiers(batchSize: number) {
  return {
    version: 1 as const,
    tiers: { bench: { variants: ['b0'], compute: { target: 'lambda-cpu' as const, memoryMb: 3538 }, engine: 'ort' as const, batchSize } },
    routing: { default: { tier: 'bench' } },
  };
}

/** Random B0 weights as a catalog `<dir>/b0/` (speed does not depend on the values). */
export async function writeBenchWeights(dir: string): Promise<string> {
  const plan = planModel('b0');
  await writeArtifact(join(dir, 'b0'), plan, randomWeights(plan, 1), { kind: 'random', note: 'benchmark' });
  return dir;
}

/**
 * Facts derived from a tiers file are computed once, when it is parsed (issue 22): the models each
 * tier tags with (its custom model, else its variants) and the tiers that write back to the tag
 * index only. Consumers (the worker, the worker runtime, weights checks, the CDK config, backfill)
 * read them instead of working them out again.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { makeWorker } from '../pipeline/worker.ts';
import { parseTiers } from '../tiers/schema.ts';
import { fixedCatalog, MemoryIndex, MemoryQueue, MemoryStore } from './support/memory-ports.ts';

const lambda = { target: 'lambda-cpu', memoryMb: 2048 } as const;
const TIERS = parseTiers({
  version: 1,
  tiers: {
    catalog: { variants: ['b0', 'b2'], compute: lambda, engine: 'ort', batchSize: 4 },
    weave: { variants: ['b0'], model: 'weave', compute: lambda, engine: 'ort', batchSize: 4, writeBack: 'index' },
    quiet: { variants: ['b1'], compute: lambda, engine: 'ort', batchSize: 4, writeBack: 'index' },
  },
  routing: { default: { tier: 'catalog' }, rules: [] },
});

describe('tier facts, computed once on the parsed tiers', () => {
  it('the models of a tier: its custom model, else its variants; the file: all of them once', () => {
    assert.deepEqual(TIERS.tiers.catalog.models, ['b0', 'b2']);
    assert.deepEqual(TIERS.tiers.weave.models, ['weave']);
    assert.deepEqual(TIERS.tiers.quiet.models, ['b1']);
    assert.deepEqual(TIERS.models, ['b0', 'b2', 'weave', 'b1']);
  });

  it('the tiers that write back to the index only, and a worker without an index refuses them by name', () => {
    assert.deepEqual(TIERS.indexOnlyTiers, ['weave', 'quiet']);
    const deps = { store: new MemoryStore(), queue: new MemoryQueue(), tiers: TIERS, models: fixedCatalog({ topClass: 1 }) };
    assert.throws(() => makeWorker(deps), /^Error: tier weave, quiet writes back to the tag index, and none is configured/);
    assert.doesNotThrow(() => makeWorker({ ...deps, index: new MemoryIndex() }));
    const plain = parseTiers({
      version: 1,
      tiers: { main: { variants: ['b0'], compute: lambda, engine: 'ort', batchSize: 4 } },
      routing: { default: { tier: 'main' } },
    });
    assert.deepEqual(plain.indexOnlyTiers, []);
    assert.doesNotThrow(() => makeWorker({ ...deps, tiers: plain }));
  });
});

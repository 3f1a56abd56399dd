/**
 * `tiers cost` prices the image embeddings (issue 23, item 8): S3 Vectors per 1M images for each
 * tier that keeps them (embeddings on, the default), at the model's pooled-feature width: storage a
 * month, the writes once, and a million queries (tiers/prices.ts `vectorCost`).
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { promisify } from 'node:util';
import { estimateCosts, vectorRows } from '../tiers/cost.ts';
import { S3_VECTORS_PRICES, vectorCost } from '../tiers/prices.ts';
import { parseTiers } from '../tiers/schema.ts';
import { tempDir } from './support/fixtures.ts';

const TIERS = {
  version: 1,
  tiers: {
    photos: { variants: ['b0', 'b3'], compute: { target: 'lambda-cpu', memoryMb: 2048 }, engine: 'ort', batchSize: 8 },
    archive: { variants: ['b7'], compute: { target: 'lambda-cpu', memoryMb: 4096 }, engine: 'ort', batchSize: 4, embeddings: false },
  },
  routing: { default: { tier: 'photos' } },
};

describe('tiers cost: the vectors per 1M images', () => {
  it('one row per model of each tier with embeddings on, at its feature width; none for a tier with them off', () => {
    const rows = vectorRows(parseTiers(TIERS));
    assert.deepEqual(
      rows.map((r) => [r.tier, r.model, r.dimension]),
      [
        ['photos', 'b0', 1280],
        ['photos', 'b3', 1536],
      ],
    );
    assert.deepEqual(rows[0].cost, vectorCost(1_000_000, 1280));
    assert.equal(rows[0].pricesAsOf, S3_VECTORS_PRICES.asOf);
    // The figures themselves: 1M B0 vectors are ~5.4 GB (5,334 logical bytes each), $0.06/GB-month, $0.20/GB put.
    assert.ok(Math.abs(rows[0].cost.storedGb - 5.39) < 0.01, String(rows[0].cost.storedGb));
    assert.ok(Math.abs(rows[0].cost.storagePerMonth - 0.323) < 0.001, String(rows[0].cost.storagePerMonth));
    assert.ok(Math.abs(rows[0].cost.writes - 1.078) < 0.001, String(rows[0].cost.writes));
    assert.ok(rows[1].cost.perMillionQueries > rows[0].cost.perMillionQueries, 'wider vectors cost more to query');
    assert.deepEqual(estimateCosts(parseTiers(TIERS)).vectors, rows, 'in the report (and so in --json)');
  });

  it('the command prints them under the tiers, and in --json', async () => {
    const path = join(await tempDir('effitag-vectors-cost-'), 'tiers.json');
    await writeFile(path, JSON.stringify(TIERS));
    const run = (...extra: string[]) =>
      promisify(execFile)(process.execPath, ['bin/effitag.js', 'tiers', 'cost', '--tiers', path, ...extra]).then((r) => r.stdout);
    const text = await run();
    const section = text.slice(text.indexOf('Image embeddings (S3 Vectors'));
    assert.ok(section.length < text.length, text);
    assert.match(section, /^Image embeddings \(S3 Vectors, for similar and dupes\), per 1M images, 2026-09 .*; not in all-in:\n/);
    assert.match(section, /\nphotos\s+b0\s+1280\s+5\.39 GB\s+\$0\.32\s+\$1\.08\s+\$14\s*\n/);
    assert.match(section, /\nphotos\s+b3\s+1536\s+/);
    assert.doesNotMatch(section.split('\n\n')[0], /archive/, 'the tier with embeddings off has no row');
    const json = JSON.parse(await run('--json')) as { vectors: { tier: string; dimension: number }[] };
    assert.deepEqual(
      json.vectors.map((v) => [v.tier, v.dimension]),
      [
        ['photos', 1280],
        ['photos', 1536],
      ],
    );
  });
});

/**
 * `effitag tiers show` says what each tier tags with: its variants' ImageNet classifiers, an int8
 * model of one (`lite0-int8`), or a custom model (`model: NAME`, or its int8 model), alone or beside
 * ImageNet (`imagenet: true`). Before, the table listed variants only, so a tier tagging with a custom
 * model read exactly like one tagging with ImageNet. `--json` fills in `imagenet`'s default.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { before, describe, it } from 'node:test';
import { promisify } from 'node:util';
import { parseTiers } from '../tiers/schema.ts';
import { tempDir } from './support/fixtures.ts';

const tier = (variants: string[], extra: Record<string, unknown> = {}) => ({
  variants,
  compute: { target: 'lambda-cpu', memoryMb: 3538 },
  engine: 'ort',
  batchSize: 8,
  ...extra,
});

const FILE = {
  version: 1,
  tiers: {
    plain: tier(['b0', 'b1']),
    products: tier(['b0'], { model: 'products' }),
    both: tier(['b0'], { model: 'products', imagenet: true }),
    fast: tier(['lite0'], { model: 'lite0-int8' }),
    small: tier(['b0'], { model: 'products-int8' }),
  },
  routing: { default: { tier: 'plain' } },
};

const show = (path: string, ...extra: string[]) =>
  promisify(execFile)(process.execPath, ['bin/effitag.js', 'tiers', 'show', '--tiers', path, ...extra], { env: process.env });

describe('tiers show: what each tier tags with', () => {
  let path: string;
  before(async () => {
    path = join(await tempDir('effitag-tiers-show-'), 'tiers.json');
    await writeFile(path, JSON.stringify(FILE));
    parseTiers(FILE, path); // a valid file: the rows below are what a user's file shows
  });

  it('the table has a "tags with" column: imagenet, the custom model (+ imagenet), the int8 model', async () => {
    const lines = (await show(path)).stdout.split('\n');
    const header = lines.find((l) => l.startsWith('tier '));
    assert.ok(header, lines.join('\n'));
    const start = header.indexOf('tags with');
    const end = header.indexOf('compute');
    assert.ok(start > 0 && end > start, header);
    // Each row's cell under the header (the table pads columns to the same width).
    const cell = (name: string) => {
      const row = lines.find((l) => l.startsWith(`${name} `));
      assert.ok(row, `no row for ${name}:\n${lines.join('\n')}`);
      return row.slice(start, end).trim();
    };
    assert.deepEqual(Object.fromEntries(Object.keys(FILE.tiers).map((name) => [name, cell(name)])), {
      plain: 'imagenet',
      products: 'products (custom)',
      both: 'products (custom) + imagenet',
      fast: 'lite0-int8 (int8)',
      small: 'products-int8 (custom, int8)',
    });
  });

  it("--json keeps each tier's model and fills in imagenet (false beside model, true without)", async () => {
    const json = JSON.parse((await show(path, '--json')).stdout) as { tiers: Record<string, { model?: string; imagenet: boolean }> };
    assert.deepEqual(Object.fromEntries(Object.entries(json.tiers).map(([n, t]) => [n, [t.model ?? null, t.imagenet]])), {
      plain: [null, true],
      products: ['products', false],
      both: ['products', true],
      fast: ['lite0-int8', false],
      small: ['products-int8', false],
    });
    // Still a tiers file: what it prints validates as one.
    assert.deepEqual(Object.keys(parseTiers(json, 'shown.json').tiers), Object.keys(FILE.tiers));
  });
});

/**
 * The fixes printed for missing weights name the right command and the right place.
 * - `effitag preflight`, a Lite model missing at the stack's WeightsLocation: `weights import --timm`
 *   into the catalog that `weights publish --tiers` then reads, and that publish names it (--weights).
 *   Before, the import went to a fixed ~/.cache/effitag/weights/<model> while publish read
 *   $EFFITAG_CACHE_DIR/weights: with the cache moved, the printed pair published nothing.
 * - A deployed worker waiting for an int8 model (liteN-int8, NAME-int8) not published: its log line
 *   names `weights quantize` into DIR before the publish (before: publish alone, from a DIR that had no
 *   int8 model to publish). Lite keeps import then publish; a Keras variant's line stays the publish
 *   (whose own error names `weights fetch --out DIR/<variant>` for what DIR lacks).
 */
import assert from 'node:assert/strict';
import { join, resolve } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { runPreflight } from '../cli/commands/preflight.ts';
import type { Level, Logger } from '../pipeline/log.ts';
import { defaultWeightsDir } from '../pipeline/aws/wiring.ts';
import type { PreflightReport } from '../pipeline/preflight.ts';
import { watchWeights } from '../pipeline/weights-watch.ts';
import { tempDir } from './support/fixtures.ts';
import { deployedStackAws } from './support/preflight-aws.ts';

const FIXTURE = 'test/fixtures/tiers/lite.json'; // fast: lite0-int8 on lite0; lite: lite0…lite4

describe('preflight: a missing Lite model is imported into the catalog the publish reads', () => {
  const saved = process.env.EFFITAG_CACHE_DIR;
  let cache: string;
  before(async () => {
    cache = await tempDir('effitag-hint-cache-');
    process.env.EFFITAG_CACHE_DIR = cache;
  });
  after(() => {
    if (saved === undefined) delete process.env.EFFITAG_CACHE_DIR;
    else process.env.EFFITAG_CACHE_DIR = saved;
  });

  it('with EFFITAG_CACHE_DIR set: import --out $EFFITAG_CACHE_DIR/weights/liteN, then publish --weights that catalog', async () => {
    const aws = deployedStackAws();
    let out = '';
    const code = await runPreflight({ tiers: FIXTURE, context: [], json: true }, aws, (s) => {
      out += s;
    });
    assert.equal(code, 1, 'weights missing: not ready');
    const report = JSON.parse(out) as PreflightReport;
    // The catalog `weights publish --tiers` reads without --weights, in this environment.
    const catalog = resolve(defaultWeightsDir());
    assert.equal(catalog, join(cache, 'weights'));
    for (const model of ['lite0', 'lite3']) {
      const fix = report.rows.find((r) => r.check === 'weights' && r.subject === model)?.fix;
      assert.ok(fix, JSON.stringify(report.rows));
      assert.ok(fix.includes(`--variant ${model} --out ${join(catalog, model)}, then`), fix);
      assert.ok(fix.endsWith(`then effitag weights publish --tiers ${FIXTURE} --weights ${catalog} s3://wb/weights/`), fix);
      assert.doesNotMatch(fix, /~\/\.cache/);
    }
    // An int8 model is made by quantize from its float model in the same catalog, then published alike
    // (the workers' waiting line names the same step).
    const int8 = report.rows.find((r) => r.check === 'weights' && r.subject === 'lite0-int8')?.fix;
    assert.equal(
      int8,
      `npx effitag weights quantize --weights ${join(catalog, 'lite0')} --calibrate IMAGES --out ${join(catalog, 'lite0-int8')}, then effitag weights publish --tiers ${FIXTURE} --weights ${catalog} s3://wb/weights/`,
    );
  });
});

describe('a deployed worker waiting for weights: the log line names what to run for the model', () => {
  it('int8 models: quantize into DIR, then publish; Lite: import, then publish; a Keras variant: publish', async () => {
    const lines: { level: Level; msg: string; fields: Record<string, unknown> }[] = [];
    const log: Logger = {
      log: (level, msg, fields = {}) => lines.push({ level, msg, fields }),
      child: () => log,
    };
    const location = 's3://weights/models/';
    const models = ['lite0-int8', 'shapes-int8', 'lite1', 'b0'];
    const watch = await watchWeights({ source: { location, sync: async () => undefined }, models, log });
    await watch.stop();
    const fix = Object.fromEntries(
      lines.filter((l) => l.msg === 'waiting for weights: model not published').map((l) => [l.fields.model, String(l.fields.fix)]),
    );
    assert.deepEqual(Object.keys(fix), models, JSON.stringify(lines));
    const publish = `then npx effitag weights publish --tiers FILE --weights DIR ${location}`;
    assert.equal(fix['lite0-int8'], `npx effitag weights quantize --weights DIR/lite0 --calibrate IMAGES --out DIR/lite0-int8, ${publish}`);
    assert.equal(
      fix['shapes-int8'],
      `npx effitag weights quantize --weights DIR/shapes --calibrate IMAGES --out DIR/shapes-int8, ${publish}`,
    );
    assert.match(
      fix.lite1,
      /^download model\.safetensors from .* weights import --timm model\.safetensors --variant lite1 --out DIR\/lite1, then /,
    );
    assert.ok(fix.lite1.endsWith(publish), fix.lite1);
    assert.equal(fix.b0, `npx effitag weights publish --tiers FILE --weights DIR ${location}`);
  });
});

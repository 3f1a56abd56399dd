/**
 * The deployment contract: what the CDK constructs write (encodeStackEnv/encodeTierEnv) is what the
 * runtimes read (runtimeConfig/workerConfig), and the GPU image's own defaults use the same names.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { ENV } from '../base/runtime-names.ts';
import { encodeStackEnv, encodeTierEnv, weightsRecheckMs, workerConfig } from '../pipeline/runtime-config.ts';
import { loadTiers } from '../tiers/load.ts';
import { parseTiers } from '../tiers/schema.ts';

const { config: shipped } = loadTiers('tiers/defaults.json');
const stackEnv = encodeStackEnv({
  tiers: shipped,
  queueUrlsJson: JSON.stringify({
    economy: 'https://q/economy.fifo',
    standard: 'https://q/standard.fifo',
    premium: 'https://q/premium.fifo',
  }),
  weightsLocation: 's3://weights-bucket/weights/',
});

describe('deployment contract (EFFITAG_* environment)', () => {
  it('a worker reads back what the stack and its tier construct wrote: tiers, queue, weights, its tier and engine', () => {
    const env = {
      ...stackEnv,
      ...encodeTierEnv({ tier: 'standard', weightsDir: '/tmp/w', cacheDir: '/tmp/c', tfjsBackend: 'tensorflow-gpu' }),
    };
    const c = workerConfig(env);
    assert.deepEqual(c.tiers.input, shipped.input);
    assert.equal(c.tier, 'standard');
    assert.deepEqual(c.served.variants, ['b0', 'b1', 'b2', 'b3']);
    assert.equal(c.served.kind, 'ecs-gpu');
    assert.equal(c.engine, 'tfjs', "the tier's engine");
    assert.equal(c.tfjsBackend, 'tensorflow-gpu');
    assert.equal(c.queueUrls.standard, 'https://q/standard.fifo');
    assert.equal(c.weightsLocation, 's3://weights-bucket/weights/');
    assert.equal(c.weightsDir, '/tmp/w');
    assert.equal(c.leaseSeconds, 60);
    assert.equal(workerConfig({ ...env, [ENV.engine]: 'ort' }).engine, 'ort', 'EFFITAG_ENGINE overrides the tier');
    assert.throws(() => workerConfig({ ...env, [ENV.engine]: 'cuda' }), /EFFITAG_ENGINE=cuda: choose ort or tfjs/);
    assert.throws(() => workerConfig(stackEnv), /EFFITAG_TIER is not set/);
  });

  it('weights not yet published are looked for again every minute unless EFFITAG_WEIGHTS_RECHECK_SECONDS says otherwise', () => {
    assert.equal(weightsRecheckMs({}), 60_000);
    assert.equal(weightsRecheckMs({ [ENV.weightsRecheckSeconds]: '5' }), 5_000);
    assert.throws(
      () => weightsRecheckMs({ [ENV.weightsRecheckSeconds]: 'soon' }),
      /EFFITAG_WEIGHTS_RECHECK_SECONDS=soon: a number of seconds/,
    );
    assert.throws(() => weightsRecheckMs({ [ENV.weightsRecheckSeconds]: '0' }), /in \(0, 3600\]/);
  });

  it('refuses a tiers file too large for a Lambda environment', () => {
    const big = parseTiers({
      ...shipped.input,
      tiers: { ...shipped.input.tiers, economy: { ...shipped.input.tiers.economy, description: 'x'.repeat(3000) } },
    });
    assert.throws(
      () => encodeStackEnv({ tiers: big, queueUrlsJson: '{}', weightsLocation: 's3://w/' }),
      /at most 3000 fit a Lambda environment/,
    );
  });

  it("the GPU image's Dockerfile sets only variables of the contract", () => {
    const dockerfile = readFileSync('containers/gpu-worker/Dockerfile', 'utf8');
    const names = [...dockerfile.matchAll(/\b(EFFITAG_[A-Z_]+)=/g)].map((m) => m[1]);
    assert.ok(names.length >= 3, `found ${names.join(', ')}`);
    const known = new Set<string>(Object.values(ENV));
    assert.deepEqual(
      names.filter((n) => !known.has(n)),
      [],
    );
  });
});

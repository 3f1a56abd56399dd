import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { symlinkSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join, resolve } from 'node:path';
import { promisify } from 'node:util';
import { describe, it } from 'node:test';
import { build } from 'esbuild';
import { functionBundling, LAYER_MODULES } from '../cdk/constructs/bundling.ts';
import { tempDir } from './support/fixtures.ts';

const run = promisify(execFile);

describe('deployable bundles load and fail with a clear configuration error', () => {
  it('the GPU worker bundle (as the Dockerfile builds it) starts and asks for its configuration', async () => {
    const dir = await tempDir();
    await run(process.execPath, ['scripts/bundle-gpu-worker.mjs', dir]);
    symlinkSync(resolve('node_modules'), join(dir, 'node_modules'));
    const result = await run(process.execPath, [join(dir, 'worker.mjs')], { env: { PATH: process.env.PATH } }).then(
      () => ({ code: 0, stderr: '' }), (e: { code: number; stderr: string }) => e);
    assert.equal(result.code, 1);
    assert.match(result.stderr, /environment variable EFFITAG_TIERS is not set/);
  });

  for (const handler of ['router', 'worker', 'backfill-batch']) {
    it(`the ${handler} Lambda bundle (the stack's esbuild options) exports a handler`, async () => {
      const dir = await tempDir();
      const options = functionBundling({ copyOrtThread: handler === 'worker' });
      await build({
        entryPoints: [`functions/${handler}.ts`], bundle: true, platform: 'node', target: 'node20', format: 'cjs', logLevel: 'error',
        outfile: join(dir, 'index.js'), external: [...(options.externalModules ?? [])],
        define: options.define, banner: { js: options.banner ?? '' }, loader: { '.json': 'json' },
      });
      // Native modules come from the layer on Lambda; here, from the project's node_modules.
      symlinkSync(resolve('node_modules'), join(dir, 'node_modules'));
      const mod = createRequire(import.meta.url)(join(dir, 'index.js')) as { handler: (e: unknown) => Promise<unknown> };
      assert.equal(typeof mod.handler, 'function');
      assert.ok(LAYER_MODULES.every((m) => (options.externalModules ?? []).includes(m)));
      const saved = process.env.EFFITAG_TIERS;
      delete process.env.EFFITAG_TIERS;
      await assert.rejects(mod.handler({ Records: [], Items: [], BatchInput: { bucket: 'b' } }), /EFFITAG_TIERS is not set/);
      if (saved !== undefined) process.env.EFFITAG_TIERS = saved;
    });
  }
});

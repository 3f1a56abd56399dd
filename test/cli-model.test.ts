import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { describe, it } from 'node:test';
import { useTfjsBackend } from '../model/tfjs-backend.ts';

const run = promisify(execFile);
const cli = (...args: string[]) => run(process.execPath, ['bin/effitag.js', ...args]);

describe('effitag model / backend', () => {
  it('--help lists the commands', async () => {
    const { stdout } = await cli('--help');
    for (const c of ['model', 'weights', 'predict']) assert.match(stdout, new RegExp(`\\b${c}\\b`));
  });

  it('model info --json carries variant, resolution, params and paramsNoTop', async () => {
    const info = JSON.parse((await cli('model', 'info', 'v2-m', '--json')).stdout);
    assert.equal(info.variant, 'v2-m');
    assert.equal(info.resolution, 480);
    assert.equal(info.params, 54_431_388);
    assert.equal(info.paramsNoTop, 53_150_388);
    assert.deepEqual(info.blocksPerStage, [3, 5, 5, 7, 14, 18, 5]);
    const phi = JSON.parse((await cli('model', 'info', '--phi', '2', '--json')).stdout);
    assert.deepEqual([phi.variant, phi.resolution, phi.width, phi.depth], ['phi-2', 296, 1.21, 1.44]);
  });

  it('model list shows all 20 variants (15 Keras, Lite0–4) (and the custom models of a catalog: none in an empty one)', async () => {
    const { stdout } = await cli('model', 'list', '--json', '--weights', '/nonexistent-catalog');
    const listed = JSON.parse(stdout);
    assert.equal(listed.variants.length, 20);
    assert.deepEqual(listed.custom, []);
    assert.match((await cli('model', 'list', '--weights', '/nonexistent-catalog')).stdout, /No custom models in \/nonexistent-catalog/);
  });

  it('unknown variants fail with the list of known ones', async () => {
    await assert.rejects(cli('model', 'info', 'b9'), (e: { stderr: string }) => /unknown variant "b9"; known: b0/.test(e.stderr));
  });

  it('tfjs backend resolution skips the native backends that are not installed and says so', async () => {
    const logs: string[] = [];
    const r = await useTfjsBackend(undefined, (m) => logs.push(m));
    assert.ok(['wasm', 'tensorflow', 'tensorflow-gpu'].includes(r.name));
    if (r.name === 'wasm')
      assert.deepEqual(
        r.skipped.map((s) => s.name),
        ['tensorflow-gpu', 'tensorflow'],
      );
    await assert.rejects(useTfjsBackend('nope'), /unknown tfjs backend "nope"/);
    await assert.rejects(useTfjsBackend('tensorflow-gpu'), /requested but cannot load/);
  });
});

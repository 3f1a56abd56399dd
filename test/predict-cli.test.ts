import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { before, describe, it } from 'node:test';
import { tfjsEngine } from '../inference/tfjs-engine.ts';
import { decodeImage } from '../inference/image.ts';
import { gradientImage, randomArtifact, tempDir } from './support/fixtures.ts';

const run = promisify(execFile);
const cli = (args: string[]) =>
  run(process.execPath, ['bin/effitag.js', ...args], { maxBuffer: 1 << 24 }).then(
    (r) => ({ code: 0, ...r }),
    (e: { code: number; stdout: string; stderr: string }) => ({ code: e.code, stdout: e.stdout, stderr: e.stderr }),
  );

interface Entry {
  image: string;
  variant: string;
  top?: { index: number; label: string; probability: number }[];
  error?: string;
}

describe('predict', () => {
  let dir: string;
  let weights: string;
  before(async () => {
    dir = await tempDir();
    weights = join(dir, 'b0');
    await randomArtifact(weights, 'b0');
    await writeFile(join(dir, 'a.jpg'), await gradientImage(300, 200, 'jpeg', 1));
    await writeFile(join(dir, 'b.png'), await gradientImage(224, 224, 'png', 2));
    await writeFile(join(dir, 'c.webp'), await gradientImage(500, 90, 'webp', 3));
    await writeFile(join(dir, 'corrupt.jpg'), Buffer.concat([Buffer.from([0xff, 0xd8, 0xff, 0xe0]), Buffer.alloc(64, 7)]));
  });

  it('--json: one object per image, top-k sorted with ImageNet indices and labels; a corrupt file errors alone', async () => {
    const files = ['a.jpg', 'corrupt.jpg', 'b.png', 'c.webp'].map((f) => join(dir, f));
    const { code, stdout, stderr } = await cli([
      'predict',
      '--engine',
      'tfjs',
      '--weights',
      weights,
      '--variant',
      'b0',
      '--top-k',
      '4',
      '--json',
      ...files,
    ]);
    assert.equal(code, 1, 'exit status 1 because one image failed');
    assert.match(stderr, /tfjs backend: /);
    const out = JSON.parse(stdout) as Entry[];
    assert.deepEqual(
      out.map((e) => e.image),
      files,
    );
    assert.match(out[1].error ?? '', /cannot decode/);
    assert.equal(out[1].top, undefined);
    for (const e of [out[0], out[2], out[3]]) {
      assert.equal(e.variant, 'b0');
      assert.equal(e.top!.length, 4);
      for (let i = 1; i < 4; i++) assert.ok(e.top![i - 1].probability >= e.top![i].probability, 'sorted');
      for (const p of e.top!) {
        assert.ok(p.probability >= 0 && p.probability <= 1);
        assert.ok(Number.isInteger(p.index) && p.index >= 0 && p.index < 1000);
        assert.equal(typeof p.label, 'string');
      }
    }
    // Different images give different predictions (no constant output).
    assert.notDeepEqual(out[0].top, out[2].top);
  });

  it('probabilities over all 1000 classes sum to ≈ 1', async () => {
    const model = await tfjsEngine().load(weights);
    const img = await decodeImage(await gradientImage(256, 256, 'jpeg'), model.resolution);
    const [probs] = await model.classify([img]);
    assert.equal(probs.length, 1000);
    const sum = probs.reduce((a, b) => a + b, 0);
    assert.ok(Math.abs(sum - 1) < 1e-4, `sum ${sum}`);
    await model.dispose();
  });

  it('refuses weights of another variant', async () => {
    const { code, stderr } = await cli(['predict', '--weights', weights, '--variant', 'b3', join(dir, 'a.jpg')]);
    assert.equal(code, 1);
    assert.match(stderr, /holds weights for b0, not b3/);
  });
});

import assert from 'node:assert/strict';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { planModel, planWeights } from '../model/plan.ts';
import { importKerasWeights, loadArtifact } from '../model/weights.ts';
import { assignWeights, buildTfjsModel } from '../model/tfjs-model.ts';
import { useTfjsBackend } from '../model/tfjs-backend.ts';
import { writeKerasH5 } from './support/keras-h5-writer.ts';
import { tempDir } from './support/fixtures.ts';
import { writeFile } from 'node:fs/promises';

describe('Keras .h5 import', () => {
  for (const variant of ['b0', 'v2-b0']) {
    it(`${variant}: every value of a Keras-layout file lands where it is named (artifact and tfjs model)`, async () => {
      await useTfjsBackend();
      const dir = await tempDir();
      const plan = planModel(variant);
      // Split layer_names the way Keras does for large headers.
      const written = await writeKerasH5(join(dir, 'w.h5'), plan, { seed: 11, splitLayerNamesEvery: 64, stdAsVariance: false });
      const manifest = await importKerasWeights(written.path, { variant, out: join(dir, 'art') });
      assert.equal(manifest.variant, variant);
      assert.equal(manifest.includeTop, true);
      assert.equal(manifest.classes, 1000);

      const artifact = await loadArtifact(join(dir, 'art'), variant);
      assert.equal(artifact.weights.size, planWeights(plan).length);
      for (const [name, values] of written.values) assert.deepEqual(artifact.weights.get(name), values, name);

      const built = buildTfjsModel(plan);
      assignWeights(built, artifact.weights);
      for (const node of plan.nodes) {
        if (node.weights.length === 0) continue;
        const tensors = built.model.getLayer(node.name).getWeights();
        node.weights.forEach((w, i) => {
          assert.deepEqual(tensors[i].dataSync(), written.values.get(w.name), w.name);
        });
      }
      built.model.dispose();
    });
  }

  it('a file without top imports as no-top', async () => {
    const dir = await tempDir();
    const written = await writeKerasH5(join(dir, 'n.h5'), planModel('v2-b0', { includeTop: false }), { seed: 2 });
    const m = await importKerasWeights(written.path, { variant: 'v2-b0', out: join(dir, 'art') });
    assert.equal(m.includeTop, false);
    assert.equal(m.classes, 0);
  });

  it('a missing weight fails naming it, and nothing is written', async () => {
    const dir = await tempDir();
    await writeKerasH5(join(dir, 'm.h5'), planModel('b0'), { omit: 'block3b_se_expand/bias:0' });
    await assert.rejects(
      importKerasWeights(join(dir, 'm.h5'), { variant: 'b0', out: join(dir, 'art') }),
      /missing weight block3b_se_expand\/bias:0/,
    );
    await assert.rejects(loadArtifact(join(dir, 'art')), /no weights artifact/);
  });

  it('a mis-shaped weight fails naming it and both shapes', async () => {
    const dir = await tempDir();
    await writeKerasH5(join(dir, 's.h5'), planModel('b0'), { misshape: 'block2a_dwconv/depthwise_kernel:0' });
    await assert.rejects(
      importKerasWeights(join(dir, 's.h5'), { variant: 'b0', out: join(dir, 'art') }),
      /weight block2a_dwconv\/depthwise_kernel:0 has shape \[3, 3, 96, 2\], expected \[3, 3, 96, 1\]/,
    );
  });

  it('an unexpected weight fails naming it; the wrong variant fails too', async () => {
    const dir = await tempDir();
    await writeKerasH5(join(dir, 'x.h5'), planModel('b0'), { extra: 'block9z_mystery/kernel:0' });
    await assert.rejects(
      importKerasWeights(join(dir, 'x.h5'), { variant: 'b0', out: join(dir, 'a') }),
      /unexpected weight block9z_mystery\/kernel:0/,
    );
    await writeKerasH5(join(dir, 'b0.h5'), planModel('b0'));
    await assert.rejects(importKerasWeights(join(dir, 'b0.h5'), { variant: 'b1', out: join(dir, 'b') }), /do not fit b1/);
  });

  it('a file that is not HDF5 gives a clear error', async () => {
    const dir = await tempDir();
    await writeFile(join(dir, 'junk.h5'), 'hello');
    await assert.rejects(importKerasWeights(join(dir, 'junk.h5'), { variant: 'b0', out: join(dir, 'a') }), /not a readable HDF5 file/);
  });

  it('a corrupted artifact is refused by its content hash', async () => {
    const dir = await tempDir();
    await writeKerasH5(join(dir, 'b0.h5'), planModel('b0'));
    await importKerasWeights(join(dir, 'b0.h5'), { variant: 'b0', out: join(dir, 'art') });
    const { readFile } = await import('node:fs/promises');
    const bin = await readFile(join(dir, 'art', 'weights.bin'));
    bin[1000] ^= 0xff;
    await writeFile(join(dir, 'art', 'weights.bin'), bin);
    await assert.rejects(loadArtifact(join(dir, 'art')), /does not match its manifest hash/);
  });
});

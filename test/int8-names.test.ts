/**
 * An int8 model's name is its float model's name + '-int8' (effitag weights quantize), whatever that
 * float model is: a variant (b0, phi-1, custom-wW-dD-rR) or a custom model. Such a name never reads as
 * another variant, the catalog finds it, `model list` lists it under its own name and marker, the index
 * treats a variant's int8 model as the ImageNet classifier it is, and `train --name` cannot take it.
 * Calibration images can come from S3 (the embedded stack's).
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { mkdir, readdir, readFile, writeFile } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { CreateBucketCommand, PutObjectCommand } from '@aws-sdk/client-s3';
import { folderCalibrationSource, quantizeArtifact } from '../model/quantize.ts';
import { int8Base, isImagenetModel, isReservedModelName, isVariantName } from '../model/spec.ts';
import { modelHash, readManifest, type WeightsManifest } from '../model/weights.ts';
import { directoryCatalog, modelId, weightsFix } from '../pipeline/models.ts';
import { KEYS, modelMarker } from '../pipeline/marker.ts';
import { taggingFromMetadata } from '../pipeline/index-writes.ts';
import type { EmbeddedStack } from '../local/stack.ts';
import { runEffitag } from './support/effitag-local.ts';
import { arrangedArtifact, tempDir } from './support/fixtures.ts';
import { startTestStack } from './support/local-stack.ts';
import { writePatternDataset } from './support/shapes.ts';

const VARIANT = 'custom-w0.25-d0.25-r32';
const quiet = { log: () => {} };

describe('int8 model names', () => {
  it('NAME-int8 is the int8 model of NAME, never a variant, and not a name training may take', () => {
    for (const name of ['b0-int8', 'phi-1-int8', 'phi-1.5-int8', 'custom-w1-d1-r224-int8', 'efficientnet-b3-int8', 'v2-s-int8']) {
      assert.equal(isVariantName(name), false, name);
      assert.equal(isImagenetModel(name), true, name);
      assert.equal(isReservedModelName(name), true, name);
    }
    assert.equal(int8Base('phi-1-int8'), 'phi-1');
    assert.equal(int8Base('custom-w1-d1-r224-int8'), 'custom-w1-d1-r224');
    assert.equal(int8Base('phi-1'), undefined);
    // A custom model's int8 model: not ImageNet, and reserved (a custom model named so would collide with it).
    assert.equal(isImagenetModel('my-pets-int8'), false);
    assert.equal(isReservedModelName('my-pets-int8'), true);
    assert.equal(isReservedModelName('my-pets'), false);
    // The variants themselves are unchanged.
    for (const name of ['b0', 'phi-1', 'custom-w1-d1-r224']) assert.equal(isVariantName(name), true, name);
    assert.match(weightsFix('/w', 'phi-1-int8'), /effitag weights quantize --weights \/w\/phi-1 .* --out \/w\/phi-1-int8/);
  });

  it("a variant's int8 model is an ImageNet classifier in the index (its tags roll up through WordNet)", () => {
    const tagged = (model: string) =>
      taggingFromMetadata({
        eTag: 'e1',
        metadata: {
          [KEYS.status]: 'tagged',
          [KEYS.model]: modelMarker(model, 'a'.repeat(64)),
          [KEYS.etag]: 'e1',
          [KEYS.tags]: 'tabby=0.9',
        },
      } as never);
    assert.equal(tagged('b0-int8')?.imagenet, true);
    assert.equal(tagged('b0')?.imagenet, true);
    assert.equal(tagged('my-pets-int8')?.imagenet, false);
  });
});

describe('int8 models in a catalog', () => {
  let root: string;
  let images: string;
  let int8: WeightsManifest;
  before(async () => {
    root = await tempDir('effitag-int8-names-');
    images = join(root, 'images');
    await writePatternDataset(images, { perLabel: 4, size: 48 });
    // The float model is a custom-wW-dD-rR variant, in its catalog folder; its int8 model beside it.
    await arrangedArtifact(join(root, 'catalog', VARIANT), VARIANT, { 207: 6, 852: 5 });
    const r = await quantizeArtifact({
      weightsDir: join(root, 'catalog', VARIANT),
      source: folderCalibrationSource(images),
      out: join(root, 'catalog', `${VARIANT}-int8`),
      threads: 1,
      ...quiet,
    });
    int8 = r.manifest;
  });

  it('finds custom-wW-dD-rR-int8 and phi-X-int8 by name (they used to parse as variants and fail)', async () => {
    const catalog = directoryCatalog(join(root, 'catalog'));
    assert.equal(modelId(int8), `${VARIANT}-int8`);
    assert.equal(catalog.marker(`${VARIANT}-int8`), modelMarker(`${VARIANT}-int8`, modelHash(int8)));
    assert.equal(catalog.marker(VARIANT), modelMarker(VARIANT, int8.sha256), 'the float model is still itself');
    // A phi-1 int8 model (its manifest alone decides the marker).
    const phi = { ...int8, variant: 'phi-1' };
    await mkdir(join(root, 'catalog', 'phi-1-int8'), { recursive: true });
    await writeFile(join(root, 'catalog', 'phi-1-int8', 'manifest.json'), JSON.stringify(phi));
    assert.equal(catalog.marker('phi-1-int8'), modelMarker('phi-1-int8', modelHash(phi)));
  });

  it('model list shows an int8 custom model as NAME-int8 with its own marker, beside its float model', async () => {
    const custom = {
      name: 'my-pets',
      base: { variant: VARIANT },
      labels: ['cat', 'dog'],
      metrics: { valAccuracy: 0.9, perClass: [] },
      images: { train: 8, val: 2 },
    };
    const float = { ...int8, quantization: undefined, custom };
    const quantized = { ...int8, custom };
    for (const [dir, m] of [
      ['my-pets', float],
      ['my-pets-int8', quantized],
    ] as const) {
      await mkdir(join(root, 'list', dir), { recursive: true });
      await writeFile(join(root, 'list', dir, 'manifest.json'), JSON.stringify(m));
    }
    const r = await runEffitag(['model', 'list', '--weights', join(root, 'list'), '--json']);
    assert.equal(r.code, 0, r.stderr);
    const listed = (JSON.parse(r.stdout) as { custom: { name: string; marker: string }[] }).custom;
    assert.deepEqual(
      listed.map((m) => [m.name, m.marker]),
      [
        ['my-pets', modelMarker('my-pets', float.sha256)],
        ['my-pets-int8', modelMarker('my-pets-int8', modelHash(quantized as unknown as WeightsManifest))],
      ],
    );
    const table = await runEffitag(['model', 'list', '--weights', join(root, 'list')]);
    assert.match(table.stdout, /my-pets-int8 +\S+, int8 \(top-1 agreement 100\.0 %\)/);
  });
});

describe('weights quantize --calibrate s3://', () => {
  let stack: EmbeddedStack;
  let root: string;
  before(async () => {
    root = await tempDir('effitag-int8-s3-');
    // No router, no workers: the calibration images are data here, not uploads to tag.
    ({ stack } = await startTestStack(
      {
        version: 1,
        tiers: { t: { variants: ['b0'], compute: { target: 'lambda-cpu', memoryMb: 3538 }, engine: 'ort', batchSize: 8 } },
        routing: { default: { tier: 't' }, rules: [] },
      },
      { runWorkers: () => false, runRouter: false },
    ));
  });
  after(async () => {
    await stack?.stop();
  });

  it('reads the images under the prefix from the stack, as the folder source reads a folder', async () => {
    const images = join(root, 'images');
    await writePatternDataset(images, { perLabel: 4, size: 48 });
    await stack.s3.send(new CreateBucketCommand({ Bucket: 'calibration' }));
    const files = (await readdir(images, { recursive: true })).filter((p) => p.endsWith('.png'));
    for (const f of files)
      await stack.s3.send(new PutObjectCommand({ Bucket: 'calibration', Key: `set/${f}`, Body: await readFile(join(images, f)) }));
    // Not images, and outside the prefix: neither is read.
    await stack.s3.send(new PutObjectCommand({ Bucket: 'calibration', Key: 'set/notes.txt', Body: 'not an image' }));
    await stack.s3.send(new PutObjectCommand({ Bucket: 'calibration', Key: 'other/x.png', Body: await readFile(join(images, files[0])) }));
    const float = join(root, 'float');
    await arrangedArtifact(float, VARIANT, { 207: 6, 852: 5 });

    const out = join(root, 'int8-s3');
    const r = await runEffitag(['weights', 'quantize', '--weights', float, '--calibrate', 's3://calibration/set/', '--out', out, '--json']);
    assert.equal(r.code, 0, r.stderr);
    const m = (await readManifest(out)).quantization!;
    assert.equal(m.calibration.images + m.calibration.heldOut, files.length, 'every image under the prefix, nothing else');
    assert.equal(m.calibration.skipped, 0);
    // The same images from a folder give the same data hash and the same ranges: S3 is only the transport.
    const local = await quantizeArtifact({
      weightsDir: float,
      source: folderCalibrationSource(images),
      out: join(root, 'int8-dir'),
      ...quiet,
    });
    assert.deepEqual(m.ranges, local.record.ranges);

    const empty = await runEffitag([
      'weights',
      'quantize',
      '--weights',
      float,
      '--calibrate',
      's3://calibration/none/',
      '--out',
      join(root, 'x'),
    ]);
    assert.notEqual(empty.code, 0);
    assert.match(empty.stderr, /s3:\/\/calibration\/none\/: 0 readable image\(s\)/);
    assert.equal(existsSync(join(root, 'x')), false);
  });
});

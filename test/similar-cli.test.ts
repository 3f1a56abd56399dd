/**
 * `effitag similar` end to end on the embedded stack: real photographs (scikit-image's, from Debian)
 * and copies of one (recompressed, resized) uploaded through S3; the worker stores their embeddings
 * as it tags them (S3 Vectors stand-in); the CLI, in its own process, finds the copies first, by key
 * and from a local photo, and answers bad input with one line, changing nothing.
 *
 * The network is a small EfficientNet (width and depth 0.25, 32 px) with random weights whose
 * BatchNorm statistics are measured on generated pictures (test/support/shapes.ts): pretrained weights cannot be downloaded here, and plain
 * random weights give features nearly independent of the image.
 */
import assert from 'node:assert/strict';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import sharp from 'sharp';
import { ortEngine } from '../inference/ort-engine.ts';
import type { EmbeddedStack } from '../local/stack.ts';
import { runEffitag } from './support/effitag-local.ts';
import { randomArtifact, tempDir } from './support/fixtures.ts';
import { head, put, startTestStack, waitFor } from './support/local-stack.ts';
import { SKIMAGE_DATA, skipWithoutPhotographs } from './support/photographs.ts';
import { calibratedArtifact } from './support/shapes.ts';

/** Two small networks, for fast tests: the tier takes the 64-px one for images at least 58 px on their shorter side. */
const SMALL = 'custom-w0.25-d0.25-r32';
const LARGER = 'custom-w0.25-d0.25-r64';
/** Uploads are resized to this width (shorter sides 33-50 px): the tier chooses the 32-px network for every one. */
const WIDTH = 50;

const small = (file: string, width = WIDTH) => sharp(join(SKIMAGE_DATA, file)).resize({ width }).png().toBuffer();

describe('effitag similar on the embedded stack', { skip: skipWithoutPhotographs() }, () => {
  let stack: EmbeddedStack;
  let dir: string;
  /** Objects uploaded, by key, with the eTag each was tagged at. */
  const uploaded = new Map<string, string>();
  let space: string;

  before(async () => {
    dir = await tempDir('effitag-similar-');
    const weights = join(dir, 'weights');
    await calibratedArtifact(join(weights, SMALL), SMALL);
    // A second model for larger photos: a local photo that large is embedded by it, not by the uploads' model.
    await randomArtifact(join(weights, LARGER), LARGER);
    const tier = (embeddings: boolean) => ({
      // Custom variants name their weights (read from the stack's weights location all the same).
      variants: [
        { width: 0.25, depth: 0.25, resolution: 32, weights: 'test' },
        { width: 0.25, depth: 0.25, resolution: 64, weights: 'test' },
      ],
      compute: { target: 'lambda-cpu', memoryMb: 2048 },
      engine: 'ort',
      batchSize: 8,
      topK: 3,
      minConfidence: 0,
      embeddings,
    });
    ({ stack } = await startTestStack(
      {
        version: 1,
        tiers: { cpu: tier(true), plain: tier(false) },
        routing: { default: { tier: 'cpu' }, rules: [{ prefix: 'noemb/', tier: 'plain' }] },
      },
      { weightsDir: weights, engine: ortEngine({ log: () => {} }) },
    ));
    const astronaut = await small('astronaut.png');
    const uploads: [string, Buffer][] = [
      ['photos/astronaut.png', astronaut],
      ['photos/astronaut-recompressed.jpg', await sharp(astronaut).jpeg({ quality: 55 }).toBuffer()],
      ['photos/astronaut-resized.png', await sharp(astronaut).resize({ width: 40 }).png().toBuffer()],
      ['photos/chelsea.png', await small('chelsea.png')],
      ['photos/coffee.png', await small('coffee.png')],
      ['photos/rocket.png', await small('rocket.jpg')],
      ['photos/motorcycle.png', await small('motorcycle_left.png')],
      ['photos/hubble.png', await small('hubble_deep_field.jpg')],
      ['noemb/astronaut.png', astronaut],
    ];
    for (const [key, body] of uploads) uploaded.set(key, await put(stack, key, body));
    for (const [key, eTag] of uploaded)
      await waitFor(
        `${key} tagged`,
        async () => {
          const m = (await head(stack, key)).Metadata;
          return m?.['effitag-status'] === 'tagged' && m['effitag-etag'] === eTag ? m : undefined;
        },
        120_000,
      );
    space = (await head(stack, 'photos/astronaut.png')).Metadata!['effitag-model'];
    assert.match(space, /^custom-w0\.25-d0\.25-r32@[0-9a-f]{12}$/, 'every upload is tagged by the 32-px network');
    // The vector write follows the tags within the same batch: wait for the last of them.
    await waitFor(
      'vectors stored',
      async () => {
        for (const key of uploaded.keys())
          if (key.startsWith('photos/') && !(await stack.s3vectors.vectors.get(space, { bucket: stack.bucket, key }))) return undefined;
        return true;
      },
      30_000,
    );
  });

  after(async () => {
    await stack?.stop();
  });

  const similar = (...args: string[]) => runEffitag(['similar', ...args]);

  it('like an object: its copies come first, itself left out, best first', async () => {
    const r = await similar(`s3://${stack.bucket}/photos/astronaut.png`, '--json');
    assert.equal(r.code, 0, r.stderr);
    const { hits } = JSON.parse(r.stdout) as { hits: { key: string; score: number }[] };
    assert.deepEqual(Object.keys(hits[0]).sort(), ['key', 'score']);
    assert.ok(!hits.some((h) => h.key === 'photos/astronaut.png'), 'the object itself is left out');
    assert.deepEqual(
      hits
        .slice(0, 2)
        .map((h) => h.key)
        .sort(),
      ['photos/astronaut-recompressed.jpg', 'photos/astronaut-resized.png'],
      JSON.stringify(hits),
    );
    assert.equal(hits.length, 7, 'every other object under photos/');
    assert.ok(!hits.some((h) => h.key.startsWith('noemb/')), 'noemb/ (a tier with embeddings: false) has no vectors');
    for (let i = 1; i < hits.length; i++) assert.ok(hits[i - 1].score >= hits[i].score, 'ordered by score');
    // --limit and --min-score: the copies alone pass a threshold between them and the rest.
    const cut = (hits[1].score + hits[2].score) / 2;
    const top = await similar(`s3://${stack.bucket}/photos/astronaut.png`, '--json', '--limit', '5', '--min-score', String(cut));
    assert.deepEqual(JSON.parse(top.stdout).hits, hits.slice(0, 2));
    const one = await similar(`s3://${stack.bucket}/photos/astronaut.png`, '--json', '--limit', '1');
    assert.deepEqual(JSON.parse(one.stdout).hits, hits.slice(0, 1));
    // The table form names the objects and the model.
    const table = await similar(`s3://${stack.bucket}/photos/astronaut.png`, '--limit', '2');
    assert.equal(table.code, 0, table.stderr);
    assert.match(table.stdout, new RegExp(`s3://${stack.bucket}/photos/astronaut-`));
    assert.match(table.stdout, new RegExp(`model ${space.replace(/\./g, '\\.')}`));
  });

  it('like a local photo (--image): decoded and embedded as the pipeline would, the astronaut family first', async () => {
    // A brightened copy that was never uploaded, under the prefix the uploads went to.
    const local = join(dir, 'astronaut-bright.png');
    await writeFile(
      local,
      await sharp(await small('astronaut.png'))
        .modulate({ brightness: 1.15 })
        .png()
        .toBuffer(),
    );
    const r = await similar('--image', local, `s3://${stack.bucket}/photos/`, '--json');
    assert.equal(r.code, 0, r.stderr);
    const { hits } = JSON.parse(r.stdout) as { hits: { key: string; score: number }[] };
    assert.deepEqual(
      hits
        .slice(0, 3)
        .map((h) => h.key)
        .sort(),
      ['photos/astronaut-recompressed.jpg', 'photos/astronaut-resized.png', 'photos/astronaut.png'],
      JSON.stringify(hits),
    );
    // The very bytes of an upload score 1 with it: the same decode and the same model as the worker's.
    const exact = join(dir, 'astronaut-small.png');
    await writeFile(exact, await small('astronaut.png'));
    const self = JSON.parse((await similar('--image', exact, `s3://${stack.bucket}/photos/`, '--json', '--limit', '1')).stdout);
    assert.equal(self.hits[0].key, 'photos/astronaut.png');
    assert.ok(self.hits[0].score > 0.9999, `score ${self.hits[0].score}`);
  });

  it('bad input: one clear line each, nothing changed', async () => {
    const before = await snapshot();
    const text = join(dir, 'notes.jpg');
    await writeFile(text, 'not a picture');
    const large = join(dir, 'astronaut-large.png');
    await writeFile(large, await readFile(join(SKIMAGE_DATA, 'astronaut.png')));
    const cases: [string[], RegExp][] = [
      [[`s3://${stack.bucket}/photos/nope.png`], /photos\/nope\.png is not indexed/],
      [
        [`s3://${stack.bucket}/noemb/astronaut.png`],
        /noemb\/astronaut\.png has no embedding under the model that tagged it .*backfill --embeddings/,
      ],
      [
        ['--image', large, `s3://${stack.bucket}/photos/`],
        /tagged by custom-w0\.25-d0\.25-r32@[0-9a-f]{12}, not by custom-w0\.25-d0\.25-r64@[0-9a-f]{12}/,
      ],
      [['--image', join(dir, 'astronaut-small.png'), `s3://${stack.bucket}/empty/`], /nothing under s3:\/\/[^ ]+\/empty\/ is indexed/],
      [['--image', text, `s3://${stack.bucket}/photos/`], /cannot read .*notes\.jpg as an image/],
      [['--image', join(dir, 'missing.png'), `s3://${stack.bucket}/photos/`], /cannot read --image .*missing\.png/],
      [[`s3://${stack.bucket}/`], /name an object/],
    ];
    for (const [args, pattern] of cases) {
      const r = await similar(...args);
      assert.notEqual(r.code, 0, `${args.join(' ')} fails`);
      const lines = r.stderr.trim().split('\n');
      assert.equal(lines.length, 1, `one line: ${r.stderr}`);
      assert.match(lines[0], /^effitag: /);
      assert.match(lines[0], pattern);
      assert.equal(r.stdout, '');
    }
    assert.deepEqual(await snapshot(), before, 'no object, tag or vector changed');
  });

  it('backfill --embeddings: a dry run counts and prices the missing vector; the run puts back the one the worker stored', async () => {
    const ref = { bucket: stack.bucket, key: 'photos/coffee.png' };
    const original = (await stack.s3vectors.vectors.get(space, ref))!;
    await stack.s3vectors.vectors.remove(space, [ref]); // as if tagged before embeddings were kept
    const lost = await similar(`s3://${stack.bucket}/photos/coffee.png`);
    assert.match(lost.stderr, /has no embedding under the model that tagged it/);

    const dry = await runEffitag(['backfill', '--embeddings', '--dry-run', '--json', `s3://${stack.bucket}/`]);
    assert.equal(dry.code, 0, dry.stderr);
    const planned = JSON.parse(dry.stdout);
    assert.equal(planned.vectors, 1);
    assert.equal(planned.listed, uploaded.size);
    assert.deepEqual(planned.byTierVariant, { cpu: { [SMALL]: 1 } });
    assert.deepEqual(planned.skipped, { complete: 7, 'complete-no-embeddings': 1 });
    assert.equal(planned.costPreview.length, 1, 'priced: decode and inference of one image at the tier’s rates');
    assert.equal(await stack.s3vectors.vectors.get(space, ref), undefined, 'a dry run writes nothing');

    const run = await runEffitag(['backfill', '--embeddings', '--json', `s3://${stack.bucket}/photos/`]);
    assert.equal(run.code, 0, run.stderr);
    assert.equal(JSON.parse(run.stdout).vectors, 1);
    const back = (await stack.s3vectors.vectors.get(space, ref))!;
    assert.ok(
      back.every((v, i) => Math.abs(v - original[i]) < 1e-5),
      'the same vector: the same decode and model as the worker',
    );
    assert.equal((await similar(`s3://${stack.bucket}/photos/coffee.png`, '--json')).code, 0);
  });

  /** Every object's eTag and metadata, and every vector under photos/ and noemb/. */
  async function snapshot() {
    const objects: Record<string, unknown> = {};
    for (const key of uploaded.keys()) {
      const h = await head(stack, key);
      objects[key] = { eTag: h.ETag, metadata: h.Metadata };
    }
    const vectors: Record<string, number[] | undefined> = {};
    for (const key of uploaded.keys()) {
      const v = await stack.s3vectors.vectors.get(space, { bucket: stack.bucket, key });
      vectors[key] = v && Array.from(v);
    }
    return { objects, vectors };
  }
});

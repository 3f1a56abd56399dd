/**
 * Finding images by tag through the embedded stack: uploads whose predicted classes are known
 * (classifier weights arranged per tier), searched by leaf tag, rolled-up tag and two tags, through
 * the index core and `effitag search`; a deletion and an overwrite keep the index true; the
 * `index` write-back never rewrites the object.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { DeleteObjectCommand } from '@aws-sdk/client-s3';
import { ortEngine } from '../inference/ort-engine.ts';
import { IMAGENET_LABELS } from '../model/labels.ts';
import type { EmbeddedStack } from '../local/stack.ts';
import { arrangedArtifact, gradientImage, tempDir } from './support/fixtures.ts';
import { head, put, startTestStack, waitFor } from './support/local-stack.ts';
import { FAILED_TAG } from '../pipeline/tag-index.ts';

const cls = (first: string) => IMAGENET_LABELS.findIndex((l) => l.split(',')[0] === first);

const TIERS = {
  version: 1,
  tiers: {
    // b0 sees a golden retriever with a tennis ball; written into metadata (and the index).
    pets: {
      variants: ['b0'],
      compute: { target: 'lambda-cpu', memoryMb: 2048 },
      engine: 'ort',
      batchSize: 4,
      minConfidence: 0.1,
      writeBack: 'metadata',
    },
    // b1 sees a sports car with a tennis ball; written only into the index.
    cars: {
      variants: ['b1'],
      compute: { target: 'lambda-cpu', memoryMb: 2048 },
      engine: 'ort',
      batchSize: 4,
      minConfidence: 0.1,
      writeBack: 'index',
    },
  },
  routing: { default: { tier: 'pets' }, rules: [{ prefix: 'cars/', tier: 'cars' }] },
};

let stack: EmbeddedStack;

/** `effitag …` as a process; asynchronously, since the stack's servers run in this process and must keep answering. */
const effitag = (...args: string[]) =>
  new Promise<{ status: number; stdout: string; stderr: string }>((resolve) => {
    execFile(process.execPath, ['bin/effitag.js', ...args], (err, stdout, stderr) =>
      resolve({ status: err ? Number(err.code ?? 1) : 0, stdout, stderr }),
    );
  });
const json = async (...args: string[]) => {
  const r = await effitag(...args);
  assert.equal(r.status, 0, `${r.stderr}${r.stdout}`);
  return JSON.parse(r.stdout);
};
const keys = async (tags: string[], extra: { minProbability?: number; prefix?: string } = {}) =>
  (await stack.index.search({ bucket: stack.bucket, tags, limit: 100, ...extra })).hits.map((h) => h.key).sort();

describe('search by tag (embedded stack: dynalite index, real engine)', () => {
  const etags: Record<string, string> = {};
  before(async () => {
    const weights = await tempDir('effitag-arranged-');
    await arrangedArtifact(join(weights, 'b0'), 'b0', { [cls('golden retriever')]: 12, [cls('tennis ball')]: 11 });
    await arrangedArtifact(join(weights, 'b1'), 'b1', { [cls('sports car')]: 12, [cls('tennis ball')]: 11 });
    ({ stack } = await startTestStack(TIERS, { weightsDir: weights, engine: ortEngine({ log: () => {} }) }));
    const image = await gradientImage(320, 240);
    for (const key of ['pets/a.jpg', 'pets/b.jpg', 'cars/c.jpg', 'cars/d.jpg']) etags[key] = await put(stack, key, image);
    await put(stack, 'pets/notes.txt', 'not an image');
    // Named like images, but not: recorded as failures (metadata tier: on the object and in the index; index tier: in the index).
    await put(stack, 'pets/broken.jpg', 'this is text, not a JPEG');
    await put(stack, 'cars/broken.jpg', 'this is text, not a JPEG');
    await waitFor('four indexed objects', async () => ((await keys([])).length === 4 ? true : undefined), 90_000);
    await waitFor('two recorded failures', async () => ((await keys([FAILED_TAG])).length === 2 ? true : undefined), 30_000);
  });
  after(async () => stack?.stop());

  it('finds exactly the expected objects by leaf tag, rolled-up tag and two tags together', async () => {
    assert.deepEqual(await keys(['golden retriever']), ['pets/a.jpg', 'pets/b.jpg']);
    assert.deepEqual(await keys(['dog']), ['pets/a.jpg', 'pets/b.jpg']);
    assert.deepEqual(await keys(['animal']), ['pets/a.jpg', 'pets/b.jpg']);
    assert.deepEqual(await keys(['vehicle']), ['cars/c.jpg', 'cars/d.jpg']);
    assert.deepEqual(await keys(['sports car']), ['cars/c.jpg', 'cars/d.jpg']);
    assert.deepEqual(await keys(['tennis ball']), ['cars/c.jpg', 'cars/d.jpg', 'pets/a.jpg', 'pets/b.jpg']);
    assert.deepEqual(await keys(['dog', 'tennis ball']), ['pets/a.jpg', 'pets/b.jpg']);
    assert.deepEqual(await keys(['vehicle', 'ball']), ['cars/c.jpg', 'cars/d.jpg']);
    assert.deepEqual(await keys(['dog', 'vehicle']), []);
    // The ball is 0.27: above 0.2, not above 0.5.
    assert.deepEqual(await keys(['ball'], { minProbability: 0.2, prefix: 'pets/' }), ['pets/a.jpg', 'pets/b.jpg']);
    assert.deepEqual(await keys(['ball'], { minProbability: 0.5 }), []);
    const hit = (await stack.index.search({ bucket: stack.bucket, tags: ['retriever'], limit: 1 })).hits[0];
    assert.equal(hit.tags['golden retriever'], 0.728);
    assert.equal(hit.tags.dog, 0.728);
    assert.equal(hit.tags.ball, 0.268);
    assert.equal(hit.variant, 'b0');
  });

  it('failures are listed with their reasons, apart from the tagged objects', async () => {
    const failed = (await stack.index.search({ bucket: stack.bucket, tags: [FAILED_TAG], limit: 10 })).hits;
    assert.deepEqual(failed.map((h) => h.key).sort(), ['cars/broken.jpg', 'pets/broken.jpg']);
    for (const h of failed) assert.match(h.failure!, /^unsupported-format: not a supported image/, h.failure);
    assert.equal(
      (await head(stack, 'pets/broken.jpg')).Metadata?.['effitag-status'],
      'failed',
      'the metadata tier records it on the object too',
    );
    assert.equal((await head(stack, 'cars/broken.jpg')).Metadata?.['effitag-status'], undefined, 'the index tier never writes the object');
    assert.ok(!(await keys([])).some((k) => k.endsWith('broken.jpg')));
  });

  it('index write-back leaves the object untouched; metadata write-back still writes metadata', async () => {
    const car = await head(stack, 'cars/c.jpg');
    assert.equal(car.ETag?.replace(/"/g, ''), etags['cars/c.jpg']);
    assert.equal(car.Metadata?.['effitag-status'], undefined);
    const pet = await head(stack, 'pets/a.jpg');
    assert.equal(pet.Metadata?.['effitag-status'], 'tagged');
    // softmax of logits 12 and 11 beside 998 zeros
    const total = Math.exp(12) + Math.exp(11) + 998;
    const expected = `golden_retriever=${(Math.exp(12) / total).toFixed(3)};tennis_ball=${(Math.exp(11) / total).toFixed(3)}`;
    assert.equal(expected, 'golden_retriever=0.728;tennis_ball=0.268');
    assert.equal(pet.Metadata?.['effitag-tags'], expected);
  });

  it('`effitag search` prints the same objects, as JSON and as a table', async () => {
    const cli = (...args: string[]) => effitag('search', `s3://${stack.bucket}`, ...args);
    const both = await cli('--tag', 'Dog', '--tag', 'tennis_ball', '--json');
    assert.equal(both.status, 0, both.stderr);
    const out = JSON.parse(both.stdout);
    assert.deepEqual(out.hits.map((h: { key: string }) => h.key).sort(), ['pets/a.jpg', 'pets/b.jpg']);
    const paged = await cli('--tag', 'ball', '--limit', '3', '--json');
    assert.equal(JSON.parse(paged.stdout).hits.length, 3);
    assert.ok(JSON.parse(paged.stdout).cursor, 'a cursor for the fourth');
    const text = await cli('--tag', 'vehicle');
    assert.equal(text.status, 0, text.stderr);
    assert.match(text.stdout, /s3:\/\/effitag-local\/cars\/c\.jpg\s+vehicle 0\.73, sports car 0\.73/);
    const unknown = await cli('--tag', 'retreiver');
    assert.match(unknown.stderr, /"retreiver" is no ImageNet class or category/);
    assert.match(unknown.stdout, /no objects found/);
    const failures = await cli('--failed');
    assert.match(failures.stdout, /why it failed/);
    assert.match(failures.stdout, /s3:\/\/effitag-local\/cars\/broken\.jpg\s+unsupported-format: not a supported image/);
    assert.match(failures.stdout, /s3:\/\/effitag-local\/pets\/broken\.jpg\s+unsupported-format: not a supported image/);
    const bad = await cli('--tag', 'dog', '--min-p', '2');
    assert.notEqual(bad.status, 0);
    assert.match(bad.stderr, /--min-p must be a number in \[0, 1\]/);
  });

  it('a deleted object leaves the results; an overwrite replaces its entry', async () => {
    await stack.s3.send(new DeleteObjectCommand({ Bucket: stack.bucket, Key: 'pets/a.jpg' }));
    await stack.s3.send(new DeleteObjectCommand({ Bucket: stack.bucket, Key: 'cars/d.jpg' }));
    await waitFor('deletions unindexed', async () => ((await keys(['tennis ball'])).join() === 'cars/c.jpg,pets/b.jpg' ? true : undefined));
    assert.deepEqual(await keys(['dog']), ['pets/b.jpg']);
    assert.deepEqual(await keys([]), ['cars/c.jpg', 'pets/b.jpg']);

    const newer = await put(stack, 'cars/c.jpg', await gradientImage(300, 200, 'png'));
    const hitOf = async () => (await stack.index.search({ bucket: stack.bucket, tags: ['car'], limit: 10 })).hits;
    // The index writes the new version's entries before it deletes the old one's (so a tag is never
    // missing), and a search in between lists both: wait for the old one to go, as it must.
    const hits = await waitFor(
      'the overwrite indexed and the old entry deleted',
      async () => {
        const now = await hitOf();
        return now.some((h) => h.eTag === newer) && now.every((h) => h.key !== 'cars/c.jpg' || h.eTag === newer) ? now : undefined;
      },
      30_000,
    );
    assert.deepEqual(
      hits.map((h) => [h.key, h.eTag]),
      [['cars/c.jpg', newer]],
    );
    assert.equal((await stack.index.get(stack.bucket, 'cars/c.jpg'))?.eTag, newer);
  });

  it('`effitag backfill --index --prune` finds everything already indexed (metadata and index-only tiers alike), and nothing to prune', async () => {
    const report = await json('backfill', `s3://${stack.bucket}`, '--index', '--prune', '--json');
    // pets/b.jpg (metadata, current model), cars/c.jpg (index only), the two recorded failures; pets/notes.txt (not an image: never tagged).
    assert.deepEqual([report.listed, report.indexed, report.unchanged, report.untagged, report.errors], [5, 0, 4, 1, 0]);
    // The deletions reached the index as events: nothing left to prune among its 4 records.
    assert.deepEqual(report.pruned, { checked: 4, pruned: 0, errors: 0, errorSamples: [] });
  });

  it('a backfill reads what an index-only tier has tagged from the index: nothing current is enqueued again', async () => {
    const dir = await tempDir('effitag-search-cli-');
    await writeFile(join(dir, 'tiers.json'), JSON.stringify(TIERS));
    const report = await json('backfill', `s3://${stack.bucket}`, '--dry-run', '--json', '--tiers', join(dir, 'tiers.json'));
    // cars/c.jpg carries nothing on the object; its index record says it is current.
    assert.equal(report.enqueued, 0, JSON.stringify(report));
    // Backfills leave what is not an image alone, even when named like one (the two broken files).
    assert.deepEqual(report.skipped, { current: 2, 'not-an-image': 3 });
  });
});

/**
 * The near-duplicate threshold, measured per embedding space (issue 23, the gap in item 4):
 * `chooseThreshold` on scores where the answer is known, refusals where there is none, the whole
 * calibration on images with a stand-in network whose features are known to separate (and one
 * whose do not), the record beside the weights, and `dupes` using it by default (and saying which
 * threshold it used). Then the CLI on the embedded stack's random-weight B0 with real photographs:
 * the calibration refuses, records so, and `dupes` looks for no near groups there.
 */
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { copyFile, mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { type GetObjectCommand, PutObjectCommand, type S3Client } from '@aws-sdk/client-s3';
import sharp from 'sharp';
import { PHOTOS } from '../bench/hashes.ts';
import { SKIMAGE_DATA, skipWithoutPhotographs } from './support/photographs.ts';
import type { ImageOutputs, LoadedModel } from '../inference/engine.ts';
import type { DecodedImage } from '../inference/image.ts';
import type { EmbeddedStack } from '../local/stack.ts';
import { s3Calibrations } from '../pipeline/aws/near-calibrations.ts';
import { DEFAULT_MAX_DISTANCE, DEFAULT_MIN_SCORE, DupesError, findDupes } from '../pipeline/dupes.ts';
import {
  CALIBRATION_FORMAT,
  CalibrationError,
  calibrateNear,
  calibrationKey,
  chooseThreshold,
  directoryCalibrations,
  MIN_GAP,
  MIN_RECALL,
  rankAuc,
  scoreAt,
} from '../pipeline/near-calibration.ts';
import { seededRandom } from '../model/random-weights.ts';
import { tempDir } from './support/fixtures.ts';
import { put, startTestStack, waitFor } from './support/local-stack.ts';
import { runEffitag } from './support/effitag-local.ts';
import { nearRecord, unit } from './support/dupes-fixtures.ts';
import { indexedObject, MemoryIndex } from './support/memory-ports.ts';
import { MemoryVectorIndex } from './support/memory-vectors.ts';

describe('chooseThreshold: precision 1.000 on the sample, the highest recall, the widest margin', () => {
  it('a separable case: the midpoint between the most alike distinct pair and the least alike copy above it', () => {
    const copies = [0.97, 0.99, 0.96, 0.995];
    const distinct = [0.1, 0.5, 0.9, -0.2];
    const c = chooseThreshold({ copies, distinct });
    assert.equal(c.separable, true, c.reason);
    assert.equal(c.minScore, 0.93);
    assert.deepEqual([c.precision, c.recall, c.highestDistinct, c.lowestCopyAbove, c.auc], [1, 1, 0.9, 0.96, 1]);
    assert.deepEqual(scoreAt({ copies, distinct }, c.minScore!), {
      minScore: 0.93,
      precision: 1,
      recall: 1,
      truePositives: 4,
      falsePositives: 0,
      falseNegatives: 0,
    });
  });

  it('copies below the most alike distinct pair are given up, not the precision', () => {
    // Two of five copy pairs score under a distinct pair at 0.8: recall 0.6 at precision 1.
    const c = chooseThreshold({ copies: [0.5, 0.7, 0.85, 0.9, 0.95], distinct: [0.2, 0.8, 0.3] });
    assert.equal(c.separable, true, c.reason);
    assert.equal(c.minScore, 0.825);
    assert.equal(c.recall, 0.6);
    assert.equal(c.lowestCopy, 0.5);
    const at = scoreAt({ copies: [0.5, 0.7, 0.85, 0.9, 0.95], distinct: [0.2, 0.8, 0.3] }, c.minScore!);
    assert.deepEqual([at.precision, at.recall], [1, 0.6]);
  });

  it('refuses when no copy pair scores above every distinct pair (random weights: all near 1)', () => {
    const rand = seededRandom(5);
    const near1 = () => 0.9995 + 0.0005 * rand();
    const c = chooseThreshold({ copies: Array.from({ length: 200 }, near1), distinct: [...Array.from({ length: 2000 }, near1), 1] });
    assert.equal(c.separable, false);
    assert.equal(c.minScore, undefined);
    assert.match(
      c.reason!,
      /no pair of copies scores above the most alike pair of distinct images.*cannot tell copies from distinct images/,
    );
    assert.ok(Math.abs(c.auc - 0.5) < 0.05, `chance ranking: ${c.auc}`);
  });

  it(`refuses below ${MIN_RECALL * 100} % recall, and on a gap under ${MIN_GAP}`, () => {
    const few = chooseThreshold({ copies: [0.3, 0.4, 0.5, 0.95], distinct: [0.9, 0.1] });
    assert.equal(few.separable, false);
    assert.match(few.reason!, /only 25\.0 % of copy pairs score above/);
    const thin = chooseThreshold({ copies: [0.99995, 0.99996, 0.99999], distinct: [0.9999, 0.5] });
    assert.equal(thin.separable, false);
    assert.match(thin.reason!, /separated by cosine .* only .*no threshold there would hold/);
    assert.equal(thin.recall, 1, 'every copy pair is above: only the gap refuses it');
  });

  it('rankAuc: 1 for perfect ranking, 0.5 for ties, 0 reversed', () => {
    assert.equal(rankAuc([0.9, 0.8], [0.1, 0.2]), 1);
    assert.equal(rankAuc([0.5], [0.5]), 0.5);
    assert.equal(rankAuc([0.1], [0.9, 0.8]), 0);
  });
});

// ---------------------------------------------------------------------------------------------
// The whole calibration, on images, through a stand-in network.

/**
 * A stand-in network on the decoded pixels: each channel's mean over an 8×8 grid, less the
 * image's own mean (192 values). Smooth images keep it under resizing, recompression, a 10 % crop
 * and brightening; different images point it elsewhere. `flat` is a network that cannot separate:
 * one direction for every image, nudged by a millionth of its brightness.
 */
function gridModel(kind: 'grid' | 'flat', resolution = 64): LoadedModel & { seen: number[] } {
  const seen: number[] = [];
  const features = (img: DecodedImage): Float32Array => {
    const cells = 8,
      step = img.size / cells;
    const out = new Float32Array(cells * cells * 3);
    let total = 0;
    for (let i = 0; i < img.pixels.length; i++) total += img.pixels[i];
    const mean = total / img.pixels.length;
    if (kind === 'flat') return out.fill(1).map((v, i) => (i === 0 ? v + mean * 1e-6 : v));
    for (let y = 0; y < img.size; y++)
      for (let x = 0; x < img.size; x++)
        for (let c = 0; c < 3; c++) {
          const cell = (Math.floor(y / step) * cells + Math.floor(x / step)) * 3 + c;
          out[cell] += (img.pixels[(y * img.size + x) * 3 + c] - mean) / (step * step);
        }
    return out;
  };
  return {
    description: `stand-in ${kind}`,
    variant: 'b0',
    resolution,
    manifest: {} as LoadedModel['manifest'],
    seen,
    classify: async () => {
      throw new Error('not used');
    },
    classifyWithFeatures: async (images): Promise<ImageOutputs[]> => {
      seen.push(images.length);
      return images.map((img) => {
        assert.equal(img.size, resolution, 'decoded at the model resolution, as the worker does');
        return { probabilities: new Float32Array(1), features: features(img) };
      });
    },
    dispose: async () => {},
  };
}

/** A smooth picture: a random 3×3 colour grid blown up bilinearly to 240×180 (a JPEG). */
async function smoothPicture(seed: number): Promise<Buffer> {
  const rand = seededRandom(seed);
  const grid = Buffer.from(Array.from({ length: 3 * 3 * 3 }, () => Math.floor(255 * rand())));
  return sharp(grid, { raw: { width: 3, height: 3, channels: 3 } })
    .resize(240, 180, { kernel: 'linear' })
    .jpeg({ quality: 92 })
    .toBuffer();
}

const SPACE = 'b0@aaaaaaaaaaaa';

describe('calibrateNear: copies made, embedded as the worker embeds, a threshold or a refusal', () => {
  let images: { name: string; bytes: Uint8Array }[];
  before(async () => {
    images = await Promise.all(Array.from({ length: 10 }, async (_, i) => ({ name: `p${i}.jpg`, bytes: await smoothPicture(100 + i) })));
  });

  it('separable features: a threshold between the distinct pairs and the copies, in a valid record', async () => {
    const model = gridModel('grid');
    const { record, skipped } = await calibrateNear(model, SPACE, images, {
      copyDistance: DEFAULT_MAX_DISTANCE,
      batchSize: 4,
      now: () => new Date('2026-12-07T07:00:00Z'),
    });
    assert.deepEqual(skipped, []);
    assert.equal(record.format, CALIBRATION_FORMAT);
    assert.equal(record.space, SPACE);
    assert.equal(record.at, '2026-12-07T07:00:00.000Z');
    assert.equal(record.separable, true, record.reason);
    assert.deepEqual([record.sample.distinct, record.sample.images], [10, 100]);
    assert.deepEqual([record.scores.copyPairs, record.scores.distinctPairs], [10 * 45, 45 * 100]);
    assert.ok(model.seen.every((n) => n <= 4) && model.seen.reduce((a, b) => a + b, 0) === 100, 'batches of the tier size');
    const t = record.minScore!;
    assert.ok(t > record.scores.highestDistinct && t <= record.scores.lowestCopyAbove!, JSON.stringify(record.scores));
    assert.equal(record.scores.precision, 1);
    assert.ok(record.scores.recall >= MIN_RECALL, JSON.stringify(record.scores));
    // Every kind of edit is measured, each copy against its own original.
    assert.deepEqual(Object.keys(record.recallByKind!).sort(), [
      'brightened',
      'crop-10-left',
      'crop-10-top',
      'crop-5-each-edge',
      'jpeg-q30',
      'resized-25',
      'resized-50',
      'resized-recompressed-watermarked',
      'watermarked',
    ]);
    assert.equal(record.recallByKind!['jpeg-q30'], 1, JSON.stringify(record.recallByKind));
  });

  it('features that cannot separate: no threshold, and the record says why', async () => {
    const { record } = await calibrateNear(gridModel('flat'), SPACE, images, { copyDistance: DEFAULT_MAX_DISTANCE });
    assert.equal(record.separable, false);
    assert.equal(record.minScore, undefined);
    assert.match(record.reason!, /cannot tell copies from distinct images|barely tell|no threshold there would hold/);
  });

  it('skips what is not an image and a "distinct" image that is a copy; refuses too few', async () => {
    const withBad = [
      ...images,
      { name: 'notes.txt', bytes: Buffer.from('not a picture') },
      { name: 'p0-again.jpg', bytes: await sharp(images[0].bytes).jpeg({ quality: 60 }).toBuffer() },
    ];
    const { record, skipped } = await calibrateNear(gridModel('grid'), SPACE, withBad, { copyDistance: DEFAULT_MAX_DISTANCE });
    assert.deepEqual(
      skipped.map((s) => s.name),
      ['notes.txt', 'p0-again.jpg'],
    );
    assert.match(skipped[1].reason, /a copy of p0\.jpg \(perceptual hashes \d+ bits apart\)/);
    assert.equal(record.sample.distinct, 10);
    await assert.rejects(
      calibrateNear(gridModel('grid'), SPACE, images.slice(0, 5), { copyDistance: DEFAULT_MAX_DISTANCE }),
      (e: Error) => e instanceof CalibrationError && /^5 distinct image\(s\) usable, at least 8 needed/.test(e.message),
    );
  });
});

// ---------------------------------------------------------------------------------------------
// The record beside the weights, and dupes using it.

describe('dupes: the near threshold of each space from its calibration', () => {
  const indexed = (key: string, marker: string) => indexedObject(key, { marker });
  const OTHER = 'b0@bbbbbbbbbbbb';
  /** In SPACE: a pair at cosine ≈ 0.9950 and a pair at ≈ 0.9701 (0.95 joins both, 0.99 only the first). In OTHER: a pair at 0.97. */
  async function world() {
    const index = new MemoryIndex();
    const vectors = new MemoryVectorIndex();
    await vectors.put(SPACE, [
      { bucket: 'p', key: 'a1', vector: unit(1, 0, 0, 0) },
      { bucket: 'p', key: 'a2', vector: unit(1, 0.1, 0, 0) }, // 0.9950
      { bucket: 'p', key: 'b1', vector: unit(0, 0, 1, 0) },
      { bucket: 'p', key: 'b2', vector: unit(0, 0, 1, 0.25) }, // 0.9701
    ]);
    await vectors.put(OTHER, [
      { bucket: 'p', key: 'c1', vector: unit(1, 0, 0, 0) },
      { bucket: 'p', key: 'c2', vector: unit(1, 0.25, 0, 0) },
    ]);
    for (const k of ['a1', 'a2', 'b1', 'b2']) await index.put(indexed(k, SPACE));
    for (const k of ['c1', 'c2']) await index.put(indexed(k, OTHER));
    return { index, vectors };
  }
  const near = (r: Awaited<ReturnType<typeof findDupes>>) => r.groups.filter((g) => g.kind === 'near').map((g) => g.keys.join());

  it('uses the recorded threshold by default, says which it used; an uncalibrated space gets the fallback, marked', async () => {
    const dir = await tempDir('effitag-calibration-');
    const store = directoryCalibrations(dir);
    const where = await store.write(nearRecord({ space: SPACE, minScore: 0.99 }));
    assert.equal(where, join(dir, 'b0', 'near-calibration-aaaaaaaaaaaa.json'), 'beside the weights, named by their hash');
    assert.equal(calibrationKey(SPACE), 'b0/near-calibration-aaaaaaaaaaaa.json');
    const report = await findDupes({ ...(await world()), calibrations: store }, { bucket: 'p' });
    assert.deepEqual(near(report), ['a1,a2', 'c1,c2'], 'SPACE at 0.99: a1–a2 only; OTHER at the uncalibrated 0.95: c1–c2');
    assert.deepEqual(report.near, [
      { space: SPACE, source: 'calibrated', minScore: 0.99, at: '2026-12-07T07:00:00.000Z', recall: 0.8, distinct: 16 },
      { space: OTHER, source: 'uncalibrated', minScore: DEFAULT_MIN_SCORE },
    ]);
    // Without the record, SPACE falls back to 0.95 too, and both of its pairs join.
    const none = await findDupes(
      { ...(await world()), calibrations: directoryCalibrations(await tempDir('effitag-none-')) },
      { bucket: 'p' },
    );
    assert.deepEqual(near(none), ['a1,a2', 'b1,b2', 'c1,c2']);
    assert.deepEqual(
      none.near.map((t) => t.source),
      ['uncalibrated', 'uncalibrated'],
    );
  });

  it('a space measured inseparable gets no near groups; --min-score overrides every space', async () => {
    const dir = await tempDir('effitag-calibration-');
    const store = directoryCalibrations(dir);
    await store.write(
      nearRecord({ space: SPACE, separable: false, minScore: undefined, reason: 'cannot tell copies from distinct images' }),
    );
    const report = await findDupes({ ...(await world()), calibrations: store }, { bucket: 'p' });
    assert.deepEqual(near(report), ['c1,c2']);
    assert.equal(report.near[0].source, 'inseparable');
    assert.equal(report.checked.vectors, 6, 'its objects are still looked at (and counted)');
    const given = await findDupes({ ...(await world()), calibrations: store }, { bucket: 'p' }, { minScore: 0.96 });
    assert.deepEqual(near(given), ['a1,a2', 'b1,b2', 'c1,c2']);
    assert.deepEqual(
      given.near.map((t) => [t.source, 'minScore' in t ? t.minScore : undefined]),
      [
        ['given', 0.96],
        ['given', 0.96],
      ],
    );
  });

  it("another weights' record is not this space's; a damaged record is one clear error", async () => {
    const dir = await tempDir('effitag-calibration-');
    await mkdir(join(dir, 'b0'), { recursive: true });
    // A record filed under SPACE's name but measuring other weights: never used for SPACE.
    await writeFile(join(dir, calibrationKey(SPACE)), JSON.stringify(nearRecord({ space: OTHER })));
    await assert.rejects(
      findDupes({ ...(await world()), calibrations: directoryCalibrations(dir) }, { bucket: 'p' }),
      (e: Error) => e instanceof DupesError && /is the calibration of b0@bbbbbbbbbbbb, not of b0@aaaaaaaaaaaa/.test(e.message),
    );
    await writeFile(join(dir, calibrationKey(SPACE)), '{"format":"effitag-near-calibration/1","space":');
    await assert.rejects(
      findDupes({ ...(await world()), calibrations: directoryCalibrations(dir) }, { bucket: 'p' }),
      (e: Error) =>
        e instanceof DupesError &&
        /near-calibration-aaaaaaaaaaaa\.json is not a near-duplicate calibration record .*dupes calibrate again/.test(e.message),
    );
    // A separable record without a threshold is refused by the schema, not taken as 0.
    await writeFile(join(dir, calibrationKey(SPACE)), JSON.stringify(nearRecord({ space: SPACE, minScore: undefined })));
    await assert.rejects(findDupes({ ...(await world()), calibrations: directoryCalibrations(dir) }, { bucket: 'p' }), DupesError);
  });
});

describe('records beside published weights (S3)', () => {
  /** An S3 client double: objects in a map, a 403 for keys under `denied/`. */
  function fakeS3() {
    const objects = new Map<string, string>();
    const client = {
      send: async (cmd: GetObjectCommand | PutObjectCommand) => {
        const { Bucket, Key } = cmd.input;
        const where = `${Bucket}/${Key}`;
        if (cmd instanceof PutObjectCommand) {
          objects.set(where, String(cmd.input.Body));
          return {};
        }
        if (Key?.startsWith('denied/'))
          throw Object.assign(new Error('Access Denied'), { name: 'AccessDenied', $metadata: { httpStatusCode: 403 } });
        const text = objects.get(where);
        if (text === undefined) throw Object.assign(new Error('no such key'), { name: 'NoSuchKey', $metadata: { httpStatusCode: 404 } });
        return { Body: { transformToString: async () => text } };
      },
    };
    return { objects, client: client as unknown as S3Client };
  }

  it('writes under <model>/ beside manifest.json, reads it back, and a missing one is "uncalibrated"', async () => {
    const { objects, client } = fakeS3();
    const store = s3Calibrations(client, 's3://weights-bucket/effitag');
    assert.equal(await store.read(SPACE), undefined);
    const where = await store.write(nearRecord({ space: SPACE, minScore: 0.97 }));
    assert.equal(where, 's3://weights-bucket/effitag/b0/near-calibration-aaaaaaaaaaaa.json');
    assert.deepEqual([...objects.keys()], ['weights-bucket/effitag/b0/near-calibration-aaaaaaaaaaaa.json']);
    assert.equal((await store.read(SPACE))?.minScore, 0.97);
  });

  it('access denied is one line naming the object and the way out', async () => {
    const { client } = fakeS3();
    await assert.rejects(
      s3Calibrations(client, 's3://weights-bucket/denied').read(SPACE),
      (e: Error) =>
        e instanceof CalibrationError &&
        /^access denied reading s3:\/\/weights-bucket\/denied\/b0\/near-calibration-aaaaaaaaaaaa\.json: .*or pass --min-score$/.test(
          e.message,
        ),
    );
  });
});

// ---------------------------------------------------------------------------------------------
// The CLI on the embedded stack: its random-weight B0 and real photographs.

const photos = skipWithoutPhotographs();
const effitag = (...args: string[]) => runEffitag(args);

describe('effitag dupes calibrate on the embedded stack (random-weight B0)', { skip: photos }, () => {
  let stack: EmbeddedStack;
  let images: string;
  before(async () => {
    ({ stack } = await startTestStack({
      version: 1,
      tiers: { cpu: { variants: ['b0'], compute: { target: 'lambda-cpu', memoryMb: 2048 }, engine: 'ort', batchSize: 8 } },
      routing: { default: { tier: 'cpu' } },
    }));
    images = await tempDir('effitag-calibrate-images-');
    for (const p of PHOTOS.slice(0, 8)) await copyFile(join(SKIMAGE_DATA, p), join(images, p));
    await writeFile(join(images, 'README.txt'), 'not a picture');
    const astronaut = await readFile(join(SKIMAGE_DATA, 'astronaut.png'));
    const coffee = await readFile(join(SKIMAGE_DATA, 'coffee.png'));
    for (const [key, bytes] of [
      ['trip/astronaut.jpg', await sharp(astronaut).jpeg({ quality: 92 }).toBuffer()],
      ['trip/coffee.jpg', await sharp(coffee).jpeg({ quality: 90 }).toBuffer()],
    ] as const)
      await put(stack, key, bytes, { ContentType: 'image/jpeg' });
    await waitFor(
      'both embeddings stored',
      async () => {
        const space = stack.models.marker('b0');
        const got = await Promise.all(
          ['trip/astronaut.jpg', 'trip/coffee.jpg'].map((key) => stack.s3vectors.vectors.get(space, { bucket: stack.bucket, key })),
        );
        return got.every(Boolean) ? true : undefined;
      },
      120_000,
    );
  });
  after(() => stack?.stop());

  it('uncalibrated: dupes says so and what to run; calibrate refuses to invent a threshold, records it; dupes then finds no near group', async () => {
    const space = stack.models.marker('b0');
    const before = await effitag('dupes', `s3://${stack.bucket}/trip/`);
    assert.equal(before.code, 0, before.stderr);
    assert.match(
      before.stdout,
      new RegExp(`near threshold for ${space}: 0\\.95, UNCALIBRATED .*run effitag dupes calibrate --images DIR --model b0`),
    );
    const json = await effitag('dupes', `s3://${stack.bucket}/trip/`, '--json');
    assert.deepEqual(JSON.parse(json.stdout).near, [{ space, source: 'uncalibrated', minScore: DEFAULT_MIN_SCORE }]);
    assert.match(json.stderr, /UNCALIBRATED/);

    const cal = await effitag('dupes', 'calibrate', '--images', images);
    assert.equal(cal.code, 0, cal.stderr);
    assert.match(cal.stderr, /skipped README\.txt: not a readable image/);
    assert.match(
      cal.stdout,
      new RegExp(
        `^${space} on 8 distinct images \\(80 files, 360 copy pairs, 2,800 distinct pairs\\): .*cannot tell copies from distinct images`,
      ),
    );
    assert.match(
      cal.stdout,
      /no threshold chosen; recorded in .*near-calibration-[0-9a-f]{12}\.json: effitag dupes looks for no near groups/,
    );
    const stored = await directoryCalibrations(stack.models.location ?? '').read(space);
    assert.equal(stored?.separable, false);
    assert.equal(stored?.minScore, undefined);

    const after_ = await effitag('dupes', `s3://${stack.bucket}/trip/`, '--json');
    assert.equal(after_.code, 0, after_.stderr);
    const report = JSON.parse(after_.stdout) as { groups: { kind: string }[]; near: { source: string }[] };
    assert.deepEqual(
      report.groups.filter((g) => g.kind === 'near'),
      [],
      'the astronaut and the coffee cup (cosine > 0.999 on random weights) are no longer one near group',
    );
    assert.deepEqual(
      report.near.map((t) => t.source),
      ['inseparable'],
    );
    const text = await effitag('dupes', `s3://${stack.bucket}/trip/`);
    assert.match(
      text.stdout,
      /near threshold for .*: none, no near groups: its calibration \(\d{4}-\d\d-\d\d\) found that these weights cannot tell copies/,
    );
  });

  it('bad input: a folder that is not there, too few images, a model no tier uses: one line, exit 1, nothing recorded', async () => {
    const space = stack.models.marker('b0');
    const missing = await effitag('dupes', 'calibrate', '--images', join(images, 'nope'));
    assert.equal(missing.code, 1);
    assert.match(missing.stderr, /^effitag: cannot read --images .*nope: /);
    const few = await tempDir('effitag-few-');
    for (const p of PHOTOS.slice(0, 3)) await copyFile(join(SKIMAGE_DATA, p), join(few, p));
    const tooFew = await effitag('dupes', 'calibrate', '--images', few);
    assert.equal(tooFew.code, 1);
    assert.match(tooFew.stderr, /3 distinct image\(s\) usable, at least 8 needed/);
    const model = await effitag('dupes', 'calibrate', '--images', images, '--model', 'b3');
    assert.equal(model.code, 1);
    assert.match(model.stderr, /no tier tags with b3 \(the tiers' models: b0\)/);
    assert.equal(existsSync(join(stack.models.location ?? '', 'b3')), false);
    assert.ok(space);
  });
});

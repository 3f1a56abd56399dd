/**
 * The perceptual hash (inference/perceptual-hash.ts, issue 23 item 3): its arithmetic, its quality on
 * near-duplicates of real photographs at the default threshold (a regression in the hash fails here),
 * and where the worker puts it: the index record and the object's metadata, within the 2 KB budget.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { nearDuplicateSet, PIPELINE_HASHERS, scoreHasher } from '../bench/hashes.ts';
import { skipWithoutPhotographs } from './support/photographs.ts';
import { decodeImage } from '../inference/image.ts';
import { hammingDistance, isPerceptualHash, lumaThumbnail, perceptualHash } from '../inference/perceptual-hash.ts';
import { indexFromMetadata } from '../pipeline/index-writes.ts';
import { Counters } from '../pipeline/log.ts';
import { encodeTagged, KEYS, METADATA_BUDGET, metadataBytes } from '../pipeline/marker.ts';
import { DEFAULT_MAX_DISTANCE } from '../pipeline/dupes.ts';
import { taskMessage } from '../pipeline/task.ts';
import { makeWorker } from '../pipeline/worker.ts';
import { gradientImage } from './support/fixtures.ts';
import { fixedCatalog, MemoryIndex, MemoryQueue, MemoryStore, oneCpuTier } from './support/memory-ports.ts';

const photos = skipWithoutPhotographs();

describe('perceptual hash: arithmetic', () => {
  it('Hamming distance counts differing bits over all 64, and refuses what is not a hash', () => {
    assert.equal(hammingDistance('0000000000000000', '0000000000000000'), 0);
    assert.equal(hammingDistance('0000000000000000', 'ffffffffffffffff'), 64);
    assert.equal(hammingDistance('8000000000000001', '0000000000000000'), 2);
    assert.equal(hammingDistance('00000000f0000000', '0000000000000000'), 4, 'the low half counts');
    assert.throws(() => hammingDistance('xyz', '0000000000000000'), /not a perceptual hash/);
  });

  it('the luma thumbnail is a box average: a flat image stays flat at any size, a half-and-half one splits at the middle', () => {
    const flat = new Uint8Array(300 * 300 * 3).fill(200);
    for (const v of lumaThumbnail({ pixels: flat, width: 300, height: 300 })) assert.ok(Math.abs(v - 200) < 1e-9);
    const half = new Uint8Array(224 * 224 * 3);
    for (let y = 0; y < 224; y++) for (let x = 112; x < 224; x++) half.fill(255, (y * 224 + x) * 3, (y * 224 + x) * 3 + 3);
    const t = lumaThumbnail({ pixels: half, width: 224, height: 224 });
    assert.ok(t[5 * 32 + 15] < 1e-9 && Math.abs(t[5 * 32 + 16] - 255) < 1e-9, `${t[5 * 32 + 15]} | ${t[5 * 32 + 16]}`);
  });

  it('is 16 hex digits, the same for the same pixels, and close across model resolutions (one image, B0 and B3 decodes)', async () => {
    const png = await gradientImage(640, 480, 'png', 3);
    const a = perceptualHash(await decodeImage(png, 224));
    assert.ok(isPerceptualHash(a), a);
    assert.equal(perceptualHash(await decodeImage(png, 224)), a);
    const b3 = perceptualHash(await decodeImage(png, 300));
    assert.ok(hammingDistance(a, b3) <= 4, `224 vs 300 px: ${hammingDistance(a, b3)} bits`);
    const other = perceptualHash(await decodeImage(await gradientImage(640, 480, 'png', 4), 224));
    assert.ok(hammingDistance(a, other) > DEFAULT_MAX_DISTANCE, `another image: ${hammingDistance(a, other)} bits`);
  });
});

describe('perceptual hash: quality on near-duplicates of real photographs (a subset of bench hashes)', { skip: photos }, () => {
  it(`at the default ${DEFAULT_MAX_DISTANCE} bits: no false pair, every resize/recompress/brighten copy found, most watermarks`, async () => {
    // Five photographs and their quadrants: 25 distinct images, 10 copies each (250 files).
    const samples = await nearDuplicateSet(['astronaut.png', 'chelsea.png', 'coffee.png', 'rocket.jpg', 'motorcycle_left.png'], {
      tiles: true,
    });
    const r = await scoreHasher(samples, PIPELINE_HASHERS[0]);
    assert.equal(r.distinct, 25);
    assert.equal(r.images, 250);
    const msg = JSON.stringify({ atDefault: r.atDefault, byKind: r.recallByKindAtDefault });
    assert.ok(r.atDefault.precision >= 0.99, `precision ${msg}`);
    assert.ok(r.atDefault.recall >= 0.5, `recall ${msg}`);
    for (const kind of ['resized-50', 'resized-25', 'jpeg-q30', 'brightened'])
      assert.ok(r.recallByKindAtDefault[kind] >= 0.96, `${kind}: ${msg}`);
    assert.ok(r.recallByKindAtDefault.watermarked >= 0.9, `watermarked: ${msg}`);
    assert.ok(r.recallByKindAtDefault['resized-recompressed-watermarked'] >= 0.85, `combined: ${msg}`);
    assert.ok(r.medianHashMs < 20, `hash cost ${r.medianHashMs} ms`);
  });
});

describe('perceptual hash: written by the worker', () => {
  it('into the index record and the effitag-phash metadata, equal to the hash of the decoded image', async () => {
    const store = new MemoryStore();
    const queue = new MemoryQueue('cpu.fifo');
    const index = new MemoryIndex();
    const tiers = oneCpuTier('metadata');
    const models = fixedCatalog({ topClass: 207 });
    const worker = makeWorker({
      store,
      queue,
      tiers,
      models,
      index,
      counters: new Counters(),
      log: { log() {} } as never,
      options: { retryBaseSeconds: 0 },
    });
    const png = await gradientImage(64, 48, 'png', 2);
    const eTag = store.put('photos', 'a.png', png);
    await queue.send([
      taskMessage({
        v: 1,
        bucket: 'photos',
        key: 'a.png',
        eTag,
        revision: 's:1',
        size: png.length,
        tier: 'cpu',
        variant: 'b0',
        source: 'upload',
        enqueuedAt: '2026-12-07T00:00:00Z',
      }),
    ]);
    const [r] = await worker.handle(await queue.receive({ max: 10 }));
    assert.equal(r.outcome.status, 'tagged');
    const expected = perceptualHash(await decodeImage(png, 32)); // fixedCatalog's resolution
    assert.equal(store.metadataOf('photos', 'a.png')[KEYS.phash], expected);
    assert.equal((await index.get('photos', 'a.png'))?.phash, expected);
  });

  it('an index rebuilt from the metadata (a retried message, backfill --index) keeps the hash; a malformed one is left out', async () => {
    const index = new MemoryIndex();
    const head = (phash: string) => ({
      eTag: 'e1',
      contentLength: 10,
      lastModified: new Date('2026-12-07T00:00:00Z'),
      metadata: {
        [KEYS.status]: 'tagged',
        [KEYS.model]: 'b0@cafe',
        [KEYS.at]: '2026-12-07T00:00:01Z',
        [KEYS.etag]: 'e1',
        [KEYS.tags]: 'goldfish=0.900',
        [KEYS.phash]: phash,
      },
    });
    await indexFromMetadata(index, { bucket: 'p', key: 'a.jpg' }, head('0123456789abcdef') as never, () => new Date());
    assert.equal((await index.get('p', 'a.jpg'))?.phash, '0123456789abcdef');
    await indexFromMetadata(index, { bucket: 'p', key: 'b.jpg' }, head('not-a-hash') as never, () => new Date());
    assert.equal((await index.get('p', 'b.jpg'))?.phash, undefined);
  });

  it('the metadata carries it only where it costs no tag (the 2 KB budget): the tags come first', () => {
    const fixed = {
      model: 'b0@0123456789ab',
      at: '2026-12-07T00:00:00.000Z',
      etag: '"0123456789abcdef0123456789abcdef"',
      phash: '0123456789abcdef',
    };
    const predictions = [
      { index: 1, label: 'goldfish', probability: 0.6 },
      { index: 2, label: 'great white shark', probability: 0.3 },
    ];
    const roomy = encodeTagged({ user: 'x' }, predictions, fixed)!;
    assert.equal(roomy.metadata[KEYS.phash], fixed.phash);
    assert.equal(roomy.tagsWritten, 2);
    // User metadata that leaves room for both tags without the hash, and for one with it.
    const without = encodeTagged({}, predictions, { ...fixed, phash: undefined })!;
    const tight = { notes: 'n'.repeat(METADATA_BUDGET - metadataBytes(without.metadata) - 'notes'.length) };
    const full = encodeTagged(tight, predictions, fixed)!;
    assert.equal(full.tagsWritten, 2, 'no tag is given up for the hash');
    assert.equal(full.metadata[KEYS.phash], undefined);
    assert.ok(metadataBytes(full.metadata) <= METADATA_BUDGET);
  });
});

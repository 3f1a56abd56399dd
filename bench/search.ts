/**
 * `npm run bench -- search`: the tag index and the gallery on the embedded stand-ins.
 * 1. Index writes: images with a realistic spread of predictions (one class; a second above the
 *    threshold for half of them) written as the worker writes them → entries, write units and
 *    bytes per image, DynamoDB dollars per million images, and writes/s on dynalite.
 * 2. Search latency with ENTRIES index entries (dynalite on disk, as `npm start` keeps it): a leaf,
 *    a rolled-up and a broad tag, two tags, a prefix and a probability filter; first page and a later page.
 * 3. Gallery first paint with GALLERY_IMAGES images in the bucket and the index: headless Chromium
 *    (Debian's), time to first contentful paint, to the first page of tiles, and to its thumbnails.
 */
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { CreateBucketCommand, PutObjectCommand } from '@aws-sdk/client-s3';
import { chromium } from 'playwright-core';
import { startGallery } from '../gallery/server.ts';
import { startDynamoServer } from '../local/dynamo-server.ts';
import { startS3Server } from '../local/s3-server.ts';
import { IMAGENET_LABELS } from '../model/labels.ts';
import { seededRandom } from '../model/random-weights.ts';
import { dynamoClient, s3Client } from '../pipeline/aws/clients.ts';
import { DynamoTagIndex, ensureIndexTable } from '../pipeline/aws/dynamo-index.ts';
import { S3Store } from '../pipeline/aws/s3-store.ts';
import { generateCredentials } from '../pipeline/aws/local-credentials.ts';
import { mapLimit } from '../pipeline/concurrency.ts';
import { indexedObject } from '../pipeline/index-writes.ts';
import { DYNAMODB_PRICES } from '../tiers/prices.ts';
import { gradientImage } from '../test/support/fixtures.ts';
import { CHROMIUM, CHROMIUM_ARGS } from '../test/support/chromium.ts';
import { median, type BenchContext } from './util.ts';

const BUCKET = 'bench';

/** One image's predictions: a top class, and for half of the images a second one above the 0.1 threshold. */
function predictions(rand: () => number) {
  const first = Math.floor(rand() * 1000);
  const p1 = 0.4 + rand() * 0.55;
  const out = [{ index: first, label: IMAGENET_LABELS[first], probability: p1 }];
  if (rand() < 0.5) {
    const second = Math.floor(rand() * 1000);
    if (second !== first) out.push({ index: second, label: IMAGENET_LABELS[second], probability: Math.min(1 - p1, 0.1 + rand() * 0.2) });
  }
  return out;
}

export async function benchSearch(ctx: BenchContext, o: { entries: number; galleryImages: number; concurrency: number }) {
  const credentials = generateCredentials();
  const dynamo = await startDynamoServer({ directory: join(ctx.workDir, 'index'), credentials });
  const s3server = await startS3Server({ directory: join(ctx.workDir, 's3'), credentials });
  const ddb = dynamoClient({ dynamoEndpoint: dynamo.endpoint, credentials });
  const s3 = s3Client({ s3Endpoint: s3server.endpoint, credentials });
  try {
    await ensureIndexTable(ddb, 'bench');
    await s3.send(new CreateBucketCommand({ Bucket: BUCKET }));
    const index = new DynamoTagIndex(ddb, 'bench');
    const rand = seededRandom(11);
    const thumb = await gradientImage(640, 480, 'jpeg', 1);

    // 1 + 2: fill the index image by image, as the worker does, until it holds `entries` entries.
    ctx.log(`indexing images until the index holds ${o.entries.toLocaleString()} entries …`);
    let images = 0;
    let entries = 0;
    let tagCount = 0;
    const started = performance.now();
    const t0 = new Date(Date.UTC(2026, 0, 1)).getTime();
    while (entries < o.entries) {
      const batch = Array.from({ length: 200 }, () => images++);
      await mapLimit(batch, o.concurrency, async (i) => {
        const key = `photos/${String(i % 100).padStart(2, '0')}/img-${String(i).padStart(7, '0')}.jpg`;
        const object = indexedObject(
          { bucket: BUCKET, key },
          { eTag: `etag-${i}`, contentLength: 350_000, lastModified: new Date(t0 + i * 1000), metadata: {} },
          { marker: 'b0@0123456789ab', at: new Date().toISOString(), predictions: predictions(rand), imagenet: true },
          () => new Date(),
        );
        const put = await index.put(object);
        if (put.status === 'indexed') entries += put.written - 1;
        tagCount += object.tags.length;
      });
    }
    const writeSeconds = (performance.now() - started) / 1000;
    const wruPerImage = index.usage.writeUnits / images;
    const rruPerImage = index.usage.readUnits / images;
    const writes = {
      images,
      entries,
      entriesPerImage: entries / images,
      tagsPerImage: tagCount / images,
      bytesPerImage: index.usage.bytesWritten / images,
      writeUnitsPerImage: wruPerImage,
      readUnitsPerImage: rruPerImage,
      dollarsPerMillionImages: wruPerImage * DYNAMODB_PRICES.perMillionWrites + rruPerImage * DYNAMODB_PRICES.perMillionReads,
      imagesPerSecondDynalite: images / writeSeconds,
    };
    ctx.log(
      `  ${images} images → ${entries} entries (${writes.entriesPerImage.toFixed(2)} per image), ${wruPerImage.toFixed(2)} write units and ${rruPerImage.toFixed(2)} read units per image → $${writes.dollarsPerMillionImages.toFixed(2)} per 1M images; ${writes.imagesPerSecondDynalite.toFixed(0)} images/s into dynalite`,
    );

    // 2: search latency.
    const queries: { name: string; tags: string[]; prefix?: string; minProbability?: number }[] = [
      { name: 'leaf (golden retriever)', tags: ['golden retriever'] },
      { name: 'rolled-up (dog, 118 classes)', tags: ['dog'] },
      { name: 'broad (animal, 398 classes)', tags: ['animal'] },
      { name: 'everything (no tag)', tags: [] },
      { name: 'two tags (dog + ball)', tags: ['dog', 'ball'] },
      { name: 'dog, prefix photos/07/', tags: ['dog'], prefix: 'photos/07/' },
      { name: 'animal, p ≥ 0.8', tags: ['animal'], minProbability: 0.8 },
    ];
    const search: Record<string, unknown>[] = [];
    for (const q of queries) {
      const first: number[] = [];
      const second: number[] = [];
      let hits = 0;
      let scanned = 0;
      for (let run = 0; run < 9; run++) {
        let t = performance.now();
        const page = await index.search({ bucket: BUCKET, ...q, limit: 60 });
        first.push(performance.now() - t);
        hits = page.hits.length;
        scanned = page.scanned;
        if (page.cursor) {
          t = performance.now();
          await index.search({ bucket: BUCKET, ...q, limit: 60, cursor: page.cursor });
          second.push(performance.now() - t);
        }
      }
      const row = {
        query: q.name,
        hits,
        scanned,
        firstPageMs: median(first),
        nextPageMs: second.length ? median(second) : undefined,
      };
      search.push(row);
      ctx.log(
        `  ${q.name.padEnd(30)} ${String(hits).padStart(3)} hits (read ${scanned}) first page ${row.firstPageMs.toFixed(1)} ms${row.nextPageMs ? `, next ${row.nextPageMs.toFixed(1)} ms` : ''}`,
      );
    }

    // 3: gallery first paint; the newest `galleryImages` keys get real objects (thumbnails are made from them).
    let gallery: Record<string, unknown> = { skipped: `no Chromium at ${CHROMIUM}` };
    const executablePath = CHROMIUM;
    if (existsSync(executablePath)) {
      ctx.log(`storing the newest ${o.galleryImages.toLocaleString()} images in S3 …`);
      const newest = Array.from({ length: Math.min(o.galleryImages, images) }, (_, j) => images - 1 - j);
      await mapLimit(newest, 16, async (i) => {
        const key = `photos/${String(i % 100).padStart(2, '0')}/img-${String(i).padStart(7, '0')}.jpg`;
        await s3.send(new PutObjectCommand({ Bucket: BUCKET, Key: key, Body: thumb }));
      });
      const server = await startGallery({
        bucket: BUCKET,
        index,
        store: new S3Store(s3, { quirks: 's3rver' }),
        s3,
        queues: async () => [],
      });
      const browser = await chromium.launch({ executablePath, args: CHROMIUM_ARGS });
      const runs: { fcp: number; tiles: number; thumbs: number }[] = [];
      try {
        for (let run = 0; run < 3; run++) {
          const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
          await page.goto(server.url);
          // Times from navigation start, measured in the page.
          // A string, not a function: the bundler's helpers (esbuild's __name) do not exist in the page.
          const m = (await page.evaluate(`(async () => {
            const until = (test) => new Promise((resolve) => {
              const check = () => (test() ? resolve(performance.now()) : requestAnimationFrame(check));
              check();
            });
            const tiles = await until(() => document.querySelectorAll('#grid > li').length >= 60);
            const visible = () => [...document.querySelectorAll('#grid img')].slice(0, 18);
            const thumbs = await until(() => visible().length === 18 && visible().every((i) => i.complete && i.naturalWidth > 0));
            const fcp = performance.getEntriesByName('first-contentful-paint')[0]?.startTime ?? NaN;
            return { fcp, tiles, thumbs };
          })()`)) as { fcp: number; tiles: number; thumbs: number };
          runs.push(m);
          await page.close();
        }
      } finally {
        await browser.close();
        await server.close();
      }
      gallery = {
        images: newest.length,
        indexed: images,
        firstContentfulPaintMs: median(runs.map((r) => r.fcp)),
        firstPageOfTilesMs: median(runs.map((r) => r.tiles)),
        visibleThumbnailsMs: median(runs.map((r) => r.thumbs)),
        coldThumbnailsMs: runs[0].thumbs,
      };
      ctx.log(
        `  gallery: first paint ${(gallery.firstContentfulPaintMs as number).toFixed(0)} ms, 60 tiles ${(gallery.firstPageOfTilesMs as number).toFixed(0)} ms, 18 visible thumbnails ${(gallery.visibleThumbnailsMs as number).toFixed(0)} ms (cold ${runs[0].thumbs.toFixed(0)} ms)`,
      );
    }
    return {
      writes,
      search,
      gallery,
      summary: { writes, searchFirstPageMs: Object.fromEntries(search.map((r) => [r.query, r.firstPageMs])), gallery },
    };
  } finally {
    ddb.destroy();
    s3.destroy();
    await s3server.close();
    await dynamo.close();
  }
}

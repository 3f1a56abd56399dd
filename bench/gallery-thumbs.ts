/**
 * The gallery under the thumbnail overload of issue 21: six concurrent thumbnail requests for one
 * SIDE×SIDE interlaced PNG (default 9999×9999), each with another made-up `etag`, while a search runs. Prints
 * each thumbnail's latency, the searches' latencies (idle, then one every half second during the storm), and the process's
 * RSS before and at its peak (sampled every 20 ms). Stand-ins and gallery share this process, as
 * under `effitag local`.
 *
 *   node --import tsx bench/gallery-thumbs.ts                      # the gallery as it is
 *   GALLERY_MODULE=/path/to/old/server.ts node --import tsx bench/gallery-thumbs.ts   # another version
 *   SIDE=8000 node --import tsx bench/gallery-thumbs.ts            # an image under the pixel limit
 */
import { loadavg } from 'node:os';
import { join } from 'node:path';
import { CreateBucketCommand, PutObjectCommand } from '@aws-sdk/client-s3';
import sharp from 'sharp';
import type { startGallery as StartGallery } from '../gallery/server.ts';
import { startDynamoServer } from '../local/dynamo-server.ts';
import { startS3Server } from '../local/s3-server.ts';
import { scoreTags } from '../model/tag-hierarchy.ts';
import { dynamoClient, s3Client } from '../pipeline/aws/clients.ts';
import { DynamoTagIndex, ensureIndexTable } from '../pipeline/aws/dynamo-index.ts';
import { generateCredentials } from '../pipeline/aws/local-credentials.ts';
import { S3Store } from '../pipeline/aws/s3-store.ts';
import { gradientImage, tempDir } from '../test/support/fixtures.ts';

const SIDE = Number(process.env.SIDE ?? 9999);
const REQUESTS = 6;
const BUCKET = 'bench';
const { startGallery } = (await import(process.env.GALLERY_MODULE ?? '../gallery/server.ts')) as { startGallery: typeof StartGallery };

const credentials = generateCredentials();
const dir = await tempDir('effitag-bench-thumbs-');
const s3server = await startS3Server({ directory: join(dir, 's3'), credentials });
const dynamo = await startDynamoServer({ credentials });
const s3 = s3Client({ s3Endpoint: s3server.endpoint, credentials });
const ddb = dynamoClient({ dynamoEndpoint: dynamo.endpoint, credentials });
await s3.send(new CreateBucketCommand({ Bucket: BUCKET }));
await ensureIndexTable(ddb, 'index');
const index = new DynamoTagIndex(ddb, 'index');

// A smooth photo-like gradient blown up to SIDE×SIDE, interlaced (Adam7: libvips must decode it whole,
// SIDE² × 3 bytes, before it can shrink it): 13 MB to store and download, 100 Mpx to decode at 9999.
const png = await sharp(await gradientImage(64, 64, 'png', 3))
  .resize(SIDE, SIDE, { kernel: 'cubic' })
  .png({ compressionLevel: 9, progressive: true })
  .toBuffer();
await s3.send(new PutObjectCommand({ Bucket: BUCKET, Key: 'huge.png', Body: png }));
const tags = scoreTags([{ label: 'golden retriever', probability: 0.8 }], { imagenet: true });
for (let i = 0; i < 300; i += 20)
  await Promise.all(
    Array.from({ length: 20 }, (_, j) =>
      index.put({
        bucket: BUCKET,
        key: `dogs/${i + j}.jpg`,
        eTag: 'e',
        lastModified: new Date(Date.UTC(2026, 0, 1) + (i + j) * 1000),
        size: 1,
        variant: 'b0',
        marker: 'b0@bench',
        at: new Date().toISOString(),
        tags,
      }),
    ),
  );

const gallery = await startGallery({ bucket: BUCKET, index, store: new S3Store(s3, { quirks: 's3rver' }), s3, queues: async () => [] });
const timed = async (path: string) => {
  const started = performance.now();
  const res = await fetch(new URL(path, gallery.url));
  const body = Buffer.from(await res.arrayBuffer());
  return { ms: Math.round(performance.now() - started), status: res.status, type: res.headers.get('content-type'), bytes: body.length };
};
const search = '/api/search?tag=dog';

const idle = [];
for (let i = 0; i < 3; i++) idle.push((await timed(search)).ms);

global.gc?.();
const rssBefore = process.memoryUsage().rss;
let rssPeak = rssBefore;
const sampler = setInterval(() => {
  rssPeak = Math.max(rssPeak, process.memoryUsage().rss);
}, 20);
let stormDone = false;
const storm = Promise.all(Array.from({ length: REQUESTS }, (_, i) => timed(`/thumb?key=huge.png&etag=made-up-${i}`))).finally(() => {
  stormDone = true;
});
// A user's searches, one every half second (after the previous one answered), for as long as the
// thumbnails take (at least one). Back-to-back searches would themselves hold the shared event loop.
const during: number[] = [];
const searches = (async () => {
  do {
    during.push((await timed(search)).ms);
    if (!stormDone) await new Promise((r) => setTimeout(r, 500));
  } while (!stormDone);
})();
const thumbs = await storm;
await searches;
clearInterval(sampler);

console.log(
  JSON.stringify(
    {
      gallery: process.env.GALLERY_MODULE ?? 'gallery/server.ts',
      image: `${SIDE}×${SIDE} interlaced PNG, ${png.length} bytes`,
      loadAverage: loadavg()
        .map((l) => l.toFixed(1))
        .join(' '),
      thumbnails: thumbs.map((t) => ({ ms: t.ms, type: t.type })),
      searchIdleMs: idle,
      searchDuringMs: { count: during.length, median: [...during].sort((a, b) => a - b)[during.length >> 1], max: Math.max(...during) },
      rssMb: { before: Math.round(rssBefore / 2 ** 20), peak: Math.round(rssPeak / 2 ** 20) },
      decodes: (gallery as { stats?: { decodes: number } }).stats?.decodes,
    },
    null,
    2,
  ),
);
await gallery.close();
await s3server.close();
await dynamo.close();
process.exit(0);

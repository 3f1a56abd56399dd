/**
 * The gallery's "Similar" action and "Duplicates" view (issue 23, item 5) in headless Chromium, over
 * in-memory ports (index, bucket, vectors: what the views read is what they show) and the gallery's
 * own HTTP server, so its Host/Origin guard is the real one. Without Chromium the test says so and is
 * skipped; with CI=true a missing browser fails.
 */
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { request } from 'node:http';
import { after, before, describe, it } from 'node:test';
import { S3Client } from '@aws-sdk/client-s3';
import { chromium, type Browser, type Page } from 'playwright-core';
import { startGallery } from '../gallery/server.ts';
import { scoreTags } from '../model/tag-hierarchy.ts';
import { CHROMIUM, CHROMIUM_ARGS } from './support/chromium.ts';
import { gradientImage } from './support/fixtures.ts';
import { MemoryIndex, MemoryStore } from './support/memory-ports.ts';
import { MemoryVectorIndex } from './support/memory-vectors.ts';

const missing = !existsSync(CHROMIUM);
if (missing && process.env.CI === 'true') throw new Error(`CI=true and no Chromium at ${CHROMIUM}: .ci/run installs Debian's chromium`);
const skip = missing ? `no Chromium at ${CHROMIUM} (apt install chromium, or set EFFITAG_CHROMIUM): browser test skipped` : false;

const BUCKET = 'photos';
const SPACE = 'b0@cafe';
const unit = (...xs: number[]) => {
  const n = Math.hypot(...xs);
  return Float32Array.from(xs.map((x) => x / n));
};
/** Key → [embedding, perceptual hash]: two copies of a beach photo, a similar beach, a forest; a failed upload. */
const IMAGES: Record<string, [Float32Array, string]> = {
  'beach.jpg': [unit(1, 0, 0), 'a5a5a5a5a5a5a5a5'],
  'beach-small.jpg': [unit(1, 0.01, 0), 'a5a5a5a5a5a5a5a4'],
  'beach-evening.jpg': [unit(1, 0.2, 0.1), '0f0f0f0f0f0f0f0f'],
  'forest.jpg': [unit(0, 0.3, 1), 'ffff0000ffff0000'],
};

describe('gallery: Similar and Duplicates in headless Chromium', { skip }, () => {
  let browser: Browser;
  let page: Page;
  let gallery: Awaited<ReturnType<typeof startGallery>>;
  const vectors = new MemoryVectorIndex();
  const index = new MemoryIndex();

  before(async () => {
    const store = new MemoryStore();
    let shade = 0;
    for (const [key, [vector, phash]] of Object.entries(IMAGES)) {
      const eTag = store.put(BUCKET, key, await gradientImage(96, 64, 'jpeg', shade++));
      await index.put({
        bucket: BUCKET,
        key,
        eTag,
        lastModified: new Date(Date.UTC(2026, 11, 7, 0, shade)),
        size: 100,
        variant: 'b0',
        marker: SPACE,
        at: '2026-12-07T00:00:00Z',
        tags: scoreTags([{ label: key.startsWith('forest') ? 'valley' : 'seashore', probability: 0.8 }], { imagenet: true }),
        phash,
      });
      await vectors.put(SPACE, [{ bucket: BUCKET, key, vector }]);
    }
    // Signing only (no request is sent): links to originals need credentials, not a server.
    const s3 = new S3Client({
      region: 'us-east-1',
      endpoint: 'http://127.0.0.1:9',
      forcePathStyle: true,
      credentials: { accessKeyId: 'k', secretAccessKey: 's' },
    });
    gallery = await startGallery({ bucket: BUCKET, index, store, s3, vectors, queues: async () => [] });
    browser = await chromium.launch({ executablePath: CHROMIUM, args: CHROMIUM_ARGS });
    page = await browser.newPage();
    await page.goto(gallery.url);
    await page.waitForFunction(() => document.querySelectorAll('#grid > li').length === 4);
  });
  after(async () => {
    await browser?.close();
    await gallery?.close();
  });

  it('"Similar" on an image shows the others ordered by score, itself left out, and the URL can be reopened', async () => {
    const tile = page.locator('#grid li', { has: page.locator('p.key', { hasText: /^beach\.jpg$/ }) });
    const done = page.waitForResponse((r) => r.url().includes('/api/similar'));
    await tile.getByRole('button', { name: 'images similar to beach.jpg' }).click();
    await done;
    await page.waitForFunction(() => document.querySelector('#summary')?.textContent?.includes('most similar first'));
    const keys = await page.$$eval('#grid li p.key', (els) => els.map((e) => e.textContent));
    assert.deepEqual(keys, ['beach-small.jpg', 'beach-evening.jpg', 'forest.jpg']);
    const scores = await page.$$eval('#grid li p.score', (els) => els.map((e) => Number(e.textContent?.replace('similarity ', ''))));
    assert.equal(scores.length, 3);
    assert.deepEqual(
      [...scores].sort((a, b) => b - a),
      scores,
      'best first',
    );
    assert.ok(scores[0] > 0.99 && scores[2] < 0.5, JSON.stringify(scores));
    assert.match(page.url(), /\?similar=beach\.jpg$/);
    // Thumbnails load from the gallery itself (the tiles' images are real).
    await page.waitForFunction(() => [...document.querySelectorAll('#grid img')].every((i) => (i as HTMLImageElement).naturalWidth > 0));
    // The same view from its URL (a reload, a shared link).
    await page.reload();
    await page.waitForFunction(() => document.querySelectorAll('#grid li p.score').length === 3);
  });

  it('"Similar" of an image without an embedding says why, in the page', async () => {
    await index.put({
      bucket: BUCKET,
      key: 'old.jpg',
      eTag: 'e-old',
      lastModified: new Date(Date.UTC(2026, 11, 7, 1)),
      size: 1,
      variant: 'b0',
      marker: SPACE,
      at: '2026-12-07T01:00:00Z',
      tags: [],
    });
    const res = await page.request.get(`${gallery.url}api/similar?key=old.jpg`);
    assert.equal(res.status(), 400);
    // similar's core's message (pipeline/similar.ts), as the CLI gives it: the object, its model, the remedy.
    assert.match(
      (await res.json()).error,
      /\/old\.jpg has no embedding under the model that tagged it \(b0@cafe\).*effitag backfill --embeddings/,
    );
    await page.goto(`${gallery.url}?similar=old.jpg`);
    await page.waitForSelector('#summary .error');
    assert.match((await page.textContent('#summary')) ?? '', /Similar failed: s3:\/\/[^/]+\/old\.jpg has no embedding/);
  });

  it('"Duplicates" shows the exact group and the near group, each image once per group, with thumbnails', async () => {
    await page.goto(gallery.url);
    const done = page.waitForResponse((r) => r.url().includes('/api/dupes'));
    await page.getByRole('button', { name: 'Duplicates' }).click();
    await done;
    await page.waitForSelector('#groups');
    assert.equal(await page.getAttribute('#showDupes', 'aria-expanded'), 'true');
    const groups = await page.$$eval('#groups > li', (lis) =>
      lis.map((li) => ({
        title: li.querySelector('h3')?.textContent ?? '',
        keys: [...li.querySelectorAll('p.key')].map((p) => p.textContent),
      })),
    );
    assert.deepEqual(groups, [
      { title: 'Copies of one picture (hashes at most 1 bits apart)', keys: ['beach-small.jpg', 'beach.jpg'] },
      // The default 0.95: the evening beach is near the copies (cosine 0.976), the forest is not.
      { title: groups[1]?.title, keys: ['beach-evening.jpg', 'beach-small.jpg', 'beach.jpg'] },
    ]);
    assert.match(groups[1].title, /^Alike \(similarity 0\.9\d\d or more\)$/);
    assert.match((await page.textContent('#dupesBody > p')) ?? '', /^2 group\(s\) among 5 images; nothing is deleted$/);
    await page.waitForFunction(() => [...document.querySelectorAll('#groups img')].every((i) => (i as HTMLImageElement).naturalWidth > 0));
    assert.equal(await page.locator('#groups img').count(), 5);
  });

  it("the new endpoints keep the gallery's rules: another origin or Host is refused", async () => {
    const { port } = new URL(gallery.url);
    /** A GET with exactly these headers (fetch may not set Host). */
    const get = (path: string, headers: Record<string, string>) =>
      new Promise<number>((resolve, reject) => {
        const req = request({ host: '127.0.0.1', port, path, headers: { host: `127.0.0.1:${port}`, ...headers } }, (res) => {
          res.resume();
          resolve(res.statusCode ?? 0);
        });
        req.on('error', reject);
        req.end();
      });
    for (const path of ['/api/similar?key=beach.jpg', '/api/dupes']) {
      assert.equal(await get(path, {}), 200, path);
      assert.equal(await get(path, { origin: 'http://evil.example' }), 403, path);
      assert.equal(await get(path, { host: `evil.example:${port}` }), 403, path);
      // An <img> or a link on another site sends no Origin: its Sec-Fetch-Site gives it away.
      assert.equal(await get(path, { 'sec-fetch-site': 'cross-site' }), 403, path);
    }
    const bad = await page.request.get(`${gallery.url}api/dupes?maxDistance=99`);
    assert.equal(bad.status(), 400);
    assert.equal((await bad.json()).error, 'maxDistance must be a whole number of bits from 0 to 64, got "99"');
    const badScore = await page.request.get(`${gallery.url}api/dupes?minScore=2`);
    assert.equal(badScore.status(), 400);
    assert.equal((await badScore.json()).error, 'minScore must be a cosine above 0 and at most 1, got "2"');
  });
});

/**
 * The gallery answers its own page only, and no request can make it work without bound:
 * - Host and Origin: a DNS-rebound name, another port or another origin is refused (raw HTTP, and in
 *   headless Chromium: a rebinding page and a page on another loopback origin);
 * - thumbnails: only keys of the gallery's bucket (no `..`), cached by the object's real ETag (a wrong
 *   `etag` forces no work), one decode per version however many ask, at most two at once, a pixel limit;
 * - searches read a bounded number of index entries and hand back a cursor, which the page follows;
 * - a bad minP or limit is a 400 that says why.
 * Counters (decodes, refusals, gets in flight) decide, never the clock.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { createServer, request } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { CreateBucketCommand, PutObjectCommand, type S3Client } from '@aws-sdk/client-s3';
import { type Browser, chromium } from 'playwright-core';
import sharp from 'sharp';
import { startGallery } from '../gallery/server.ts';
import { startDynamoServer } from '../local/dynamo-server.ts';
import { startS3Server } from '../local/s3-server.ts';
import { dynamoClient, s3Client } from '../pipeline/aws/clients.ts';
import { DynamoTagIndex, ensureIndexTable } from '../pipeline/aws/dynamo-index.ts';
import { S3Store } from '../pipeline/aws/s3-store.ts';
import { generateCredentials } from '../pipeline/aws/local-credentials.ts';
import type { ObjectStore } from '../pipeline/ports.ts';
import { CHROMIUM, CHROMIUM_ARGS } from './support/chromium.ts';
import { gradientImage, tempDir } from './support/fixtures.ts';

const BUCKET = 'gallery';
/** Index entries: every fifth key under q/, the rest under p/. */
const ENTRIES = 320;
const MAX_SCANNED = 150;
/** The stand-ins accept only requests signed with the credentials they were started with. */
const CREDENTIALS = generateCredentials();
const PIXEL_LIMIT = 1000 * 1000;

let s3: S3Client;
let gallery: Awaited<ReturnType<typeof startGallery>>;
let port: number;
const stops: (() => Promise<unknown>)[] = [];
/** Whole-object downloads in flight, and the most seen at once. */
const gets = { now: 0, max: 0, total: 0 };
const qKeys: string[] = [];

interface Reply {
  status: number;
  type: string;
  cache: string;
  body: Buffer;
}

/** A GET with exactly these headers (fetch may not set Host). */
function get(path: string, headers: Record<string, string> = {}): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port, path, headers: { host: `127.0.0.1:${port}`, ...headers } }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () =>
        resolve({
          status: res.statusCode ?? 0,
          type: String(res.headers['content-type'] ?? ''),
          cache: String(res.headers['cache-control'] ?? ''),
          body: Buffer.concat(chunks),
        }),
      );
    });
    req.on('error', reject);
    req.end();
  });
}
const getJson = async (path: string) => {
  const r = await get(path);
  return { status: r.status, body: JSON.parse(r.body.toString('utf8')) };
};

async function put(bucket: string, key: string, body: Buffer): Promise<string> {
  return (await s3.send(new PutObjectCommand({ Bucket: bucket, Key: key, Body: body }))).ETag!.replace(/"/g, '');
}

/** Every hit of a search, following the cursor; each page's entries read and the pages it took. */
async function searchAll(query: string) {
  const keys: string[] = [];
  const scanned: number[] = [];
  let cursor: string | undefined;
  do {
    const { status, body } = await getJson(`/api/search?${query}${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ''}`);
    assert.equal(status, 200, JSON.stringify(body));
    keys.push(...body.hits.map((h: { key: string }) => h.key));
    scanned.push(body.scanned);
    cursor = body.cursor;
  } while (cursor);
  return { keys, scanned };
}

before(async () => {
  const dir = await tempDir('effitag-gallery-sec-');
  const s3server = await startS3Server({ directory: join(dir, 's3'), credentials: CREDENTIALS });
  const dynamo = await startDynamoServer({ credentials: CREDENTIALS });
  stops.push(
    () => s3server.close(),
    () => dynamo.close(),
  );
  s3 = s3Client({ s3Endpoint: s3server.endpoint, credentials: CREDENTIALS });
  const ddb = dynamoClient({ dynamoEndpoint: dynamo.endpoint, credentials: CREDENTIALS });
  await s3.send(new CreateBucketCommand({ Bucket: BUCKET }));
  await s3.send(new CreateBucketCommand({ Bucket: 'other' }));
  await put('other', 'secret.png', await gradientImage(64, 64, 'png', 9));
  await ensureIndexTable(ddb, 'index');
  const index = new DynamoTagIndex(ddb, 'index');
  const keys = Array.from({ length: ENTRIES }, (_, i) => `${i % 5 ? 'p' : 'q'}/${String(i).padStart(4, '0')}.jpg`);
  for (let i = 0; i < keys.length; i += 32)
    await Promise.all(
      keys.slice(i, i + 32).map((key, j) =>
        index.put({
          bucket: BUCKET,
          key,
          eTag: 'e',
          lastModified: new Date(Date.UTC(2026, 0, 1) + (i + j) * 60_000),
          size: 1,
          variant: 'b0',
          marker: 'b0@test',
          at: new Date().toISOString(),
          tags: [],
        }),
      ),
    );
  // Newest first.
  qKeys.push(...keys.filter((k) => k.startsWith('q/')).reverse());

  const real = new S3Store(s3, { quirks: 's3rver' });
  const store: ObjectStore = Object.assign(Object.create(real), {
    async get(...args: Parameters<ObjectStore['get']>) {
      gets.total++;
      gets.max = Math.max(gets.max, ++gets.now);
      try {
        return await real.get(...args);
      } finally {
        gets.now--;
      }
    },
  });
  gallery = await startGallery({
    bucket: BUCKET,
    index,
    store,
    s3,
    queues: async () => [],
    searchMaxScanned: MAX_SCANNED,
    thumbMaxPixels: PIXEL_LIMIT,
  });
  stops.unshift(() => gallery.close());
  port = Number(new URL(gallery.url).port);
});
after(async () => {
  for (const s of stops) await s().catch(() => {});
});

describe('gallery: Host and Origin', () => {
  it('answers its loopback names on its own port', async () => {
    for (const host of [`127.0.0.1:${port}`, `localhost:${port}`, `LOCALHOST:${port}`]) {
      assert.equal((await get('/api/status', { host })).status, 200, host);
      assert.equal((await get('/', { host })).status, 200, host);
    }
  });

  it('refuses a rebound name or another port (DNS rebinding), for the page, the API and thumbnails', async () => {
    const before = gallery.stats.refused;
    for (const host of [`rebind.example:${port}`, `127.0.0.1:${port + 1}`, '127.0.0.1', `127.0.0.2:${port}`])
      for (const path of ['/', '/api/search', '/api/status', '/api/suggest?q=dog', '/thumb?key=p/0001.jpg&etag=e']) {
        const r = await get(path, { host });
        assert.equal(r.status, 403, `${host} ${path}`);
        assert.match(r.body.toString(), /is not this server's address/);
      }
    assert.equal(gallery.stats.refused - before, 20);
  });

  it('refuses calls from another origin, and cross-site requests that send no Origin (an <img> elsewhere)', async () => {
    for (const origin of [`http://127.0.0.1:${port + 1}`, 'http://rebind.example', 'null', `https://127.0.0.1:${port}`])
      assert.equal((await get('/api/search', { origin })).status, 403, origin);
    assert.equal((await get('/api/search', { origin: `http://localhost:${port}` })).status, 200);
    for (const site of ['cross-site', 'same-site']) {
      assert.equal((await get('/api/search', { 'sec-fetch-site': site })).status, 403, site);
      assert.equal((await get('/thumb?key=p/0001.jpg', { 'sec-fetch-site': site })).status, 403, site);
      // The page holds no data: a link from elsewhere may open it.
      assert.equal((await get('/', { 'sec-fetch-site': site })).status, 200, site);
    }
    for (const site of ['same-origin', 'none']) assert.equal((await get('/api/search', { 'sec-fetch-site': site })).status, 200, site);
  });
});

describe('gallery: thumbnails', () => {
  it("serves no other bucket's object: keys with . or .. segments are refused before any request", async () => {
    const decodes = gallery.stats.decodes;
    for (const key of ['../other/secret.png', 'a/../../other/secret.png', './x', 'a/./b']) {
      const r = await get(`/thumb?key=${encodeURIComponent(key)}&etag=x`);
      assert.equal(r.status, 400, key);
      assert.match(r.body.toString(), /"\." or "\.\." segment/);
    }
    assert.equal(gallery.stats.decodes, decodes);
  });

  it("caches by the object's real ETag: six requests with made-up etags make one thumbnail, later ones none", async () => {
    const eTag = await put(BUCKET, 'pics/one.png', await gradientImage(400, 300, 'png', 1));
    const decodes = gallery.stats.decodes;
    const replies = await Promise.all(Array.from({ length: 6 }, (_, i) => get(`/thumb?key=pics/one.png&etag=bogus-${i}`)));
    for (const r of replies) {
      assert.equal(r.status, 200);
      assert.equal(r.type, 'image/webp');
      assert.equal(r.cache, 'no-cache', 'a wrong etag is not kept by the browser');
    }
    assert.equal(gallery.stats.decodes - decodes, 1);
    const right = await get(`/thumb?key=pics/one.png&etag=${eTag}`);
    assert.match(right.cache, /immutable/);
    assert.deepEqual(right.body, replies[0].body);
    assert.equal(gallery.stats.decodes - decodes, 1, 'served from the cache');
    assert.deepEqual(
      await sharp(right.body)
        .metadata()
        .then((m) => [m.width, m.height]),
      [256, 256],
    );

    // A new version is a new thumbnail, whatever etag the URL names.
    await put(BUCKET, 'pics/one.png', await gradientImage(300, 400, 'png', 2));
    const fresh = await get(`/thumb?key=pics/one.png&etag=${eTag}`);
    assert.equal(gallery.stats.decodes - decodes, 2);
    assert.notDeepEqual(fresh.body, right.body);
    assert.equal(fresh.cache, 'no-cache');
  });

  it('refuses images over the pixel limit with a placeholder, once per version', async () => {
    await put(BUCKET, 'pics/huge.png', await gradientImage(1100, 1000, 'png', 3)); // 1.1 Mpx > 1 Mpx
    const decodes = gallery.stats.decodes;
    for (let i = 0; i < 3; i++) {
      const r = await get(`/thumb?key=pics/huge.png&etag=x${i}`);
      assert.equal(r.status, 200);
      assert.equal(r.type, 'image/svg+xml');
      assert.match(r.body.toString(), /no preview/);
    }
    assert.equal(gallery.stats.decodes - decodes, 1, 'the refusal is remembered for that ETag');
  });

  it('makes at most two thumbnails at once', async () => {
    const keys = Array.from({ length: 8 }, (_, i) => `pics/many-${i}.jpg`);
    for (const [i, key] of keys.entries()) await put(BUCKET, key, await gradientImage(600, 400, 'jpeg', i));
    gets.max = 0;
    const total = gets.total;
    const replies = await Promise.all(keys.map((k) => get(`/thumb?key=${k}&etag=e`)));
    assert.ok(replies.every((r) => r.type === 'image/webp'));
    assert.equal(gets.total - total, 8);
    assert.ok(gets.max >= 1 && gets.max <= 2, `downloads at once: ${gets.max}`);
  });

  it('a missing object gets the placeholder', async () => {
    const r = await get('/thumb?key=pics/none.png&etag=e');
    assert.equal(r.type, 'image/svg+xml');
  });
});

describe('gallery: searches', () => {
  it('a bad minP or limit is a 400 that says why', async () => {
    for (const [q, msg] of [
      ['minP=abc', /minP must be a number from 0 to 1, got "abc"/],
      ['minP=1.5', /minP must be a number from 0 to 1, got "1\.5"/],
      ['limit=0', /limit must be an integer from 1 to 200, got "0"/],
      ['limit=x', /limit must be an integer/],
    ] as const) {
      const { status, body } = await getJson(`/api/search?${q}`);
      assert.equal(status, 400, q);
      assert.match(body.error, msg);
    }
    assert.equal((await getJson('/api/search?minP=0.5')).status, 200);
  });

  it('reads a bounded number of entries per request and hands back a cursor, losing and repeating nothing', async () => {
    const none = await searchAll('prefix=zzz');
    assert.deepEqual(none.keys, []);
    assert.ok(none.scanned.length > 1, `pages: ${none.scanned}`);
    assert.ok(
      none.scanned.every((n) => n <= MAX_SCANNED),
      `entries read per page: ${none.scanned}`,
    );
    assert.ok(none.scanned.reduce((a, b) => a + b) >= ENTRIES, 'every entry was read in the end');

    const q = await searchAll('prefix=q/');
    assert.deepEqual(q.keys, qKeys, 'every match once, newest first');
    assert.ok(q.scanned.every((n) => n <= MAX_SCANNED));
  });
});

const missing = !existsSync(CHROMIUM);
if (missing && process.env.CI === 'true') throw new Error(`CI=true and no Chromium at ${CHROMIUM}: .ci/run installs Debian's chromium`);
const skip = missing ? `no Chromium at ${CHROMIUM}: browser part skipped` : false;

describe('gallery in headless Chromium: other pages, and cursors', { skip }, () => {
  let browser: Browser;
  before(async () => {
    // rebind.test resolves to loopback, as a rebound attacker's name would.
    browser = await chromium.launch({
      executablePath: CHROMIUM,
      args: [...CHROMIUM_ARGS, '--host-resolver-rules=MAP rebind.test 127.0.0.1'],
    });
  });
  after(async () => {
    await browser?.close();
  });

  it('a DNS-rebinding page cannot read searches or the status', async () => {
    const page = await browser.newPage();
    const origin = `http://rebind.test:${port}`;
    // The hostile name now resolves to loopback: its page (here, what the gallery answers for that
    // name) runs the attacker's script, whose calls are same-origin for the browser.
    const refused = gallery.stats.refused;
    const doc = await page.goto(`${origin}/`);
    assert.equal(doc?.status(), 403);
    const answers = await page.evaluate(async () =>
      Promise.all(
        ['/api/search', '/api/status'].map(async (p) => {
          const r = await fetch(p);
          return [r.status, await r.text()] as const;
        }),
      ),
    );
    for (const [status, text] of answers) {
      assert.equal(status, 403);
      assert.doesNotMatch(text, /hits|queues/);
    }
    assert.ok(gallery.stats.refused - refused >= 3, 'the page and both calls were refused');
    await page.close();
  });

  it('a page on another loopback origin makes the gallery do no work', async () => {
    await put(BUCKET, 'pics/lure.png', await gradientImage(200, 200, 'png', 5));
    // Another local server's page (a dev server, a hostile page cached on loopback).
    const other = createServer((_req, res) => {
      res.writeHead(200, { 'content-type': 'text/html' });
      res.end(`<img id="i" src="http://127.0.0.1:${port}/thumb?key=pics/lure.png&etag=1">`);
    });
    await new Promise<void>((r) => other.listen(0, '127.0.0.1', r));
    const page = await browser.newPage();
    try {
      const decodes = gallery.stats.decodes;
      const refused = gallery.stats.refused;
      await page.goto(`http://localhost:${(other.address() as AddressInfo).port}/`);
      await page.evaluate(async (p) => {
        await fetch(`http://127.0.0.1:${p}/api/search`, { mode: 'no-cors' }).catch(() => {});
      }, port);
      await page.waitForFunction(() => (document.getElementById('i') as HTMLImageElement).complete);
      assert.equal(gallery.stats.refused - refused, 2, 'the image and the call were refused');
      assert.equal(gallery.stats.decodes, decodes, 'no thumbnail made for another page');
    } finally {
      await page.close();
      other.close();
    }
  });

  it('the page follows the cursor of short pages to the end', async () => {
    const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
    let searches = 0;
    page.on('request', (r) => {
      if (r.url().includes('/api/search')) searches++;
    });
    // Hold the first follow-up page: until it comes, the page says it is still searching, not "No images".
    let release!: () => void;
    const gate = new Promise<void>((r) => {
      release = r;
    });
    let asked = false;
    let reached!: () => void;
    const followed = new Promise<void>((r) => {
      reached = () => {
        asked = true;
        r();
      };
    });
    const later = /\/api\/search\?.*cursor=/;
    await page.route(
      later,
      async (route) => {
        reached();
        await gate;
        await route.continue();
      },
      { times: 1 },
    );
    await page.goto(`${gallery.url}?prefix=zzz`);
    // The first page is empty and has a cursor: the page must ask for the next (else it would stay
    // "Searching…", and this fails after 60 s).
    await Promise.race([
      followed,
      page.waitForFunction(() => document.querySelector('#summary')?.textContent !== 'Searching…', undefined, { timeout: 60_000 }),
    ]);
    assert.ok(asked, 'the page asked for the next page');
    assert.equal(await page.textContent('#summary'), 'Searching…');
    assert.equal(await page.$$eval('#grid > li', (els) => els.length), 0);
    release();
    await page.waitForFunction(() => document.querySelector('#summary')?.textContent === 'No images tagged.');
    assert.ok(searches > 1, `searches: ${searches}`);

    await page.goto(`${gallery.url}?prefix=q/`);
    const count = () => page.$$eval('#grid > li', (els) => els.length);
    await page.waitForFunction(() => document.querySelectorAll('#grid > li').length > 0);
    // Each scroll to the end loads more (each round adds tiles, so this ends).
    for (let n = await count(); n < qKeys.length; n = await count()) {
      await page.evaluate(() => window.scrollTo(0, document.body.scrollHeight));
      // 60 s as the waits above: a clean-clone CI run under load took over 15 s for one scroll.
      await page.waitForFunction((shown) => document.querySelectorAll('#grid > li').length > shown, n, { timeout: 60_000 });
    }
    await page.waitForFunction(() => document.querySelector('#more')?.hasAttribute('hidden'));
    assert.deepEqual(await page.$$eval('#grid li p.key', (els) => els.map((e) => e.textContent)), qKeys);
    assert.equal(await page.textContent('#summary'), `${qKeys.length} images tagged, newest first`);
    await page.close();
  });
});

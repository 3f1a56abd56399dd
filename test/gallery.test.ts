/**
 * The gallery in a real browser: headless Chromium (Debian's `chromium`, driven by playwright-core;
 * no browser download) against `startGallery` over the embedded stand-ins (s3rver, dynalite, fauxqs).
 * Searches by leaf, rolled-up and two tags, filters, pages by scrolling, and reads the status view.
 * Without Chromium the test says so and is skipped; with CI=true a missing browser fails.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { copyFileSync, existsSync } from 'node:fs';
import { join } from 'node:path';
import { CreateBucketCommand, PutObjectCommand } from '@aws-sdk/client-s3';
import { chromium, type Browser, type Page, type Request } from 'playwright-core';
import { startGallery } from '../gallery/server.ts';
import { startDynamoServer } from '../local/dynamo-server.ts';
import { startS3Server } from '../local/s3-server.ts';
import { startSqsServer } from '../local/sqs-server.ts';
import { scoreTags } from '../model/tag-hierarchy.ts';
import { dynamoClient, s3Client, sqsClient } from '../pipeline/aws/clients.ts';
import { DynamoTagIndex, ensureIndexTable } from '../pipeline/aws/dynamo-index.ts';
import { S3Store } from '../pipeline/aws/s3-store.ts';
import { SqsQueue } from '../pipeline/aws/sqs-queue.ts';
import { generateCredentials } from '../pipeline/aws/local-credentials.ts';
import { DEAD_LETTER_ATTRIBUTES } from '../pipeline/worker-stages.ts';
import { CHROMIUM, CHROMIUM_ARGS } from './support/chromium.ts';
import { gradientImage, tempDir } from './support/fixtures.ts';

const missing = !existsSync(CHROMIUM);
if (missing && process.env.CI === 'true') throw new Error(`CI=true and no Chromium at ${CHROMIUM}: .ci/run installs Debian's chromium`);
const skip = missing ? `no Chromium at ${CHROMIUM} (apt install chromium, or set EFFITAG_CHROMIUM): browser test skipped` : false;
if (skip) process.stdout.write(`# ${skip}\n`);

const BUCKET = 'gallery';
let browser: Browser;
let page: Page;
let url: string;
const stops: (() => Promise<unknown>)[] = [];

const shown = (p: Page) => p.$$eval('#grid li p.key', (els) => els.map((e) => e.textContent));

async function search(tags: string, extra: { minP?: string; prefix?: string } = {}) {
  await page.fill('#tags', tags);
  await page.fill('#minP', extra.minP ?? '');
  await page.fill('#prefix', extra.prefix ?? '');
  const done = page.waitForResponse((r) => r.url().includes('/api/search'));
  await page.press('#tags', 'Enter');
  await done;
  await page.waitForFunction(() => !document.querySelector('#summary')?.textContent?.includes('…'));
}

describe('gallery in headless Chromium', { skip }, () => {
  before(async () => {
    const dir = await tempDir('effitag-gallery-');
    const credentials = generateCredentials();
    const s3server = await startS3Server({ directory: join(dir, 's3'), credentials });
    const dynamo = await startDynamoServer({ credentials });
    const sqsServer = await startSqsServer({ credentials });
    stops.push(
      () => s3server.close(),
      () => dynamo.close(),
      () => sqsServer.close(),
    );
    const s3 = s3Client({ s3Endpoint: s3server.endpoint, credentials });
    const ddb = dynamoClient({ dynamoEndpoint: dynamo.endpoint, credentials });
    const sqs = sqsClient({ sqsEndpoint: sqsServer.endpoint, credentials });
    await s3.send(new CreateBucketCommand({ Bucket: BUCKET }));
    await ensureIndexTable(ddb, 'index');
    const index = new DynamoTagIndex(ddb, 'index');

    // Three photos with known tags (as the worker indexes them), newest last, and 130 fish.
    const photos: [string, [string, number][]][] = [
      [
        'pets/rex.jpg',
        [
          ['golden retriever', 0.73],
          ['tennis ball', 0.27],
        ],
      ],
      ['pets/tom.jpg', [['tabby', 0.81]]],
      ['cars/fast.jpg', [['sports car', 0.9]]],
    ];
    let minute = 0;
    const add = async (key: string, labels: [string, number][], body: Buffer) => {
      const eTag = (await s3.send(new PutObjectCommand({ Bucket: BUCKET, Key: key, Body: body }))).ETag!.replace(/"/g, '');
      await index.put({
        bucket: BUCKET,
        key,
        eTag,
        lastModified: new Date(Date.UTC(2026, 5, 1, 0, minute++)),
        size: body.length,
        variant: 'b0',
        marker: 'b0@test',
        at: new Date().toISOString(),
        tags: scoreTags(
          labels.map(([label, probability]) => ({ label, probability })),
          { imagenet: true },
        ),
      });
    };
    // A tagging that failed for good, as the worker records it.
    await index.put({
      bucket: BUCKET,
      key: 'pets/notes.jpg',
      eTag: 'x',
      lastModified: new Date(Date.UTC(2026, 4, 1)),
      size: 12,
      variant: 'b0',
      marker: 'b0@test',
      at: new Date().toISOString(),
      tags: [],
      failure: 'not-an-image: unsupported image format',
    });
    const fish = await gradientImage(64, 64, 'jpeg', 5);
    for (let i = 0; i < 130; i++) await add(`tank/fish-${String(i).padStart(3, '0')}.jpg`, [['goldfish', 0.6]], fish);
    for (const [i, [key, labels]] of photos.entries()) await add(key, labels, await gradientImage(400, 300, 'jpeg', i));

    // A tier queue with one dead-lettered task, and one still waiting.
    const dlq = await sqsServer.createQueue('effitag-pets-dlq.fifo', { FifoQueue: 'true' });
    const q = await sqsServer.createQueue('effitag-pets.fifo', {
      FifoQueue: 'true',
      RedrivePolicy: JSON.stringify({ deadLetterTargetArn: dlq.arn, maxReceiveCount: '3' }),
    });
    const tierQueue = new SqsQueue(sqs, q.url, 'effitag-pets.fifo');
    await new SqsQueue(sqs, dlq.url).send([
      {
        body: JSON.stringify({
          v: 1,
          bucket: BUCKET,
          key: 'pets/broken.jpg',
          eTag: 'e',
          size: 1,
          tier: 'pets',
          variant: 'b0',
          source: 'upload',
          enqueuedAt: new Date().toISOString(),
        }),
        groupId: 'g',
        deduplicationId: 'd1',
        attributes: { [DEAD_LETTER_ATTRIBUTES.reason]: 'retry: inference: out of memory' },
      },
    ]);
    await tierQueue.send([{ body: '{}', groupId: 'g', deduplicationId: 'w1' }]);

    const gallery = await startGallery({
      bucket: BUCKET,
      index,
      store: new S3Store(s3, { quirks: 's3rver' }),
      s3,
      queues: async () => [{ name: 'pets', queue: tierQueue }],
    });
    stops.unshift(() => gallery.close());
    url = gallery.url;
    browser = await chromium.launch({ executablePath: CHROMIUM, args: CHROMIUM_ARGS });
    page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
    await page.goto(url);
    await page.waitForSelector('#grid li');
  });
  after(async () => {
    await browser?.close();
    for (const s of stops) await s().catch(() => {});
  });

  it('opens on everything tagged, newest first, one page at a time, with server-sized thumbnails and alt text', async () => {
    const keys = await shown(page);
    assert.equal(keys.length, 60);
    assert.deepEqual(keys.slice(0, 4), ['cars/fast.jpg', 'pets/tom.jpg', 'pets/rex.jpg', 'tank/fish-129.jpg']);
    assert.match((await page.textContent('#summary'))!, /^60\+ images tagged, newest first$/);
    const img = await page.waitForFunction(() => {
      const i = document.querySelector<HTMLImageElement>('#grid img');
      return i?.complete && i.naturalWidth ? [i.naturalWidth, i.naturalHeight, i.alt] : undefined;
    });
    assert.deepEqual(await img.jsonValue(), [256, 256, 'cars/fast.jpg: sports car 0.90']);
    const alts = await page.$$eval('#grid img', (els) => els.map((e) => (e as HTMLImageElement).alt));
    assert.ok(alts.every((a) => a.length > 0));
    assert.match((await page.getAttribute('#grid a', 'href')) ?? '', /X-Amz-Signature=/, 'originals through presigned links');
  });

  it('finds by leaf tag, rolled-up tag and two tags; filters by probability and prefix', async () => {
    await search('golden retriever');
    assert.deepEqual(await shown(page), ['pets/rex.jpg']);
    await search('dog');
    assert.deepEqual(await shown(page), ['pets/rex.jpg']);
    assert.match((await page.textContent('#grid li .chips'))!, /dog 0\.73.*golden retriever 0\.73.*tennis ball 0\.27/);
    await search('carnivore');
    assert.deepEqual(await shown(page), ['pets/tom.jpg', 'pets/rex.jpg']);
    await search('carnivore, ball');
    assert.deepEqual(await shown(page), ['pets/rex.jpg']);
    await search('vehicle');
    assert.deepEqual(await shown(page), ['cars/fast.jpg']);
    await search('animal', { minP: '0.75' });
    assert.deepEqual(await shown(page), ['pets/tom.jpg']);
    await search('animal', { prefix: 'tank/fish-12' });
    assert.equal((await shown(page)).length, 10);
    await search('giraffe');
    assert.deepEqual(await shown(page), []);
    assert.equal(await page.textContent('#summary'), 'No images tagged giraffe.');
    // The search is in the address, so it can be shared and the back button works.
    assert.match(page.url(), /\?tag=giraffe/);
  });

  it('pages by scrolling: 130 fish in pages of 60', async () => {
    await search('fish');
    assert.equal((await shown(page)).length, 60);
    for (const expected of [120, 130]) {
      await page.evaluate(() => window.scrollTo(0, document.body.scrollHeight));
      await page
        .waitForFunction((n) => document.querySelectorAll('#grid > li').length === n, expected, { timeout: 10_000 })
        .catch(async (err) => {
          throw new Error(`${err.message}; shown ${(await shown(page)).length}, summary "${await page.textContent('#summary')}"`);
        });
    }
    assert.equal(await page.isHidden('#more'), true);
    const keys = await shown(page);
    assert.equal(new Set(keys).size, 130);
    assert.equal(keys[0], 'tank/fish-129.jpg');
    assert.equal(keys.at(-1), 'tank/fish-000.jpg');
  });

  it('a new search while a page of the old one is still loading shows only the new results', async () => {
    // Hold every page of the fish search until the cat search has been run (CI once lost a search
    // that was run while the previous one's next page was in flight).
    let release!: () => void;
    const held = new Promise<void>((r) => {
      release = r;
    });
    let fishPages = 0;
    await page.route(/\/api\/search\?tag=fish/, async (route) => {
      fishPages++;
      await held;
      await route.continue().catch(() => {}); // the page aborted it: nothing to continue
    });
    // Each fish request ends, answered (its body read) or aborted by the page: then whatever it
    // brought has reached the page's script.
    const fishEnded: Promise<void>[] = [];
    const ended = new Map<Request, () => void>();
    const watch = (r: Request) => {
      if (/\/api\/search\?tag=fish/.test(r.url())) fishEnded.push(new Promise((resolve) => ended.set(r, resolve)));
    };
    const end = (r: Request) => ended.get(r)?.();
    page.on('request', watch);
    page.on('requestfinished', end);
    page.on('requestfailed', end);
    try {
      await page.fill('#tags', 'fish');
      await page.press('#tags', 'Enter');
      await page.waitForFunction(() => document.querySelector('#summary')?.textContent === 'Searching…');
      await search('cat');
      assert.deepEqual(await shown(page), ['pets/tom.jpg']);
      release();
      // The held fish page may now arrive; it must be dropped. Wait until every fish request has
      // ended, then for the page's script to run the tasks that ending queued.
      assert.ok(fishPages >= 1, 'the fish search reached the server while held');
      await Promise.all(fishEnded);
      await page.evaluate(() => new Promise((r) => setTimeout(r, 0)));
      assert.deepEqual(await shown(page), ['pets/tom.jpg']);
      assert.equal(await page.textContent('#summary'), '1 images tagged cat, newest first');
    } finally {
      release();
      page.off('request', watch);
      page.off('requestfinished', end);
      page.off('requestfailed', end);
      await page.unroute(/\/api\/search\?tag=fish/);
    }
  });

  it('suggests tags from the hierarchy, and is usable from the keyboard', async () => {
    await page.fill('#tags', '');
    await page.focus('#tags');
    await page.keyboard.type('retr');
    await page.waitForFunction(() => document.querySelector<HTMLOptionElement>('#suggestions option')?.value.startsWith('retr'));
    const options = await page.$$eval('#suggestions option', (els) => els.map((e) => (e as HTMLOptionElement).value));
    assert.equal(options[0], 'retriever');
    assert.ok(options.includes('golden retriever'));
    await page.keyboard.press('Tab');
    assert.equal(await page.evaluate(() => document.activeElement?.id), 'prefix');
    // A tag chip is a button: Enter on it searches that tag.
    await search('cat');
    assert.deepEqual(await page.$$eval('#grid .chip', (els) => els.map((e) => e.textContent)), ['cat 0.81', 'tabby 0.81']);
    await page.focus('#grid .chips li:nth-child(2) .chip');
    const done = page.waitForResponse((r) => r.url().includes('/api/search'));
    await page.keyboard.press('Enter');
    await done;
    assert.equal(await page.inputValue('#tags'), 'tabby');
    assert.deepEqual(await shown(page), ['pets/tom.jpg']);
  });

  it('shows work still queued and failures with their reasons', async () => {
    await page.click('#showStatus');
    await page.waitForSelector('#failures');
    const rows = await page.$$eval('#status tr', (trs) => trs.map((tr) => [...tr.children].map((c) => c.textContent)));
    assert.deepEqual(rows, [
      ['Queue', 'Waiting', 'In flight', 'Dead-lettered'],
      ['pets', '1', '0', '1'],
    ]);
    assert.equal(await page.textContent('#failures li'), 'pets: 1 × retry: inference: out of memory (e.g. s3://gallery/pets/broken.jpg)');
    assert.deepEqual(await page.$$eval('#recorded li', (els) => els.map((e) => e.textContent)), [
      'pets/notes.jpg: not-an-image: unsupported image format',
    ]);
    assert.equal(await page.getAttribute('#showStatus', 'aria-expanded'), 'true');
    // The README's picture: a search with its results.
    await page.click('#showStatus');
    await search('animal');
    await page.waitForFunction(() => [...document.querySelectorAll<HTMLImageElement>('#grid img')].slice(0, 12).every((i) => i.complete));
    const shot = join(await tempDir('effitag-shot-'), 'gallery.png');
    await page.screenshot({ path: shot });
    if (process.env.EFFITAG_SCREENSHOT) copyFileSync(shot, process.env.EFFITAG_SCREENSHOT);
  });
});

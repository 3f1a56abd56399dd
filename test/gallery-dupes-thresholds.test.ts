/**
 * The gallery's Duplicates view uses the near thresholds `effitag dupes` uses: each embedding space's
 * calibration (`effitag dupes calibrate`, recorded beside the weights), none where the weights were
 * measured inseparable, the 0.95 guess only where nothing was measured, and then it says so. It
 * grouped by a fixed 0.95 everywhere (no calibration store, the default passed as if given), so the
 * page and the CLI disagreed about the same bucket, and the page never said which threshold it used.
 *
 * Over in-memory ports: /api/dupes against findDupes as the CLI calls it, the page in headless
 * Chromium (skipped without it, as test/gallery-similar.test.ts is). Then the wiring: `effitag local`'s
 * gallery and `effitag gallery` on that stack read the record beside its weights, and group as
 * `effitag dupes --json` does.
 */
import assert from 'node:assert/strict';
import { type ChildProcess, spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { S3Client } from '@aws-sdk/client-s3';
import { type Browser, chromium } from 'playwright-core';
import { startGallery } from '../gallery/server.ts';
import { openStack, resolveEmbeddedStack } from '../pipeline/aws/stack-handle.ts';
import { seededRandom } from '../model/random-weights.ts';
import { DEFAULT_MAX_DISTANCE, DEFAULT_MIN_SCORE, type DupesReport, findDupes, type HashThreshold } from '../pipeline/dupes.ts';
import { type CalibrationStore, directoryCalibrations, type NearThreshold } from '../pipeline/near-calibration.ts';
import type { TagIndex } from '../pipeline/tag-index.ts';
import type { VectorIndex } from '../pipeline/ports.ts';
import { CHROMIUM, CHROMIUM_ARGS } from './support/chromium.ts';
import { freePort, runEffitag, spawnEffitagLocal } from './support/effitag-local.ts';
import { randomArtifact, tempDir } from './support/fixtures.ts';
import { portFlags, waitFor } from './support/local-stack.ts';
import { balancedHash, nearRecord, unit } from './support/dupes-fixtures.ts';
import { indexedObject, MemoryIndex, MemoryStore } from './support/memory-ports.ts';
import { MemoryVectorIndex } from './support/memory-vectors.ts';

const BUCKET = 'p';
const SPACE = 'b0@aaaaaaaaaaaa';
const OTHER = 'b0@bbbbbbbbbbbb';

const indexed = (key: string, marker: string) => indexedObject(key, { marker });

/**
 * In SPACE a pair at cosine 0.9950 and a pair at 0.9701 (0.95 joins both, a calibrated 0.99 only the
 * first); in OTHER, never calibrated, a pair at 0.9701. No hashes: every group here is a near one.
 */
async function fill(index: Pick<TagIndex, 'put'>, vectors: Pick<VectorIndex, 'put'>, bucket = BUCKET) {
  await vectors.put(SPACE, [
    { bucket, key: 'a1', vector: unit(1, 0, 0, 0) },
    { bucket, key: 'a2', vector: unit(1, 0.1, 0, 0) },
    { bucket, key: 'b1', vector: unit(0, 0, 1, 0) },
    { bucket, key: 'b2', vector: unit(0, 0, 1, 0.25) },
  ]);
  await vectors.put(OTHER, [
    { bucket, key: 'c1', vector: unit(1, 0, 0, 0) },
    { bucket, key: 'c2', vector: unit(1, 0.25, 0, 0) },
  ]);
  for (const k of ['a1', 'a2', 'b1', 'b2']) await index.put({ ...indexed(k, SPACE), bucket });
  for (const k of ['c1', 'c2']) await index.put({ ...indexed(k, OTHER), bucket });
}

/** What /api/dupes answers (the fields these tests read). */
interface GalleryDupes {
  total: number;
  groups: { keys: string[]; kind: string; score: number }[];
  exact: HashThreshold & { text: string };
  near: (NearThreshold & { text: string })[];
}

const nearOf = (r: { groups: { keys: string[]; kind: string }[] }) => r.groups.filter((g) => g.kind === 'near').map((g) => g.keys.join());
/** As JSON has it (as `effitag dupes --json` prints it: no -0). */
const json = <T>(value: T): T => JSON.parse(JSON.stringify(value));
/** A threshold without the page's line: what findDupes reports. */
const bare = <T extends { text: string }>({ text: _, ...t }: T) => t;

async function getDupes(base: string, query = ''): Promise<GalleryDupes> {
  const res = await fetch(`${base}api/dupes${query}`);
  const body = await res.json();
  assert.equal(res.status, 200, JSON.stringify(body));
  return body as GalleryDupes;
}

// Signing only (no request is sent): the links to originals need credentials, not a server.
const signer = () =>
  new S3Client({
    region: 'us-east-1',
    endpoint: 'http://127.0.0.1:9',
    forcePathStyle: true,
    credentials: { accessKeyId: 'k', secretAccessKey: 's' },
  });

/** The gallery over an index, its vectors and a calibration store (no objects' bytes, no queues). */
const galleryOver = (index: MemoryIndex, vectors: MemoryVectorIndex, calibrations: CalibrationStore) =>
  startGallery({ bucket: BUCKET, index, store: new MemoryStore(), s3: signer(), vectors, queues: async () => [], calibrations });

describe('gallery /api/dupes: the near threshold of each space, as effitag dupes uses it', () => {
  const galleries: { close(): Promise<void> }[] = [];
  after(async () => {
    for (const g of galleries) await g.close();
  });

  /** The gallery over one world and calibration store, and the report findDupes gives the CLI for them. */
  async function both(calibrations: CalibrationStore, query = '') {
    const index = new MemoryIndex();
    const vectors = new MemoryVectorIndex();
    await fill(index, vectors);
    const gallery = await galleryOver(index, vectors, calibrations);
    galleries.push(gallery);
    // As cli/commands/dupes.ts calls it with no --max-distance and no --min-score.
    const cli: DupesReport = await findDupes({ index, vectors, calibrations }, { bucket: BUCKET }, {});
    return { cli, page: await getDupes(gallery.url, query) };
  }

  it('a calibrated 0.99 separates the pair 0.95 joined, in the gallery as in the CLI; the uncalibrated space is marked', async () => {
    const store = directoryCalibrations(await tempDir('effitag-gallery-cal-'));
    await store.write(nearRecord({ space: SPACE, minScore: 0.99 }));
    const { cli, page } = await both(store);
    assert.deepEqual(nearOf(page), ['a1,a2', 'c1,c2'], 'SPACE at its 0.99: b1–b2 (0.970) not joined; OTHER at 0.95');
    assert.deepEqual(nearOf(page), nearOf(cli));
    assert.deepEqual(page.near.map(bare), cli.near);
    assert.deepEqual(
      page.near.map((t) => [t.space, t.source]),
      [
        [SPACE, 'calibrated'],
        [OTHER, 'uncalibrated'],
      ],
    );
    assert.equal(
      page.near[0].text,
      `near threshold for ${SPACE}: 0.99, calibrated 2026-12-07 on 16 distinct images (recall 0.800 of their copies at precision 1.000)`,
    );
    assert.match(
      page.near[1].text,
      new RegExp(`^near threshold for ${OTHER}: ${DEFAULT_MIN_SCORE}, UNCALIBRATED .*effitag dupes calibrate --images DIR --model b0`),
    );
    assert.deepEqual(bare(page.exact), json(cli.exact), 'the hash distance too');
  });

  it('a space measured inseparable gets no near groups in the gallery either, and it says why', async () => {
    const store = directoryCalibrations(await tempDir('effitag-gallery-cal-'));
    await store.write(
      nearRecord({ space: SPACE, separable: false, minScore: undefined, reason: 'cannot tell copies from distinct images' }),
    );
    const { cli, page } = await both(store);
    assert.deepEqual(nearOf(page), ['c1,c2'], 'nothing in SPACE');
    assert.deepEqual(nearOf(page), nearOf(cli));
    assert.equal(page.near[0].source, 'inseparable');
    assert.match(page.near[0].text, /: none, no near groups: its calibration \(2026-12-07\) found that these weights cannot tell copies/);
  });

  it('minScore in the URL overrides every space, and the line names that parameter (not the CLI flag)', async () => {
    const store = directoryCalibrations(await tempDir('effitag-gallery-cal-'));
    await store.write(nearRecord({ space: SPACE, separable: false, minScore: undefined, reason: 'inseparable' }));
    const { page } = await both(store, '?minScore=0.96');
    assert.deepEqual(nearOf(page), ['a1,a2', 'b1,b2', 'c1,c2']);
    assert.deepEqual(
      page.near.map((t) => [t.source, 'minScore' in t ? t.minScore : undefined]),
      [
        ['given', 0.96],
        ['given', 0.96],
      ],
    );
    assert.equal(page.near[0].text, `near threshold for ${SPACE}: 0.96 (minScore)`);
  });
});

describe('gallery /api/dupes: the hash distance, as effitag dupes scales it', () => {
  let gallery: Awaited<ReturnType<typeof startGallery>>;
  const index = new MemoryIndex();
  before(async () => {
    // 600 unrelated pictures: past ~550 hashes, 14 bits would expect more than one chance pair.
    const rand = seededRandom(7);
    for (let i = 0; i < 600; i++) await index.put({ ...indexed(`h${i}`, SPACE), phash: balancedHash(rand) });
    gallery = await startGallery({ bucket: BUCKET, index, store: new MemoryStore(), s3: signer(), queues: async () => [] });
  });
  after(() => gallery?.close());

  it('scaled down for a large collection: the same distance as the CLI, and the line says from what', async () => {
    const cli = await findDupes({ index }, { bucket: BUCKET }, {});
    const page = await getDupes(gallery.url);
    assert.deepEqual(bare(page.exact), json(cli.exact));
    assert.equal(page.exact.source, 'scaled');
    assert.ok(page.exact.maxDistance < DEFAULT_MAX_DISTANCE, JSON.stringify(page.exact));
    assert.match(
      page.exact.text,
      new RegExp(
        `^exact copies: within ${page.exact.maxDistance} bits, not ${DEFAULT_MAX_DISTANCE}: [\\d.]+ pair\\(s\\) of unrelated images expected by chance among 600 hashes \\(${DEFAULT_MAX_DISTANCE} bits would expect [\\d.]+; \\?maxDistance=${DEFAULT_MAX_DISTANCE} in the page's address finds more`,
      ),
    );
    assert.deepEqual(
      page.groups.map((g) => g.keys.join()),
      cli.groups.map((g) => g.keys.join()),
    );
    const given = await getDupes(gallery.url, `?maxDistance=${DEFAULT_MAX_DISTANCE}`);
    assert.deepEqual([given.exact.source, given.exact.maxDistance], ['given', DEFAULT_MAX_DISTANCE]);
    assert.match(given.exact.text, new RegExp(`^exact copies: within ${DEFAULT_MAX_DISTANCE} bits \\(maxDistance\\): `));
  });
});

const missing = !existsSync(CHROMIUM);
if (missing && process.env.CI === 'true') throw new Error(`CI=true and no Chromium at ${CHROMIUM}: .ci/run installs Debian's chromium`);
const skip = missing ? `no Chromium at ${CHROMIUM} (apt install chromium, or set EFFITAG_CHROMIUM): browser test skipped` : false;

describe('the Duplicates view in headless Chromium: one line per space, the guess flagged', { skip }, () => {
  let browser: Browser;
  let gallery: Awaited<ReturnType<typeof startGallery>>;
  before(async () => {
    const index = new MemoryIndex();
    const vectors = new MemoryVectorIndex();
    await fill(index, vectors);
    const calibrations = directoryCalibrations(await tempDir('effitag-gallery-cal-'));
    await calibrations.write(nearRecord({ space: SPACE, minScore: 0.99 }));
    gallery = await galleryOver(index, vectors, calibrations);
    browser = await chromium.launch({ executablePath: CHROMIUM, args: CHROMIUM_ARGS });
  });
  after(async () => {
    await browser?.close();
    await gallery?.close();
  });

  it("shows the calibrated space's threshold and where it came from, and flags the uncalibrated one", async () => {
    const page = await browser.newPage();
    await page.goto(gallery.url);
    const done = page.waitForResponse((r) => r.url().includes('/api/dupes'));
    await page.getByRole('button', { name: 'Duplicates' }).click();
    await done;
    await page.waitForSelector('#groups');
    const lines = await page.$$eval('#thresholds li', (lis) =>
      lis.map((li) => ({
        cls: li.className,
        text: li.textContent ?? '',
        weight: getComputedStyle(li).fontWeight,
        border: getComputedStyle(li).borderLeftStyle,
      })),
    );
    assert.equal(lines.length, 3, JSON.stringify(lines));
    assert.match(
      lines[0].text,
      /^exact copies: within 14 bits: under 0\.01 pair\(s\) of unrelated images expected by chance among 0 hashes$/,
    );
    assert.equal(lines[0].cls, 'exact scaled');
    assert.match(lines[1].text, new RegExp(`^near threshold for ${SPACE}: 0\\.99, calibrated 2026-12-07 on 16 distinct images`));
    assert.equal(lines[1].cls, 'near calibrated');
    assert.equal(lines[1].border, 'none', 'a measured threshold is not flagged');
    assert.match(lines[2].text, new RegExp(`^⚠ near threshold for ${OTHER}: 0\\.95, UNCALIBRATED \\(a guess`));
    assert.equal(lines[2].cls, 'near uncalibrated flagged');
    assert.equal(lines[2].weight, '600', 'the guess stands out');
    assert.equal(lines[2].border, 'solid');
    // The groups follow the thresholds shown: SPACE's 0.970 pair is not one.
    const groups = await page.$$eval('#groups > li', (lis) =>
      lis.map((li) => [...li.querySelectorAll('p.key')].map((p) => p.textContent).join()),
    );
    assert.deepEqual(groups, ['a1,a2', 'c1,c2']);
    await page.close();
  });

  it("takes maxDistance and minScore from the page's own address, as its lines say", async () => {
    const page = await browser.newPage();
    await page.goto(`${gallery.url}?maxDistance=6&minScore=0.96`);
    const done = page.waitForResponse((r) => r.url().includes('/api/dupes'));
    await page.getByRole('button', { name: 'Duplicates' }).click();
    const asked = new URL((await done).url());
    assert.equal(asked.searchParams.get('maxDistance'), '6');
    assert.equal(asked.searchParams.get('minScore'), '0.96');
    await page.waitForSelector('#groups');
    const lines = await page.$$eval('#thresholds li', (lis) => lis.map((li) => li.textContent ?? ''));
    assert.match(lines[0], /^exact copies: within 6 bits \(maxDistance\): /);
    assert.match(lines[1], /: 0\.96 \(minScore\)$/);
    // 0.96 joins SPACE's 0.970 pair that its calibrated 0.99 kept apart.
    const groups = await page.$$eval('#groups > li', (lis) =>
      lis.map((li) => [...li.querySelectorAll('p.key')].map((p) => p.textContent).join()),
    );
    assert.deepEqual(groups.sort(), ['a1,a2', 'b1,b2', 'c1,c2']);
    await page.close();
  });
});

describe('the Duplicates view in headless Chromium: a given hash distance that expects chance pairs is flagged', { skip }, () => {
  let browser: Browser;
  let gallery: Awaited<ReturnType<typeof startGallery>>;
  before(async () => {
    // 600 unrelated pictures: 14 bits expects about 1.2 chance pairs among them, 12 bits about 0.1.
    const index = new MemoryIndex();
    const rand = seededRandom(7);
    for (let i = 0; i < 600; i++) await index.put({ ...indexed(`h${i}`, SPACE), phash: balancedHash(rand) });
    gallery = await startGallery({ bucket: BUCKET, index, store: new MemoryStore(), s3: signer(), queues: async () => [] });
    browser = await chromium.launch({ executablePath: CHROMIUM, args: CHROMIUM_ARGS });
  });
  after(async () => {
    await browser?.close();
    await gallery?.close();
  });

  /** The exact-copy line the page shows with `query` in its address. */
  async function exactLine(query: string) {
    const page = await browser.newPage();
    await page.goto(`${gallery.url}${query}`);
    const done = page.waitForResponse((r) => r.url().includes('/api/dupes'));
    await page.getByRole('button', { name: 'Duplicates' }).click();
    await done;
    await page.waitForSelector('#thresholds li');
    const line = await page.$eval('#thresholds li', (li) => ({
      cls: li.className,
      text: li.textContent ?? '',
      border: getComputedStyle(li).borderLeftStyle,
    }));
    await page.close();
    return line;
  }

  it('?maxDistance=14 over 600 hashes: flagged with what it expects; 12 bits and the scaled default are not', async () => {
    const given14 = await exactLine(`?maxDistance=${DEFAULT_MAX_DISTANCE}`);
    assert.equal(given14.cls, 'exact given flagged', JSON.stringify(given14));
    assert.equal(given14.border, 'solid');
    assert.match(
      given14.text,
      new RegExp(
        `^⚠ exact copies: within ${DEFAULT_MAX_DISTANCE} bits \\(maxDistance\\): 1\\.\\d+ pair\\(s\\) of unrelated images expected by chance among 600 hashes`,
      ),
    );
    const given12 = await exactLine('?maxDistance=12');
    assert.equal(given12.cls, 'exact given', JSON.stringify(given12));
    assert.equal(given12.border, 'none');
    assert.doesNotMatch(given12.text, /⚠/);
    const scaled = await exactLine('');
    assert.equal(scaled.cls, 'exact scaled', JSON.stringify(scaled));
    assert.doesNotMatch(scaled.text, /⚠/);
  });
});

describe('the galleries of `effitag local` and `effitag gallery` read the record beside the stack weights', () => {
  const children: ChildProcess[] = [];
  after(() => {
    for (const c of children) c.kill('SIGKILL');
  });

  it('both group as `effitag dupes --json` does, with its thresholds', async () => {
    const dir = await tempDir('effitag-gallery-wiring-');
    const weights = join(dir, 'weights');
    await randomArtifact(join(weights, 'b0'), 'b0');
    await directoryCalibrations(weights).write(nearRecord({ space: SPACE, minScore: 0.99 }));
    const data = join(dir, 'data');
    const ports = {
      s3: await freePort(),
      sqs: await freePort(),
      dynamodb: await freePort(),
      s3vectors: await freePort(),
      gallery: await freePort(),
    };
    const env = { EFFITAG_CACHE_DIR: join(dir, 'cache'), EFFITAG_DATA_DIR: data };
    await spawnEffitagLocal(['--weights', weights, '--data', data, ...portFlags(ports), '--no-workers', '--log-level', 'warn'], {
      env,
      children,
    });
    const handle = resolveEmbeddedStack(data);
    const bucket = handle.buckets[0];
    const conn = openStack(handle);
    try {
      assert.ok(conn.vectors, 'the embedded stack keeps embeddings');
      await fill(conn.requireIndex(), conn.vectors, bucket);
    } finally {
      conn.close();
    }
    const cliRun = await runEffitag(['dupes', `s3://${bucket}`, '--json'], env);
    assert.equal(cliRun.code, 0, cliRun.stderr);
    const cli = JSON.parse(cliRun.stdout) as DupesReport;
    assert.deepEqual(nearOf(cli), ['a1,a2', 'c1,c2'], 'the CLI read the record');

    const local = await getDupes(`http://127.0.0.1:${ports.gallery}/`);
    assert.deepEqual(nearOf(local), nearOf(cli), "effitag local's gallery");
    assert.deepEqual(local.near.map(bare), cli.near);
    assert.deepEqual(bare(local.exact), cli.exact);

    const command = spawn(process.execPath, ['bin/effitag.js', 'gallery', '--port', '0'], {
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { ...process.env, ...env },
    });
    children.push(command);
    let out = '';
    command.stdout.on('data', (d: Buffer) => {
      out += d;
    });
    command.stderr.on('data', (d: Buffer) => {
      out += d;
    });
    const url = await waitFor('effitag gallery to say its URL', async () => /(http:\/\/127\.0\.0\.1:\d+\/)/.exec(out)?.[1], 60_000);
    const served = await getDupes(url);
    assert.deepEqual(nearOf(served), nearOf(cli), 'effitag gallery');
    assert.deepEqual(served.near.map(bare), cli.near);
    assert.deepEqual(bare(served.exact), cli.exact);
  });
});

/**
 * `effitag dupes` (issue 23, item 4): the grouping core (pipeline/dupes.ts) with in-memory ports,
 * then the must-show on the embedded stack: a photograph, a recompressed copy and a resized copy
 * uploaded with the AWS CLI are one exact group; a distinct photograph is in none; bad input is one
 * clear line and changes nothing.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import sharp from 'sharp';
import { SKIMAGE_DATA, skipWithoutPhotographs } from './support/photographs.ts';
import type { EmbeddedStack } from '../local/stack.ts';
import { DEFAULT_MAX_DISTANCE, DupesError, exactGroups, findDupes, nearGroups } from '../pipeline/dupes.ts';
import { tempDir } from './support/fixtures.ts';
import { startTestStack, waitFor } from './support/local-stack.ts';
import { runEffitag } from './support/effitag-local.ts';
import { indexedObject, MemoryIndex } from './support/memory-ports.ts';
import { MemoryVectorIndex } from './support/memory-vectors.ts';

/** A hash `bits` bits away from `base` (the lowest bits flipped). */
function flip(base: string, bits: number): string {
  let v = BigInt(`0x${base}`);
  for (let i = 0; i < bits; i++) v ^= 1n << BigInt(i);
  return v.toString(16).padStart(16, '0');
}

const H = 'a5a5a5a5a5a5a5a5';

describe('dupes core: exact groups by perceptual hash', () => {
  it('links pairs within the distance, transitively; D bits apart is a copy, D+1 is not', () => {
    const groups = exactGroups(
      [
        { key: 'a.jpg', hash: H },
        { key: 'a-small.jpg', hash: flip(H, DEFAULT_MAX_DISTANCE) },
        { key: 'other.jpg', hash: flip(H, 40) },
        { key: 'unhashed.jpg' },
      ],
      DEFAULT_MAX_DISTANCE,
    );
    assert.deepEqual(groups, [
      { keys: ['a-small.jpg', 'a.jpg'], kind: 'exact', score: 1 - DEFAULT_MAX_DISTANCE / 64, distance: DEFAULT_MAX_DISTANCE },
    ]);
    assert.deepEqual(
      exactGroups(
        [
          { key: 'a', hash: H },
          { key: 'b', hash: flip(H, 5) },
        ],
        4,
      ),
      [],
    );
    // a–b 4 bits, b–c 4 bits (other bits), a–c 8: one group at D=4 through b.
    const b = flip(H, 4);
    const c = (BigInt(`0x${b}`) ^ 0xf0n).toString(16).padStart(16, '0');
    assert.deepEqual(
      exactGroups(
        [
          { key: 'a', hash: H },
          { key: 'b', hash: b },
          { key: 'c', hash: c },
        ],
        4,
      ).map((g) => g.keys),
      [['a', 'b', 'c']],
    );
  });

  it('refuses a distance outside 0-64 in one line', () => {
    assert.throws(
      () => exactGroups([], 65),
      (e: Error) => e instanceof DupesError && /--max-distance .* 0 to 64/.test(e.message),
    );
    assert.throws(() => exactGroups([], 1.5), DupesError);
  });
});

describe('dupes core: near groups by embedding (VectorIndex port)', () => {
  const unit = (...xs: number[]) => {
    const n = Math.hypot(...xs);
    return Float32Array.from(xs.map((x) => x / n));
  };
  async function world() {
    const vectors = new MemoryVectorIndex();
    await vectors.put('b0@aa', [
      { bucket: 'p', key: 'burst-1.jpg', vector: unit(1, 0.1, 0) },
      { bucket: 'p', key: 'burst-2.jpg', vector: unit(1, 0.12, 0.02) }, // cosine ≈ 0.9998
      { bucket: 'p', key: 'copy-a.jpg', vector: unit(0, 1, 0) },
      { bucket: 'p', key: 'copy-b.jpg', vector: unit(0, 1, 0.01) },
      { bucket: 'p', key: 'edit.jpg', vector: unit(0.05, 1, 0.05) }, // near the copies
      { bucket: 'p', key: 'tree.jpg', vector: unit(0, 0, 1) },
      { bucket: 'q', key: 'burst-3.jpg', vector: unit(1, 0.1, 0) }, // another bucket
    ]);
    // The same direction under other weights: never linked to b0@aa's objects.
    await vectors.put('b0@bb', [{ bucket: 'p', key: 'other-model.jpg', vector: unit(1, 0.1, 0) }]);
    return vectors;
  }
  const objects = [
    { key: 'burst-1.jpg', space: 'b0@aa' },
    { key: 'burst-2.jpg', space: 'b0@aa' },
    { key: 'copy-a.jpg', space: 'b0@aa', hash: H },
    { key: 'copy-b.jpg', space: 'b0@aa', hash: flip(H, 2) },
    { key: 'edit.jpg', space: 'b0@aa' },
    { key: 'tree.jpg', space: 'b0@aa' },
    { key: 'other-model.jpg', space: 'b0@bb' },
  ];

  it('groups what clears the score, within the bucket and the space; an exact group counts as one node', async () => {
    const vectors = await world();
    const exact = exactGroups(objects);
    assert.deepEqual(
      exact.map((g) => g.keys),
      [['copy-a.jpg', 'copy-b.jpg']],
    );
    const { groups, vectors: found } = await nearGroups(objects, vectors, { bucket: 'p', minScore: 0.99, exact });
    assert.equal(found, 7);
    assert.deepEqual(
      groups.map((g) => [g.kind, g.keys]),
      [
        ['near', ['burst-1.jpg', 'burst-2.jpg']],
        ['near', ['copy-a.jpg', 'copy-b.jpg', 'edit.jpg']],
      ],
    );
    for (const g of groups) assert.ok(g.score >= 0.99 && g.score <= 1, JSON.stringify(g));
    // The two copies alone are no near group: their exact group says it.
    const strict = await nearGroups(objects, vectors, { bucket: 'p', minScore: 0.9999, exact });
    assert.ok(!strict.groups.some((g) => g.keys.join() === 'copy-a.jpg,copy-b.jpg'), JSON.stringify(strict.groups));
    assert.deepEqual(vectors.calls.filter((c) => !c.startsWith('put')).length, 0, 'only reads (get/query are not logged as writes)');
  });

  it('refuses a score outside (0, 1] in one line', async () => {
    await assert.rejects(nearGroups(objects, await world(), { bucket: 'p', minScore: 0 }), DupesError);
    await assert.rejects(nearGroups(objects, await world(), { bucket: 'p', minScore: 1.2 }), /--min-score/);
  });
});

describe('dupes core: findDupes reads the index, and bad input is one clear line', () => {
  const indexed = (key: string, phash?: string, failure?: string) =>
    indexedObject(key, { ...(phash ? { phash } : {}), ...(failure ? { failure } : {}) });

  it('groups the records under the prefix, leaves failures out, and writes nothing', async () => {
    const index = new MemoryIndex();
    for (const o of [
      indexed('a/1.jpg', H),
      indexed('a/2.jpg', flip(H, 6)),
      indexed('a/3.jpg', flip(H, 50)),
      indexed('a/broken.jpg', undefined, 'undecodable'),
      indexed('b/1.jpg', H),
    ])
      await index.put(o);
    const before = JSON.stringify([...index.objects]);
    const report = await findDupes({ index }, { bucket: 'p', prefix: 'a/' });
    assert.deepEqual(
      report.groups.map((g) => g.keys),
      [['a/1.jpg', 'a/2.jpg']],
    );
    assert.deepEqual(report.checked, { objects: 3, hashed: 3, vectors: 0 });
    assert.equal(JSON.stringify([...index.objects]), before, 'the index is unchanged');
    assert.deepEqual(
      (await findDupes({ index }, { bucket: 'p' })).groups.map((g) => g.keys),
      [['a/1.jpg', 'a/2.jpg', 'b/1.jpg']],
    );
  });

  it('a prefix with nothing indexed, or objects tagged before hashes: DupesError naming the place', async () => {
    const index = new MemoryIndex();
    await index.put(indexed('old/1.jpg'));
    await assert.rejects(findDupes({ index }, { bucket: 'p', prefix: 'nothing/' }), (e: Error) => {
      assert.ok(e instanceof DupesError);
      assert.match(e.message, /^nothing indexed under s3:\/\/p\/nothing\/: /);
      return true;
    });
    await assert.rejects(
      findDupes({ index }, { bucket: 'p', prefix: 'old/' }),
      /1 object\(s\) indexed under s3:\/\/p\/old\/, none with a perceptual hash/,
    );
    await assert.rejects(findDupes({ index }, { bucket: 'p' }, { maxDistance: 70 }), /--max-distance/);
  });
});

// ---------------------------------------------------------------------------------------------
// The must-show: real photographs through the AWS CLI, the worker, the index, `effitag dupes`.

const photos = skipWithoutPhotographs();
const awsCli = (args: string[], env: NodeJS.ProcessEnv) =>
  new Promise<{ code: number; stdout: string; stderr: string }>((resolve) =>
    execFile('aws', args, { env: { ...process.env, ...env } }, (err, stdout, stderr) =>
      resolve({ code: err ? Number(err.code ?? 1) : 0, stdout, stderr }),
    ),
  );
/** `effitag …` as a process, asynchronously: the stack's servers run in this process and must keep answering. */
const effitag = (...args: string[]) => runEffitag(args);

describe('effitag dupes on the embedded stack (uploads with the AWS CLI)', { skip: photos }, () => {
  let stack: EmbeddedStack;
  const keys = ['trip/astronaut.jpg', 'trip/astronaut-recompressed.jpg', 'trip/astronaut-small.jpg', 'trip/coffee.jpg'];
  before(async () => {
    ({ stack } = await startTestStack({
      version: 1,
      tiers: {
        cpu: { variants: ['b0'], compute: { target: 'lambda-cpu', memoryMb: 2048 }, engine: 'ort', batchSize: 4, writeBack: 'metadata' },
      },
      routing: { default: { tier: 'cpu' } },
    }));
    const dir = await tempDir('effitag-dupes-');
    const astronaut = await readFile(join(SKIMAGE_DATA, 'astronaut.png'));
    const files: Record<string, Buffer> = {
      'astronaut.jpg': await sharp(astronaut).jpeg({ quality: 92 }).toBuffer(),
      'astronaut-recompressed.jpg': await sharp(astronaut).jpeg({ quality: 35 }).toBuffer(),
      'astronaut-small.jpg': await sharp(astronaut).resize(256).jpeg({ quality: 85 }).toBuffer(),
      'coffee.jpg': await sharp(await readFile(join(SKIMAGE_DATA, 'coffee.png')))
        .jpeg({ quality: 90 })
        .toBuffer(),
    };
    const env = {
      AWS_ACCESS_KEY_ID: stack.credentials.accessKeyId,
      AWS_SECRET_ACCESS_KEY: stack.credentials.secretAccessKey,
      AWS_DEFAULT_REGION: 'us-east-1',
      AWS_CONFIG_FILE: '/dev/null',
      AWS_SHARED_CREDENTIALS_FILE: '/dev/null',
    };
    for (const [name, bytes] of Object.entries(files)) {
      await writeFile(join(dir, name), bytes);
      const r = await awsCli(
        ['--endpoint-url', stack.endpoints.s3Endpoint!, 's3', 'cp', join(dir, name), `s3://${stack.bucket}/trip/${name}`],
        env,
      );
      assert.equal(r.code, 0, r.stderr);
    }
    await waitFor(
      'the four photographs hashed in the index',
      async () => {
        const records = await Promise.all(keys.map((k) => stack.index.get(stack.bucket, k)));
        return records.every((r) => r?.phash) ? true : undefined;
      },
      120_000,
    );
  });
  after(() => stack?.stop());

  it('groups the photo, its recompressed and its resized copy; the other photo is in no group', async () => {
    const r = await effitag('dupes', `s3://${stack.bucket}/trip/`, '--json');
    assert.equal(r.code, 0, r.stderr);
    const report = JSON.parse(r.stdout) as {
      groups: { keys: string[]; kind: string; score: number }[];
      checked: { objects: number; hashed: number };
    };
    const exact = report.groups.filter((g) => g.kind === 'exact');
    assert.deepEqual(
      exact.map((g) => g.keys),
      [['trip/astronaut-recompressed.jpg', 'trip/astronaut-small.jpg', 'trip/astronaut.jpg']],
      r.stdout,
    );
    assert.ok(exact[0].score > 1 - DEFAULT_MAX_DISTANCE / 64 - 1e-9 && exact[0].score <= 1);
    // Not a copy of anything. (Near groups are left out here: this stack's B0 has random weights, whose
    // embeddings say little about what is alike; test/embeddings.test.ts covers them.)
    assert.ok(!exact.some((g) => g.keys.includes('trip/coffee.jpg')), r.stdout);
    assert.equal(report.checked.objects, 4);
    assert.equal(report.checked.hashed, 4);

    // The table: the exact group first, its three objects under it, and a last line that says nothing was changed.
    const table = await effitag('dupes', `s3://${stack.bucket}/trip/`);
    assert.equal(table.code, 0, table.stderr);
    const rows = table.stdout.split('\n');
    const first = rows.findIndex((l) => /^1\s+exact\s+\d+ bits\s+s3:\/\//.test(l));
    assert.ok(first > 0, table.stdout);
    assert.deepEqual(
      rows.slice(first, first + 3).map((l) => l.replace(/^.*(s3:\/\/\S+)$/, '$1')),
      ['trip/astronaut-recompressed.jpg', 'trip/astronaut-small.jpg', 'trip/astronaut.jpg'].map((k) => `s3://${stack.bucket}/${k}`),
      table.stdout,
    );
    assert.match(table.stdout, /\d+ group\(s\); 4 object\(s\) under s3:\/\/.*\/trip\/: 4 with a hash, .*; nothing was changed\n$/);
    // Which hash distance it used, and what that expects by chance (4 hashes: 14 bits, almost none).
    assert.match(
      table.stdout,
      /^exact copies: within 14 bits: under 0\.01 pair\(s\) of unrelated images expected by chance among 4 hashes$/m,
    );
    assert.deepEqual((JSON.parse(r.stdout) as { exact: unknown }).exact, { maxDistance: 14, source: 'scaled', expectedChancePairs: 0 });

    // A given distance that expects unrelated pairs by chance says so, on stderr too under --json (64
    // bits among 4 hashes: all 6 pairs); one that expects none says nothing there.
    const loose = await effitag('dupes', `s3://${stack.bucket}/trip/`, '--json', '--max-distance', '64');
    assert.equal(loose.code, 0, loose.stderr);
    assert.match(
      loose.stderr,
      /^effitag: exact copies: within 64 bits \(--max-distance\): 6 pair\(s\) of unrelated images expected by chance among 4 hashes; some groups may join unrelated images$/m,
    );
    const tight = await effitag('dupes', `s3://${stack.bucket}/trip/`, '--json', '--max-distance', '14');
    assert.doesNotMatch(tight.stderr, /exact copies/);
  });

  it('bad input: one clear line, exit 1, nothing changed', async () => {
    const listing = async () => (await stack.index.keys(stack.bucket, {})).keys.sort().join();
    const heads = async () => Promise.all(keys.map(async (k) => (await stack.index.get(stack.bucket, k))?.eTag));
    const before = [await listing(), await heads()];
    const empty = await effitag('dupes', `s3://${stack.bucket}/no-such-folder/`);
    assert.equal(empty.code, 1);
    assert.equal(empty.stderr.trim().split('\n').length, 1, empty.stderr);
    assert.match(empty.stderr, /^effitag: nothing indexed under s3:\/\/.*\/no-such-folder\//);
    const range = await effitag('dupes', `s3://${stack.bucket}/trip/`, '--max-distance', '65');
    assert.equal(range.code, 1);
    assert.match(range.stderr, /--max-distance must be an integer in \[0, 64\], got "65"/);
    const notUrl = await effitag('dupes', 'trip/');
    assert.equal(notUrl.code, 1);
    assert.match(notUrl.stderr, /expected s3:\/\/bucket\[\/prefix\]/);
    assert.deepEqual([await listing(), await heads()], before);
  });
});

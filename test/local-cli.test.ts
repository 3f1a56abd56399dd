import assert from 'node:assert/strict';
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { after, describe, it } from 'node:test';
import { gradientImage, randomArtifact, tempDir } from './support/fixtures.ts';
import { isLoopbackAddress, listeningSockets } from './support/sockets.ts';
import { HEIC_FIXTURES } from './support/bombs.ts';
import { freePort, startLocal } from './support/effitag-local.ts';
import { portFlags, waitFor } from './support/local-stack.ts';
import { HeadObjectCommand, PutObjectCommand } from '@aws-sdk/client-s3';
import { s3Client } from '../pipeline/aws/clients.ts';
import { stackFile } from '../pipeline/aws/stack-handle.ts';
import { EMBEDDED_CREDENTIALS } from '../local/stack.ts';
import { readAudit } from './rehearsal/iam.ts';

const run = promisify(execFile);
/** The S3 Vectors stand-in's port, from the handle the stack wrote in its data directory. */
const s3VectorsPort = (dataDir: string) =>
  Number(new URL(JSON.parse(readFileSync(stackFile(dataDir), 'utf8')).handle.endpoints.s3vectors).port);
const cli = (args: string[], env: NodeJS.ProcessEnv = {}) =>
  run(process.execPath, ['bin/effitag.js', ...args], { env: { ...process.env, ...env }, maxBuffer: 1 << 22 }).then(
    (r) => ({ code: 0, ...r }),
    (e: { code: number; stdout: string; stderr: string }) => e,
  );

describe('effitag local / tag / backfill (npm start), as processes', () => {
  const children: ChildProcess[] = [];
  after(() => {
    for (const c of children) c.kill('SIGKILL');
  });

  it('first run offline: stops with a clear message saying how to provide weights', async () => {
    const cache = await tempDir();
    const closed = await freePort();
    // Free ports for every server (a user's `npm start` holds the defaults), and no weights from the
    // user's environment: with EFFITAG_WEIGHTS_DIR set, this started a stack on the default ports.
    const r = await cli(['local', '--data', join(cache, 'data'), ...portFlags({ s3: await freePort(), sqs: await freePort() })], {
      EFFITAG_WEIGHTS_DIR: undefined,
      EFFITAG_CACHE_DIR: cache,
      EFFITAG_WEIGHTS_URL: `http://127.0.0.1:${closed}/efficientnetb0.h5`,
      EFFITAG_WEIGHTS_MD5: '0'.repeat(32),
    });
    assert.equal(r.code, 1);
    assert.match(r.stderr, /weights missing for the configured tiers/);
    assert.match(r.stderr, /Could not fetch them: cannot download/);
    assert.match(r.stderr, /effitag weights import --keras efficientnetb0\.h5 --variant b0 --out /);
    assert.doesNotMatch(r.stderr, /\n\s+at /, 'no stack trace');
  });

  it('runs the stack; `tag` prints tags when they land; `backfill --dry-run` sees them; SIGTERM stops it cleanly', async () => {
    const dir = await tempDir();
    await randomArtifact(join(dir, 'weights', 'b0'), 'b0');
    const s3Port = await freePort(),
      sqsPort = await freePort(),
      dynamoPort = await freePort(),
      galleryPort = await freePort();
    const child = await startLocal(dir, { s3: s3Port, sqs: sqsPort, dynamodb: dynamoPort, gallery: galleryPort }, {}, children);
    const out = child.output();
    assert.match(out, new RegExp(`S3 endpoint:\\s+http://127\\.0\\.0\\.1:${s3Port}`));
    assert.match(out, new RegExp(`Gallery:\\s+http://127\\.0\\.0\\.1:${galleryPort}/`));
    // The stand-ins speak plain HTTP: by default nothing listens beyond loopback.
    const sockets = listeningSockets(child.pid!);
    // The S3 Vectors stand-in on port 0 (portFlags): any free port, which commands find in the stack's handle.
    const vectorsPort = s3VectorsPort(join(dir, 'data'));
    assert.deepEqual(
      sockets.map((l) => l.port).sort(),
      [s3Port, sqsPort, dynamoPort, galleryPort, vectorsPort].sort(),
      JSON.stringify(sockets),
    );
    assert.deepEqual(
      sockets.filter((l) => !isLoopbackAddress(l.address)),
      [],
    );
    assert.match(out, /aws --endpoint-url http:\/\/127\.0\.0\.1:\d+ s3 cp photo\.jpg s3:\/\/effitag-local\//);

    await writeFile(join(dir, 'cat photo.jpg'), await gradientImage(300, 300, 'jpeg', 3));
    // An iPhone-style HEIC photo (HEVC, made by heif-enc) goes through the same stack.
    const heicDir = await tempDir();
    await writeFile(join(heicDir, 'IMG_0001.heic'), readFileSync(join(HEIC_FIXTURES, 'photo.heic')));
    const heic = await cli(['tag', join(heicDir, 'IMG_0001.heic'), '--prefix', 'phone/', '--json', '--timeout', '30']);
    assert.equal(heic.code, 0, heic.stderr);
    assert.equal(JSON.parse(heic.stdout.trim()).status, 'tagged');
    // No port flags: the stack runs on other ports than the defaults, and its handle says which.
    const tagged = await cli(['tag', join(dir, 'cat photo.jpg'), '--json', '--timeout', '30']);
    assert.equal(tagged.code, 0, tagged.stderr);
    const result = JSON.parse(tagged.stdout.trim());
    assert.equal(result.object, 's3://effitag-local/uploads/cat photo.jpg');
    assert.equal(result.status, 'tagged');
    // tiers/local.json keeps the top label plus those at ≥ 5 % (random weights: usually the top one only).
    assert.ok(result.tags.length >= 1 && result.tags.length <= 5);
    for (let i = 1; i < result.tags.length; i++) assert.ok(result.tags[i - 1].probability >= result.tags[i].probability);

    const shown = await cli(['show', 's3://effitag-local/uploads/cat photo.jpg']);
    assert.match(shown.stdout, /tagged by b0@[0-9a-f]{12}/);

    const backfill = await cli(['backfill', 's3://effitag-local/uploads/', '--dry-run', '--json']);
    assert.equal(backfill.code, 0, backfill.stderr);
    const report = JSON.parse(backfill.stdout);
    assert.deepEqual([report.listed, report.enqueued, report.skipped.current, report.dryRun], [1, 0, 1, true]);

    const exited = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
    child.kill('SIGTERM');
    assert.equal(await exited, 0, 'a clean exit on SIGTERM');
  });

  it('--listen 0.0.0.0 is explicit and warns: then, and only then, the servers listen on every address', async () => {
    const dir = await tempDir();
    await randomArtifact(join(dir, 'weights', 'b0'), 'b0');
    const s3Port = await freePort(),
      sqsPort = await freePort(),
      dynamoPort = await freePort(),
      galleryPort = await freePort();
    const child = spawn(
      process.execPath,
      [
        'bin/effitag.js',
        'local',
        '--listen',
        '0.0.0.0',
        '--weights',
        join(dir, 'weights'),
        '--data',
        join(dir, 'data'),
        ...portFlags({ s3: s3Port, sqs: sqsPort, dynamodb: dynamoPort, gallery: galleryPort }),
        '--log-level',
        'warn',
        '--no-workers',
      ],
      { stdio: ['ignore', 'pipe', 'pipe'] },
    );
    children.push(child);
    let out = '',
      err = '';
    child.stderr!.on('data', (d: Buffer) => {
      err += d.toString();
    });
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`no start banner: ${out}${err}`)), 30_000);
      child.stdout!.on('data', (d: Buffer) => {
        out += d.toString();
        if (out.includes('is running')) {
          clearTimeout(timer);
          resolve();
        }
      });
      child.once('exit', (code) => reject(new Error(`exited ${code}: ${err}`)));
    });
    assert.match(
      err,
      /WARNING: --listen 0\.0\.0\.0: the embedded S3, SQS and DynamoDB speak plain HTTP; requests are signed, not encrypted/,
    );
    assert.deepEqual(
      listeningSockets(child.pid!)
        .map((l) => `${l.address}:${l.port}`)
        .sort(),
      // The gallery signs links with the stack's credentials: it stays on loopback whatever --listen says.
      [
        `0.0.0.0:${s3Port}`,
        `0.0.0.0:${sqsPort}`,
        `0.0.0.0:${dynamoPort}`,
        `0.0.0.0:${s3VectorsPort(join(dir, 'data'))}`,
        `127.0.0.1:${galleryPort}`,
      ].sort(),
    );
    assert.match(out, new RegExp(`S3 endpoint:\\s+http://127\\.0\\.0\\.1:${s3Port}`), 'clients on this machine still use loopback');
    child.kill('SIGTERM');
  });
});

describe('nothing lost: the embedded stack killed and restarted', () => {
  const children: ChildProcess[] = [];
  after(() => {
    for (const c of children) c.kill('SIGKILL');
  });

  it('SIGKILL with uploads queued and in flight, then a plain restart: every image ends tagged, each written back exactly once', async () => {
    const dir = await tempDir();
    await randomArtifact(join(dir, 'weights', 'b0'), 'b0');
    const ports = { s3: await freePort(), sqs: await freePort() };
    const first = await startLocal(dir, ports, {}, children);
    const s3 = s3Client({ s3Endpoint: `http://127.0.0.1:${ports.s3}`, credentials: EMBEDDED_CREDENTIALS });
    const headOf = (key: string) => s3.send(new HeadObjectCommand({ Bucket: 'effitag-local', Key: key }));
    try {
      const keys = Array.from({ length: 60 }, (_, i) => `crash/photo ${i}.jpg`);
      const images = await Promise.all(keys.map((_, i) => gradientImage(320, 240, 'jpeg', 100 + i)));
      await Promise.all(
        keys.map((Key, i) =>
          s3.send(
            new PutObjectCommand({
              Bucket: 'effitag-local',
              Key,
              Body: images[i],
              ContentType: 'image/jpeg',
              Metadata: { owner: `user-${i}` },
            }),
          ),
        ),
      );
      // Killed once the first batch has landed: the rest are queued or in flight.
      await waitFor('the first write-back', async () =>
        (await Promise.all(keys.map(headOf))).some((h) => h.Metadata?.['effitag-status']) ? true : undefined,
      );
      first.kill('SIGKILL');
      await new Promise((r) => first.once('exit', r));
      // The S3 stand-in died with the process: count what it had stored as tagged from its files.
      const storedMeta = (key: string) =>
        JSON.parse(readFileSync(join(dir, 'data', 'effitag-local', `${key}._S3rver_metadata.json`), 'utf8'));
      const taggedBefore = keys.filter((k) => storedMeta(k)['x-amz-meta-effitag-status']).length;
      assert.ok(taggedBefore < keys.length, `the kill must leave work behind (${taggedBefore} of ${keys.length} were tagged)`);

      const audit = join(dir, 'audit-after-restart.jsonl');
      const restartAt = Date.now();
      const second = await startLocal(dir, ports, { EFFITAG_AUDIT_LOG: audit }, children);
      await waitFor(
        'every image tagged after the restart',
        async () => {
          const heads = await Promise.all(keys.map(headOf));
          return heads.every((h) => h.Metadata?.['effitag-status'] === 'tagged') ? heads : undefined;
        },
        90_000,
      );
      const caughtUpMs = Date.now() - restartAt;
      const copies = readAudit(audit).filter((c) => c.command === 'CopyObject' && c.status === 200);
      for (const [i, key] of keys.entries()) {
        const h = await headOf(key);
        const writesAfterRestart = copies.filter((c) => c.input.Key === key).length;
        // Written before the kill (then the catch-up skips it by its marker) or after it: once either way.
        const writtenAt = Date.parse(h.Metadata!['effitag-at']);
        assert.ok(
          writesAfterRestart === 0 ? writtenAt < restartAt : writesAfterRestart === 1 && writtenAt >= restartAt,
          `${key}: ${writesAfterRestart} write-back(s) after the restart, tagged at ${h.Metadata!['effitag-at']}`,
        );
        assert.equal(h.Metadata!.owner, `user-${i}`, "the user's metadata is kept");
        assert.equal(h.ContentLength, images[i].length);
      }
      process.stderr.write(
        `# SIGKILL: ${taggedBefore}/${keys.length} tagged before the kill, 0 lost; all tagged ${caughtUpMs} ms after the restart; ${copies.length} written back after it\n`,
      );
      await waitFor('the catch-up report', async () => (/caught up: /.test(second.output()) ? true : undefined));
      assert.match(second.output(), /caught up: \d+ (upload\(s\) accepted since|object\(s\) in the bucket)/);

      // Once idle, the stack records that everything so far is settled; the next start begins there.
      // (The state file exists from the first catch-up on: wait for an idle moment after the last write-back.)
      const lastWriteBack = Math.max(...(await Promise.all(keys.map(headOf))).map((h) => Date.parse(h.Metadata!['effitag-at'])));
      const statePath = `${join(dir, 'data')}.state.json`;
      await waitFor(
        'an idle moment after the last write-back recorded',
        async () =>
          existsSync(statePath) && Date.parse(JSON.parse(readFileSync(statePath, 'utf8')).settledBefore) > lastWriteBack ? true : undefined,
        30_000,
      );
      // A graceful stop is no safer than a kill for queued uploads: the next start catches up on them too.
      const more = Array.from({ length: 30 }, (_, i) => `stop/photo ${i}.jpg`);
      await Promise.all(
        more.map((Key, i) => s3.send(new PutObjectCommand({ Bucket: 'effitag-local', Key, Body: images[i], ContentType: 'image/jpeg' }))),
      );
      second.kill('SIGTERM');
      await new Promise((r) => second.once('exit', r));
      const third = await startLocal(dir, ports, {}, children);
      await waitFor(
        'every image uploaded before the SIGTERM tagged',
        async () => {
          const heads = await Promise.all(more.map(headOf));
          return heads.every((h) => h.Metadata?.['effitag-status'] === 'tagged') ? true : undefined;
        },
        60_000,
      );
      assert.match(
        third.output(),
        /caught up: 30 upload\(s\) accepted since the stack was last idle \(20\d\d-/,
        'the uploads since the last idle moment, not the bucket',
      );
      third.kill('SIGTERM');
    } finally {
      s3.destroy();
    }
  });
});

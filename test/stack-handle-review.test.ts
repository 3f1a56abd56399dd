/**
 * Issue 22 review, as a user tries it: what `npm start` and the stack's handle do when a user starts
 * a second stack (on the same data directory, or on a port already taken), when the handle is left
 * by a later start, and the one line the AWS set-up errors get on --stack NAME. Each test fails on
 * the code before its fix (named in the review report).
 */
import assert from 'node:assert/strict';
import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync } from 'node:fs';
import { createServer, type Server } from 'node:net';
import { join, resolve } from 'node:path';
import { after, describe, it } from 'node:test';
import { awsHint } from '../cli/aws-hints.ts';
import { startS3Server } from '../local/s3-server.ts';
import { startEmbeddedStack } from '../local/stack.ts';
import { ensureEmbeddedCredentials } from '../pipeline/aws/local-credentials.ts';
import {
  embeddedDataDir,
  refuseSecondStack,
  removeStackFile,
  resolveEmbeddedStack,
  stackFile,
  writeStackFile,
} from '../pipeline/aws/stack-handle.ts';
import { parseTiers } from '../tiers/schema.ts';
import { runEffitag } from './support/effitag-local.ts';
import { randomArtifact, tempDir } from './support/fixtures.ts';
import { standInHandle } from './support/local-stack.ts';

const TIERS = parseTiers(JSON.parse(readFileSync('tiers/local.json', 'utf8')));

/** A live process that is not this one: another user's `npm start`, as far as the handle can tell. */
function otherProcess(children: ChildProcess[]): number {
  const child = spawn(process.execPath, ['-e', 'setInterval(() => {}, 1 << 30)'], { stdio: 'ignore' });
  children.push(child);
  return child.pid!;
}

describe('a second embedded stack on a data directory whose stack is running', () => {
  const children: ChildProcess[] = [];
  after(() => {
    for (const c of children) c.kill('SIGKILL');
  });

  it('is refused in one line naming the running one, before anything opens the folder', async () => {
    const dataDir = join(await tempDir('effitag-second-'), 'data');
    const credentials = ensureEmbeddedCredentials(dataDir);
    const handle = standInHandle(dataDir, { credentials, s3: 'http://127.0.0.1:1111', sqs: 'http://127.0.0.1:2222' });
    const other = otherProcess(children);
    writeStackFile(dataDir, handle, other);
    await assert.rejects(startEmbeddedStack({ dataDir, tiers: TIERS, weightsDir: join(dataDir, 'no-weights') }), (err: Error) => {
      assert.match(
        err.message,
        new RegExp(
          `^an embedded stack is already running for .*data \\(process ${other}, S3 at http://127\\.0\\.0\\.1:1111\\): use that one, stop it first, or start this one with another --data$`,
        ),
      );
      return true;
    });
    // Nothing of the second stack was made: no index folder, and the first one's handle is intact.
    assert.equal(existsSync(`${dataDir}.index`), false);
    assert.deepEqual(resolveEmbeddedStack(dataDir).endpoints, handle.endpoints);
    // A stale handle (its process gone) or this process's own (a restart in one process) is no obstacle.
    writeStackFile(dataDir, handle, 2 ** 22 + 12_345);
    refuseSecondStack(dataDir);
    writeStackFile(dataDir, handle);
    refuseSecondStack(dataDir);
  });

  it('`effitag local` prints that line and exits 1, no stack trace (it was dynalite\'s "Database is closed")', async () => {
    const dataDir = join(await tempDir('effitag-second-cli-'), 'data');
    const credentials = ensureEmbeddedCredentials(dataDir);
    writeStackFile(
      dataDir,
      standInHandle(dataDir, { credentials, s3: 'http://127.0.0.1:1111', sqs: 'http://127.0.0.1:2222' }),
      otherProcess(children),
    );
    const r = await runEffitag(['local', '--data', dataDir, '--s3-port', '0', '--sqs-port', '0', '--dynamodb-port', '0', '--no-gallery']);
    assert.equal(r.code, 1, r.stdout);
    assert.match(r.stderr, /^effitag: an embedded stack is already running for .*data \(process \d+, S3 at http:\/\/127\.0\.0\.1:1111\)/);
    assert.equal(r.stderr.trim().split('\n').length, 1, r.stderr);
  });
});

describe("the stack's handle file", () => {
  it('is removed at stop only by the process that wrote it (a later start may have replaced it)', async () => {
    const dataDir = join(await tempDir('effitag-remove-'), 'data');
    const credentials = ensureEmbeddedCredentials(dataDir);
    standInHandle(dataDir, { credentials, s3: 'http://127.0.0.1:1111' });
    removeStackFile(dataDir, process.pid + 1);
    assert.ok(existsSync(stackFile(dataDir)), "another process's stop leaves it");
    removeStackFile(dataDir);
    assert.equal(existsSync(stackFile(dataDir)), false, 'its own stop removes it');
  });
});

describe('a command typed in a subfolder of where `npm start` runs', () => {
  it('finds the stack through the nearest .effitag/data with a handle, upwards; EFFITAG_DATA_DIR still decides when set', async () => {
    const root = await tempDir('effitag-up-');
    const sub = join(root, 'photos', '2026');
    mkdirSync(sub, { recursive: true });
    const none = embeddedDataDir({}, sub);
    assert.equal(none, join(sub, '.effitag', 'data'), 'none anywhere: .effitag/data here, which the error names');
    const dataDir = join(root, '.effitag', 'data');
    standInHandle(dataDir, { credentials: ensureEmbeddedCredentials(dataDir), s3: 'http://127.0.0.1:1111' });
    assert.equal(embeddedDataDir({}, sub), dataDir);
    assert.equal(embeddedDataDir({}, root), dataDir);
    assert.equal(embeddedDataDir({ EFFITAG_DATA_DIR: join(root, 'other') }, sub), join(root, 'other'));
    // The CLI's own choice: a stale handle up there is the one it reports on (not "none here").
    writeStackFile(dataDir, resolveEmbeddedStack(dataDir), 2 ** 22 + 12_345);
    const r = await new Promise<{ code: number; stderr: string }>((done) =>
      execFile(
        process.execPath,
        [resolve('bin/effitag.js'), 'show', 's3://effitag-local/photo.jpg'],
        { cwd: sub, env: { ...process.env, EFFITAG_DATA_DIR: undefined } },
        (err, _stdout, stderr) => done({ code: (err as { code?: number } | null)?.code ?? 0, stderr }),
      ),
    );
    assert.equal(r.code, 1);
    assert.equal(
      r.stderr.replace(/started [^,]+/, 'started T'),
      `effitag: the embedded stack for ${dataDir} is not running (its handle names process ${2 ** 22 + 12_345}, started T, which has exited): start it again (npm start)\n`,
    );
  });
});

describe('the S3 stand-in on a port already in use', () => {
  const servers: Server[] = [];
  after(() => {
    for (const s of servers) s.close();
  });

  it('rejects with EADDRINUSE (it was an unhandled error event: a stack trace and the process gone)', async () => {
    const taken = createServer();
    servers.push(taken);
    await new Promise<void>((r) => taken.listen(0, '127.0.0.1', r));
    const port = (taken.address() as { port: number }).port;
    const dir = await tempDir('effitag-s3-busy-');
    const credentials = ensureEmbeddedCredentials(join(dir, 'keys'));
    await assert.rejects(startS3Server({ port, directory: join(dir, 'data'), credentials }), { code: 'EADDRINUSE' });
  });

  it('`effitag local --s3-port <taken>` says so in one line, exit 1', async () => {
    const taken = createServer();
    servers.push(taken);
    await new Promise<void>((r) => taken.listen(0, '127.0.0.1', r));
    const port = (taken.address() as { port: number }).port;
    const dir = await tempDir('effitag-s3-busy-cli-');
    await randomArtifact(join(dir, 'weights', 'b0'), 'b0');
    const r = await runEffitag([
      'local',
      '--data',
      join(dir, 'data'),
      '--weights',
      join(dir, 'weights'),
      '--s3-port',
      String(port),
      '--sqs-port',
      '0',
      '--dynamodb-port',
      '0',
      '--no-gallery',
    ]);
    assert.equal(r.code, 1, r.stdout);
    assert.equal(
      r.stderr,
      `effitag: port ${port} on 127.0.0.1 (--s3-port) is in use, by another effitag local (each data directory runs its own stack) or another program: stop it, or pass --s3-port N (0: any free port)\n`,
    );
  });
});

describe('AWS set-up hints on --stack NAME', () => {
  it('no region: --region is the program\'s, on every command (not "where the command has it")', () => {
    const hint = awsHint(new Error('Region is missing'), {}) ?? '';
    assert.match(hint, /pass --region/);
    assert.doesNotMatch(hint, /where the command has it/);
  });

  it('no credentials with a profile named: names that profile, not "set AWS_PROFILE"', () => {
    const creds = Object.assign(new Error('Could not load credentials from any providers'), { name: 'CredentialsProviderError' });
    const named = awsHint(creds, { AWS_PROFILE: 'photos' }) ?? '';
    assert.match(named, /^no AWS credentials for profile photos: .*aws configure --profile photos.*aws sso login --profile photos/);
    assert.doesNotMatch(named, /set AWS_PROFILE/);
    assert.match(awsHint(creds, {}) ?? '', /set AWS_PROFILE .*or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY/);
  });
});

/**
 * Embedded stack / CLI edges a reviewer hit as a user: a mistyped file, a bucket the stack does not
 * tag, the S3 Vectors stand-in's port, a frozen stack, a busy gallery port. Each test fails on the
 * code before its fix (named in the review report).
 */
import assert from 'node:assert/strict';
import { type ChildProcess, execFile } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { createServer, type Server } from 'node:net';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { after, before, describe, it } from 'node:test';
import type { EmbeddedStack } from '../local/stack.ts';
import { resolveEmbeddedStack, stackFile } from '../pipeline/aws/stack-handle.ts';
import { freePort, type LocalProcess, runEffitag, spawnEffitagLocal } from './support/effitag-local.ts';
import { randomArtifact, tempDir } from './support/fixtures.ts';
import { portFlags, startTestStack } from './support/local-stack.ts';

const TIERS = JSON.parse(readFileSync('tiers/local.json', 'utf8'));

describe('a local file that is not there', () => {
  it("`effitag tag` names it in one line (it was Node's \"ENOENT: …, stat '…'\"), before looking for a stack", async () => {
    const dir = await tempDir('effitag-edges-nofile-');
    const missing = join(dir, 'nonexistent.jpg');
    const r = await runEffitag(['tag', missing], { EFFITAG_DATA_DIR: join(dir, 'no-stack'), EFFITAG_CACHE_DIR: join(dir, 'cache') });
    assert.equal(r.code, 1, r.stdout);
    assert.equal(r.stderr, `effitag: cannot read ${missing}: no such file or directory\n`);
  });
});

describe('a bucket the embedded stack does not tag', () => {
  const children: ChildProcess[] = [];
  let stack: EmbeddedStack;
  before(async () => {
    ({ stack } = await startTestStack(TIERS));
  });
  after(async () => {
    for (const c of children) c.kill('SIGKILL');
    await stack?.stop();
  });

  for (const args of [
    ['search', 's3://no-such-bucket', '--tag', 'dog'],
    ['show', 's3://no-such-bucket/photo.jpg'],
    ['similar', 's3://no-such-bucket/photo.jpg'],
    ['dupes', 's3://no-such-bucket'],
  ])
    it(`\`effitag ${args.join(' ')}\` says which bucket it does tag, exit 1 (search said "no objects found", exit 0; show, similar, dupes blamed the object or prefix)`, async () => {
      const r = await runEffitag(args);
      assert.equal(r.code, 1, r.stdout);
      assert.equal(
        r.stderr,
        `effitag: the embedded stack does not tag s3://no-such-bucket: it tags s3://${stack.bucket} (npm start -- --bucket NAME runs one for another)\n`,
      );
    });

  it("its own bucket still searches (the check lets the stack's bucket through)", async () => {
    const r = await runEffitag(['search', `s3://${stack.bucket}`, '--tag', 'dog', '--json']);
    assert.equal(r.code, 0, r.stderr);
    assert.deepEqual(JSON.parse(r.stdout).hits, []);
  });
});

describe('`effitag local` on ports of its own, then frozen (kill -STOP)', () => {
  const children: ChildProcess[] = [];
  after(() => {
    for (const c of children) {
      c.kill('SIGCONT');
      c.kill('SIGKILL');
    }
  });
  let local: LocalProcess;
  let data: string;
  const ports = { s3: 0, sqs: 0, dynamodb: 0, s3vectors: 0 };

  before(async () => {
    const dir = await tempDir('effitag-edges-local-');
    await randomArtifact(join(dir, 'weights', 'b0'), 'b0');
    for (const k of Object.keys(ports) as (keyof typeof ports)[]) ports[k] = await freePort();
    data = join(dir, 'data');
    local = await spawnEffitagLocal(
      ['--weights', join(dir, 'weights'), '--data', data, ...portFlags(ports), '--no-workers', '--log-level', 'warn'],
      { env: { EFFITAG_CACHE_DIR: join(dir, 'cache') }, children },
    );
  });

  it('the S3 Vectors stand-in listens on --s3vectors-port, which the banner and the handle name (it took any free port, unnamed)', () => {
    const endpoint = `http://127.0.0.1:${ports.s3vectors}`;
    assert.match(local.output(), new RegExp(`^  S3 Vectors: +${endpoint} +\\(vector bucket \\S+: image embeddings`, 'm'));
    assert.equal(resolveEmbeddedStack(data).endpoints.s3vectors, endpoint);
  });

  it('a command on the frozen stack fails in one line naming it, within ~30 s (it waited 120 s x 4 tries per request)', async () => {
    const started = Date.now();
    local.kill('SIGSTOP');
    try {
      const r = await promisify(execFile)(process.execPath, ['bin/effitag.js', 'show', 's3://effitag-local/photo.jpg'], {
        env: { ...process.env, EFFITAG_DATA_DIR: data },
        timeout: 90_000,
        killSignal: 'SIGKILL',
      }).then(
        () => assert.fail('show answered from a frozen stack'),
        (e: { code: number | null; signal?: string; stderr: string }) => e,
      );
      const seconds = (Date.now() - started) / 1000;
      assert.equal(r.signal ?? null, null, `still waiting after ${seconds.toFixed(0)} s`);
      assert.equal(r.code, 1);
      assert.match(
        r.stderr,
        new RegExp(
          `^effitag: the embedded stack at http://127\\.0\\.0\\.1:${ports.s3} does not answer \\(silent for 12 s, twice\\): is it stopped`,
        ),
      );
      assert.equal(r.stderr.trim().split('\n').length, 1, r.stderr);
      assert.ok(seconds < 60, `${seconds} s`);
    } finally {
      local.kill('SIGCONT');
    }
    // Resumed, it answers again: the short timeout is the CLI's, the stack is not harmed.
    const again = await runEffitag(['show', 's3://effitag-local/photo.jpg'], { EFFITAG_DATA_DIR: data });
    assert.match(again.stderr, /no such object s3:\/\/effitag-local\/photo\.jpg/);
  });
});

describe('`effitag local --gallery-port <taken>`', () => {
  const children: ChildProcess[] = [];
  const servers: Server[] = [];
  after(() => {
    for (const c of children) c.kill('SIGKILL');
    for (const s of servers) s.close();
  });

  it('says so in one line, exit 1, and leaves no handle behind (the stack had written it, then exited without its stop)', async () => {
    const taken = createServer();
    servers.push(taken);
    await new Promise<void>((r) => taken.listen(0, '127.0.0.1', r));
    const gallery = (taken.address() as { port: number }).port;
    const dir = await tempDir('effitag-edges-gallery-');
    await randomArtifact(join(dir, 'weights', 'b0'), 'b0');
    const data = join(dir, 'data');
    const ports = { s3: await freePort(), sqs: await freePort(), dynamodb: await freePort(), s3vectors: await freePort(), gallery };
    const r = await runEffitag(
      ['local', '--data', data, '--weights', join(dir, 'weights'), ...portFlags(ports), '--no-workers', '--log-level', 'warn'],
      { EFFITAG_CACHE_DIR: join(dir, 'cache') },
    );
    assert.equal(r.code, 1, r.stdout);
    assert.equal(
      r.stderr,
      `effitag: port ${gallery} on 127.0.0.1 (--gallery-port) is in use, by another effitag local (each data directory runs its own stack) or another program: stop it, or pass --gallery-port N (0: any free port)\n`,
    );
    assert.equal(existsSync(stackFile(data)), false, 'stale handle left');
  });
});

/**
 * Embedded stack / CLI edges a reviewer hit as a user: a mistyped file, a bucket the stack does not
 * tag, the S3 Vectors stand-in's port, a frozen stack, a busy gallery port. Each test fails on the
 * code before its fix (named in the review report).
 */
import assert from 'node:assert/strict';
import type { ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { EmbeddedStack } from '../local/stack.ts';
import { runEffitag } from './support/effitag-local.ts';
import { tempDir } from './support/fixtures.ts';
import { startTestStack } from './support/local-stack.ts';

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
  ])
    it(`\`effitag ${args.join(' ')}\` says which bucket it does tag, exit 1 (search said "no objects found", exit 0)`, async () => {
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

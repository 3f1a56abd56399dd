/**
 * A local file named on the command line that cannot be read is one line naming it and why, the
 * same words for every command (cli/local-files.ts), before any slow work. It was Node's own text:
 * `predict` printed "error: ENOENT: no such file or directory, open '…'" per image after loading the
 * model, `similar --image` "cannot read --image …: ENOENT: …", and `tag` passed a file its user may
 * not read (stat alone said yes) to the upload, which failed with "EACCES: permission denied, open".
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { chmod, mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { before, describe, it } from 'node:test';
import { ensureEmbeddedCredentials } from '../pipeline/aws/local-credentials.ts';
import { writeStackFile } from '../pipeline/aws/stack-handle.ts';
import { runEffitag } from './support/effitag-local.ts';
import { gradientImage, randomArtifact, tempDir } from './support/fixtures.ts';
import { standInHandle } from './support/local-stack.ts';

/**
 * `effitag ARGS` as a user without root's right to read anything: as root, through setpriv as
 * nobody (the test's files are then made readable to all but the one that must not be).
 */
function runAsUser(args: readonly string[], env: NodeJS.ProcessEnv) {
  const asRoot = process.getuid?.() === 0;
  const [file, argv] = asRoot
    ? ['setpriv', ['--reuid=65534', '--regid=65534', '--clear-groups', process.execPath, 'bin/effitag.js', ...args]]
    : [process.execPath, ['bin/effitag.js', ...args]];
  return promisify(execFile)(file, argv, { env: { ...process.env, HOME: '/tmp', ...env }, maxBuffer: 1 << 22 }).then(
    (r) => ({ code: 0, ...r }),
    (e: { code: number; stdout: string; stderr: string }) => e,
  );
}

describe('`effitag predict` on a path it cannot read', () => {
  let dir: string;
  let weights: string;
  let photo: string;
  before(async () => {
    dir = await tempDir('effitag-cleanups-predict-');
    weights = join(dir, 'weights', 'b0');
    await randomArtifact(weights, 'b0');
    photo = join(dir, 'photo.jpg');
    await writeFile(photo, await gradientImage(64, 48, 'jpeg', 1));
  });

  it('missing: one line naming it, exit 1, nothing classified (it was ENOENT per image, after the model loaded)', async () => {
    const missing = join(dir, 'nonexistent.jpg');
    const r = await runEffitag(['predict', photo, missing, '--weights', weights]);
    assert.equal(r.code, 1, r.stdout);
    assert.equal(r.stderr, `effitag: cannot read ${missing}: no such file or directory\n`);
    assert.equal(r.stdout, '', 'no image classified: the path is checked before the model loads');
  });

  it('a folder, or a path through a file: the same one line, in words (EISDIR, ENOTDIR)', async () => {
    const folder = join(dir, 'weights');
    const folderRun = await runEffitag(['predict', folder, '--weights', weights]);
    assert.equal(folderRun.code, 1, folderRun.stdout);
    assert.equal(folderRun.stderr, `effitag: cannot read ${folder}: a folder, not a file\n`);
    const through = join(photo, 'inner.jpg');
    const throughRun = await runEffitag(['predict', through, '--weights', weights]);
    assert.equal(throughRun.code, 1, throughRun.stdout);
    assert.equal(throughRun.stderr, `effitag: cannot read ${through}: a folder on its path is a file\n`);
  });

  it('the images it can read are still classified (the check stops only on paths)', async () => {
    const r = await runEffitag(['predict', photo, '--weights', weights, '--json']);
    assert.equal(r.code, 0, r.stderr);
    const [result] = JSON.parse(r.stdout);
    assert.equal(result.image, photo);
    assert.equal(result.top.length, 5);
  });
});

describe('a file its user may not read (mode 000)', () => {
  let dir: string;
  let secret: string;
  before(async () => {
    dir = await tempDir('effitag-cleanups-unreadable-');
    await chmod(dir, 0o755);
    await mkdir(join(dir, 'photos'), { mode: 0o755 });
    await writeFile(join(dir, 'photos', 'open.jpg'), await gradientImage(64, 48, 'jpeg', 2), { mode: 0o644 });
    secret = join(dir, 'photos', 'secret.jpg');
    await writeFile(secret, await gradientImage(64, 48, 'jpeg', 3));
    await chmod(secret, 0o000);
  });

  it('`effitag predict`: one line, permission denied, before the model loads', async () => {
    const r = await runAsUser(['predict', secret, '--weights', join(dir, 'no-weights')], {});
    assert.equal(r.code, 1, r.stdout);
    assert.equal(r.stderr, `effitag: cannot read ${secret}: permission denied\n`);
  });

  it('`effitag tag FOLDER`: names the file in the folder, before looking for a stack (stat passed it: EACCES at the upload)', async () => {
    // No stack here: looking for one would be another error ("not running"), not this one.
    const r = await runAsUser(['tag', join(dir, 'photos')], { EFFITAG_DATA_DIR: join(dir, 'no-stack') });
    assert.equal(r.code, 1, r.stdout);
    assert.equal(r.stderr, `effitag: cannot read ${secret}: permission denied\n`);
    assert.ok(existsSync(secret), 'nothing removed');
  });
});

describe('`effitag similar --image` on a missing photo', () => {
  it('the same words (it was "ENOENT: no such file or directory, open …")', async () => {
    const dir = await tempDir('effitag-cleanups-similar-');
    const data = join(dir, 'data');
    // A handle naming a bucket and a vector bucket: the photo is read before anything is asked of them.
    const handle = standInHandle(data, { credentials: ensureEmbeddedCredentials(data), buckets: ['effitag-local'] });
    writeStackFile(data, { ...handle, vectorBucket: 'effitag-local-vectors', endpoints: { s3vectors: 'http://127.0.0.1:9' } });
    const missing = join(dir, 'nonexistent.png');
    const r = await runEffitag(['similar', 's3://effitag-local/photos/', '--image', missing], { EFFITAG_DATA_DIR: data });
    assert.equal(r.code, 1, r.stdout);
    assert.equal(r.stderr, `effitag: cannot read --image ${missing}: no such file or directory\n`);
  });
});

describe('`effitag train --data` on a folder it cannot read', () => {
  it('missing, or a file: one line naming the option and path (it was "ENOENT: …, realpath", after the backend loaded)', async () => {
    const dir = await tempDir('effitag-cleanups-train-');
    const missing = join(dir, 'no-photos');
    const out = join(dir, 'out');
    const r = await runEffitag(['train', '--name', 'pets', '--data', missing, '--out', out]);
    assert.equal(r.code, 1, r.stdout);
    assert.equal(r.stderr, `effitag: cannot read --data ${missing}: no such file or directory\n`);
    const file = join(dir, 'photo.jpg');
    await writeFile(file, await gradientImage(32, 32, 'jpeg', 4));
    const fileRun = await runEffitag(['train', '--name', 'pets', '--data', file, '--out', out]);
    assert.equal(fileRun.code, 1, fileRun.stdout);
    assert.equal(fileRun.stderr, `effitag: cannot read --data ${file}: a file, not a folder\n`);
    assert.equal(existsSync(out), false, 'nothing written');
  });
});

describe('`effitag weights import` / `weights quantize` on a path they cannot read', () => {
  it('--keras, --timm and --calibrate: one line naming the option and path (they were "ENOENT: …, open/scandir")', async () => {
    const dir = await tempDir('effitag-cleanups-weights-');
    const out = join(dir, 'out');
    const cases: [string[], string][] = [
      [['weights', 'import', '--keras', join(dir, 'b0.h5'), '--variant', 'b0', '--out', out], `--keras ${join(dir, 'b0.h5')}`],
      [
        ['weights', 'import', '--timm', join(dir, 'lite0.safetensors'), '--variant', 'lite0', '--out', out],
        `--timm ${join(dir, 'lite0.safetensors')}`,
      ],
    ];
    const weights = join(dir, 'weights', 'b0');
    await randomArtifact(weights, 'b0');
    cases.push([
      ['weights', 'quantize', '--weights', weights, '--calibrate', join(dir, 'photos'), '--out', out],
      `--calibrate ${join(dir, 'photos')}`,
    ]);
    for (const [args, named] of cases) {
      const r = await runEffitag(args);
      assert.equal(r.code, 1, r.stdout);
      assert.equal(r.stderr, `effitag: cannot read ${named}: no such file or directory\n`, args.join(' '));
    }
    assert.equal(existsSync(out), false, 'nothing written');
  });
});

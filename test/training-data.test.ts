/**
 * What `effitag train` reads from a folder: symbolic links to label folders (or images) inside the
 * data root are followed, ones leading out of it are left out and reported; a folder or image name
 * that is not UTF-8 is refused in one line naming it (Node would decode it lossily, read a path
 * that does not exist, and merge two such labels into one).
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdir, rename, symlink } from 'node:fs/promises';
import { join } from 'node:path';
import { folderSource, loadDataset } from '../training/dataset.ts';
import { tempDir } from './support/fixtures.ts';
import { writePatternDataset } from './support/shapes.ts';

describe('training data folders', () => {
  it('follows symbolic links that stay inside the data root; reports and leaves out those that leave it', async () => {
    const root = await tempDir('effitag-links-');
    // The real folders live in a hidden store inside the root (hidden folders are not labels).
    await writePatternDataset(join(root, '.store'), { patterns: ['disc', 'stripes'], perLabel: 10, size: 32, seed: 1 });
    await symlink(join(root, '.store', 'disc'), join(root, 'disc'));
    await symlink('.store/stripes', join(root, 'stripes'));
    // Outside the root: a whole label, and one image slipped into a label folder.
    const elsewhere = await tempDir('effitag-elsewhere-');
    await writePatternDataset(elsewhere, { patterns: ['checks'], perLabel: 10, size: 32, seed: 2 });
    await symlink(join(elsewhere, 'checks'), join(root, 'checks'));
    await symlink(join(elsewhere, 'checks', 'checks-0000.png'), join(root, '.store', 'disc', 'stray.png'));
    await symlink(join(root, 'nowhere'), join(root, 'broken'));

    const source = folderSource(root);
    const data = await loadDataset(source, { size: 32, minPerLabel: 5 });
    assert.deepEqual(data.labels, ['disc', 'stripes'], 'the linked label folders inside the root are labels');
    assert.deepEqual(data.counts, [10, 10]);
    assert.ok(!data.train.concat(data.val).some((s) => s.path.includes('stray')));
    const said = data.warnings.join('\n');
    assert.match(said, /label folder checks is a symbolic link to .*, outside the data root .*: left out/);
    assert.match(said, /image disc\/stray\.png is a symbolic link to .*, outside the data root/);
    assert.match(said, /label folder broken is a broken symbolic link/);
  });

  it('refuses a label folder or image whose name is not UTF-8, in one line naming it', async () => {
    const root = await tempDir('effitag-names-');
    await writePatternDataset(root, { patterns: ['disc', 'stripes', 'square'], perLabel: 10, size: 32, seed: 3 });
    // Two Latin-1 names ("café" and "cafè") that a lossy decoding would merge into one label.
    const bytes = (tail: number) => Buffer.concat([Buffer.from(`${root}/caf`), Buffer.from([tail])]);
    await rename(join(root, 'disc'), bytes(0xe9));
    await rename(join(root, 'square'), bytes(0xe8));
    const err = await loadDataset(folderSource(root), { size: 32, minPerLabel: 5 }).then(
      () => assert.fail('a non-UTF-8 folder name was accepted'),
      (e: Error) => e,
    );
    assert.match(err.message, /^label folder "caf\\x(e8|e9)" in .*: its name is not UTF-8; rename it/);
    assert.doesNotMatch(err.message, /\n/, 'one line');
    assert.doesNotMatch(err.message, /ENOENT/);

    // An image name inside a label folder, likewise.
    const other = await tempDir('effitag-names-');
    await writePatternDataset(other, { patterns: ['disc', 'stripes'], perLabel: 10, size: 32, seed: 4 });
    await mkdir(join(other, 'disc'), { recursive: true });
    await rename(
      join(other, 'disc', 'disc-0000.png'),
      Buffer.concat([Buffer.from(`${other}/disc/`), Buffer.from([0xff]), Buffer.from('.png')]),
    );
    await assert.rejects(
      loadDataset(folderSource(other), { size: 32, minPerLabel: 5 }),
      /^Error: image "\\xff\.png" in .*disc: its name is not UTF-8/,
    );
  });
});

/**
 * Files and folders the user names on the command line (`tag`, `predict`, `similar --image`, `train --data`,
 * `weights import --keras/--timm`, `weights quantize --calibrate`):
 * a path that cannot be read is one line naming it and why in words, checked before any slow work
 * (a model loaded, a stack looked for), not Node's "ENOENT: no such file or directory, open '…'".
 */
import { fileProblem } from '../base/errors.ts';

export { fileProblem };
import { constants } from 'node:fs';
import { access, readdir, stat } from 'node:fs/promises';
import { join, resolve } from 'node:path';

/** `cannot read PATH: why` (`what` names the option, e.g. `--image`). */
export function cannotRead(path: string, err: unknown, what?: string): Error {
  return new Error(`cannot read ${what ? `${what} ` : ''}${path}: ${fileProblem(err)}`, { cause: err });
}

/** For a `.catch`: the failure as `cannotRead`'s one line (a file gone or made unreadable since it was checked, too). */
export const rethrowUnreadable = (path: string, what?: string) => (err: unknown) => {
  throw cannotRead(path, err, what);
};

/**
 * A path that can be read: a file, or (with `folders`) a folder. Stat alone would pass a file its
 * owner may not read (mode 000), so the read permission is checked too.
 */
async function readablePath(path: string, options: { folders: boolean; what?: string }): Promise<{ folder: boolean }> {
  const s = await stat(path).catch(rethrowUnreadable(path, options.what));
  const folder = s.isDirectory();
  if (folder && !options.folders)
    throw new Error(`cannot read ${options.what ? `${options.what} ` : ''}${path}: ${fileProblem({ code: 'EISDIR' })}`);
  await access(path, constants.R_OK | (folder ? constants.X_OK : 0)).catch(rethrowUnreadable(path, options.what));
  return { folder };
}

/** A folder that can be listed (`what` names the option, e.g. `--data`). */
export async function checkReadableFolder(path: string, what?: string): Promise<void> {
  if (!(await readablePath(path, { folders: true, what })).folder)
    throw new Error(`cannot read ${what ? `${what} ` : ''}${path}: a file, not a folder`);
}

/** Each path a readable file, in order: the first that is not is the error. */
export async function checkReadableFiles(paths: readonly string[], what?: string): Promise<void> {
  for (const path of paths) await readablePath(path, { folders: false, what });
}

/**
 * A file or folder argument as the files to read, each readable: a folder's files (recursively), each
 * with the folder it was named by.
 */
export async function expandPath(path: string): Promise<{ file: string; base: string }[]> {
  if (!(await readablePath(path, { folders: true })).folder) return [{ file: path, base: resolve(path, '..') }];
  const out: { file: string; base: string }[] = [];
  const walk = async (dir: string) => {
    for (const entry of await readdir(dir, { withFileTypes: true }).catch(rethrowUnreadable(dir))) {
      const p = join(dir, entry.name);
      if (entry.isDirectory()) await walk(p);
      else if (entry.isFile()) out.push({ file: p, base: path });
    }
  };
  await walk(path);
  await checkReadableFiles(out.map((f) => f.file));
  return out;
}

/**
 * Error rendering, on the ground floor so every layer renders a failure the same way (model,
 * inference and tiers included, which cannot import the pipeline).
 */

/**
 * An error's message (or the thrown value, stringified): what logs, recorded reasons and the CLI's
 * one-line errors carry. No `Error:` prefix and no stack: the stack is for EFFITAG_DEBUG.
 */
export function messageOf(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

const FS_ERRORS: Record<string, string> = {
  ENOENT: 'no such file or directory',
  EACCES: 'permission denied',
  EPERM: 'permission denied',
  ENOTDIR: 'a folder on its path is a file',
  ELOOP: 'too many symbolic links',
  EISDIR: 'a folder, not a file',
  ENAMETOOLONG: 'the name is too long',
};

/**
 * Why a file-system call failed, in words ("no such file or directory", not "ENOENT"; Node's
 * message where the code is not one of these): for every one-line error that names a user's file.
 */
export function fileProblem(err: unknown): string {
  return FS_ERRORS[(err as NodeJS.ErrnoException)?.code ?? ''] ?? messageOf(err);
}

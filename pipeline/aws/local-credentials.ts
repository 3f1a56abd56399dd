/**
 * The embedded stack's credentials: one random key pair per data directory, so that only whoever can
 * read that directory (its owner) can sign requests the stand-ins accept. Made at the stack's first
 * start, kept owner-only (0600) in the data directory, and reused at every later start, so the
 * `aws` CLI settings printed once keep working. The CLI reads the same file (EFFITAG_DATA_DIR, else
 * `.effitag/data`, as `effitag local --data` defaults), so it needs no flag.
 *
 * The file is named with a leading dot: not a valid bucket name, so no S3 request can address it, and
 * s3rver (which takes each folder of the data directory for a bucket) ignores files.
 */
import { randomBytes } from 'node:crypto';
import { chmodSync, existsSync, linkSync, mkdirSync, readFileSync, statSync, unlinkSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { z } from 'zod';

export interface EmbeddedCredentials {
  accessKeyId: string;
  secretAccessKey: string;
}

const FILE_NAME = '.effitag-credentials.json';

const CredentialsFile = z.object({
  accessKeyId: z.string().regex(/^[A-Z0-9]{16,128}$/),
  secretAccessKey: z.string().min(32),
});

/** The embedded stack's data directory: EFFITAG_DATA_DIR, else `.effitag/data` (as `effitag local --data`). */
export const defaultDataDir = (env: NodeJS.ProcessEnv = process.env): string => resolve(env.EFFITAG_DATA_DIR ?? '.effitag/data');

/** Where the credentials of the stack keeping its objects in `dataDir` are. */
export const credentialsFile = (dataDir: string): string => join(resolve(dataDir), FILE_NAME);

/** A fresh random key pair shaped like AWS's (20-character key id, 40-character secret). */
export function generateCredentials(): EmbeddedCredentials {
  const base32 = 'ABCDEFGHIJKLMNOPQRSTUVWXYZ234567';
  const id = [...randomBytes(16)].map((b) => base32[b & 31]).join('');
  return { accessKeyId: `EFFI${id}`, secretAccessKey: randomBytes(30).toString('base64url') };
}

export class EmbeddedCredentialsError extends Error {
  override name = 'EmbeddedCredentialsError';
}

/** The credentials of the stack of `dataDir`, as `effitag` commands find them; a clear error when there are none. */
export function readEmbeddedCredentials(dataDir: string = defaultDataDir()): EmbeddedCredentials {
  const file = credentialsFile(dataDir);
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT')
      throw new EmbeddedCredentialsError(
        `no embedded-stack credentials in ${file}: start the stack first (npm start, or effitag local --data DIR), ` +
          'and point EFFITAG_DATA_DIR at its --data directory if it is not .effitag/data',
      );
    throw new EmbeddedCredentialsError(`cannot read the embedded stack's credentials (${file}): ${(err as Error).message}`);
  }
  const parsed = (() => {
    try {
      return CredentialsFile.safeParse(JSON.parse(text));
    } catch {
      return undefined;
    }
  })();
  if (!parsed?.success)
    throw new EmbeddedCredentialsError(
      `${file} is not an embedded-stack credentials file; delete it to have the next start make a new pair`,
    );
  return parsed.data;
}

/**
 * The credentials of the stack of `dataDir`, made at its first start: written to a temporary file
 * (0600) and linked into place, so two starts racing agree on one pair and no reader sees half a file.
 * An existing file readable by others is tightened to 0600.
 */
export function ensureEmbeddedCredentials(dataDir: string): EmbeddedCredentials {
  const file = credentialsFile(dataDir);
  mkdirSync(resolve(dataDir), { recursive: true });
  if (!existsSync(file)) {
    const temp = `${file}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`;
    writeFileSync(temp, `${JSON.stringify(generateCredentials(), null, 2)}\n`, { mode: 0o600, flag: 'wx' });
    try {
      linkSync(temp, file);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err; // another start won: use its pair
    } finally {
      unlinkSync(temp);
    }
  }
  if ((statSync(file).mode & 0o077) !== 0) chmodSync(file, 0o600);
  return readEmbeddedCredentials(dataDir);
}

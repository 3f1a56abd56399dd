/**
 * The one reader of `s3://bucket[/…]` URLs, for every command and runtime that takes one: a backfill
 * or search target (a key prefix, as typed), a weights location or a training set (a folder), one
 * object (`effitag show`). On the ground floor, so the model and training layers read them the same
 * way as the pipeline and the CLI.
 */

/** `s3://bucket[/prefix]`: the bucket, and the rest as typed ('' for none). A prefix need not end in '/'. */
export function parseS3Url(url: string, shape = 's3://bucket[/prefix]'): { bucket: string; prefix: string } {
  // `s`: a key may hold a newline.
  const m = /^s3:\/\/([^/]+)\/?(.*)$/s.exec(url);
  if (!m) throw new Error(`expected ${shape}, got ${url}`);
  return { bucket: m[1], prefix: m[2] };
}

/** A folder of objects (weights, a training set): the prefix is '' or ends in '/'. */
export function parseS3Folder(url: string): { bucket: string; prefix: string } {
  const { bucket, prefix } = parseS3Url(url, 's3://bucket/prefix');
  return { bucket, prefix: prefix && !prefix.endsWith('/') ? `${prefix}/` : prefix };
}

/** One object: `s3://bucket/key`, the key not empty. */
export function parseS3Object(url: string): { bucket: string; key: string } {
  const { bucket, prefix: key } = parseS3Url(url, 's3://bucket/key');
  if (!key) throw new Error(`expected s3://bucket/key, got ${url}`);
  return { bucket, key };
}

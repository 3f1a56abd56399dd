/** ObjectStore on @aws-sdk/client-s3: real S3, or any S3-compatible endpoint (the embedded stack). */
import {
  CopyObjectCommand,
  GetObjectCommand,
  GetObjectTaggingCommand,
  HeadObjectCommand,
  ListObjectsCommand,
  ListObjectsV2Command,
  PutObjectTaggingCommand,
  type S3Client,
  type S3ServiceException,
  type GetObjectCommandOutput,
  type HeadObjectCommandOutput,
  type StorageClass,
  type ServerSideEncryption,
} from '@aws-sdk/client-s3';
import { decodeS3Key } from '../events.ts';
import { MAX_COPY_BYTES, StoreError, type ListPage, type ObjectHead, type ObjectRef, type ObjectStore } from '../ports.ts';

export interface S3StoreOptions {
  /**
   * Work around the embedded S3 stand-in (s3rver), nothing else changes: listings use ListObjects
   * (V1, Marker), because s3rver's V2 continuation tokens use a DES cipher that OpenSSL 3 refuses, so
   * every truncated V2 listing fails with HTTP 500. (Copy sources need no workaround: the embedded
   * server parses them as S3 does.)
   */
  quirks?: 's3rver';
}

const unquote = (e?: string) => (e ?? '').replace(/^"|"$/g, '');

/**
 * Listings always ask for `EncodingType: 'url'`: a key may hold characters XML 1.0 cannot carry
 * (ESC, BEL) or that its parser rewrites (`\r` and `\r\n` become `\n`), so a plain listing would name
 * a key that does not exist and a backfill would take the object for gone. The SDK does not decode,
 * so keys are decoded here, exactly as S3 encodes them (space as `+`, the rest percent-encoded);
 * only when the response says it encoded (an S3-compatible server may ignore the parameter).
 */
const listedKey = (key: string, encodingType: string | undefined) => (encodingType === 'url' ? decodeS3Key(key) : key);

function headOf(o: HeadObjectCommandOutput | GetObjectCommandOutput, contentLength?: number): ObjectHead {
  return {
    eTag: unquote(o.ETag),
    versionId: o.VersionId ?? undefined,
    contentLength: contentLength ?? o.ContentLength ?? 0,
    lastModified: o.LastModified,
    contentType: o.ContentType,
    cacheControl: o.CacheControl,
    contentDisposition: o.ContentDisposition,
    contentEncoding: o.ContentEncoding,
    contentLanguage: o.ContentLanguage,
    expires: o.Expires,
    websiteRedirectLocation: o.WebsiteRedirectLocation,
    storageClass: o.StorageClass,
    restore: 'Restore' in o ? o.Restore : undefined,
    serverSideEncryption: o.ServerSideEncryption,
    sseKmsKeyId: o.SSEKMSKeyId,
    bucketKeyEnabled: o.BucketKeyEnabled,
    metadata: Object.fromEntries(Object.entries(o.Metadata ?? {}).map(([k, v]) => [k.toLowerCase(), v])),
  };
}

/** Map SDK errors to what the pipeline must do about them. */
export function classifyS3Error(err: unknown, what: string): StoreError {
  if (err instanceof StoreError) return err;
  const e = err as S3ServiceException & { code?: string };
  const status = e?.$metadata?.httpStatusCode;
  const name = e?.name ?? e?.code ?? '';
  const message = `${what}: ${name || 'error'}${status ? ` (HTTP ${status})` : ''}${e?.message && e.message !== name ? `: ${e.message}` : ''}`;
  if (status === 404 || name === 'NoSuchKey' || name === 'NotFound' || name === 'NoSuchBucket')
    return new StoreError('not-found', message, err);
  if (status === 412 || name === 'PreconditionFailed') return new StoreError('precondition', message, err);
  if (name === 'InvalidObjectState') return new StoreError('archived', message, err);
  if (status === 403 || name === 'AccessDenied') return new StoreError('denied', message, err);
  // SSE-C: GET and copy answer 400 with this message; HEAD answers a bare 400.
  if (status === 400 && (/Server Side Encryption|customer.provided/i.test(e?.message ?? '') || what.startsWith('HEAD'))) {
    return new StoreError(
      'unreadable',
      `${message} (encrypted with a customer-provided key, SSE-C: EffiTag cannot read or rewrite it)`,
      err,
    );
  }
  if (status === 400 || status === 416 || name === 'InvalidRequest' || name === 'InvalidRange')
    return new StoreError('invalid', message, err);
  // 5xx, throttling (SlowDown, 503), timeouts and connection resets: worth retrying.
  return new StoreError('transient', message, err);
}

export class S3Store implements ObjectStore {
  constructor(
    private readonly s3: S3Client,
    private readonly options: S3StoreOptions = {},
  ) {}

  async head(ref: ObjectRef): Promise<ObjectHead> {
    try {
      return headOf(await this.s3.send(new HeadObjectCommand({ Bucket: ref.bucket, Key: ref.key, VersionId: ref.versionId })));
    } catch (err) {
      throw classifyS3Error(err, `HEAD s3://${ref.bucket}/${ref.key}`);
    }
  }

  async getRange(ref: ObjectRef, start: number, end: number, ifMatch?: string) {
    try {
      const out = await this.s3.send(
        new GetObjectCommand({
          Bucket: ref.bucket,
          Key: ref.key,
          VersionId: ref.versionId,
          Range: `bytes=${start}-${end}`,
          IfMatch: ifMatch ? `"${ifMatch}"` : undefined,
        }),
      );
      const bytes = await out.Body!.transformToByteArray();
      const total = Number(/\/(\d+)$/.exec(out.ContentRange ?? '')?.[1] ?? out.ContentLength ?? bytes.length);
      return { head: headOf(out, total), bytes };
    } catch (err) {
      throw classifyS3Error(err, `GET (range) s3://${ref.bucket}/${ref.key}`);
    }
  }

  async get(ref: ObjectRef, options: { ifMatch?: string; maxBytes: number }) {
    let out: GetObjectCommandOutput;
    try {
      out = await this.s3.send(
        new GetObjectCommand({
          Bucket: ref.bucket,
          Key: ref.key,
          VersionId: ref.versionId,
          IfMatch: options.ifMatch ? `"${options.ifMatch}"` : undefined,
        }),
      );
    } catch (err) {
      throw classifyS3Error(err, `GET s3://${ref.bucket}/${ref.key}`);
    }
    const head = headOf(out);
    if (head.contentLength > options.maxBytes) {
      (out.Body as { destroy?: () => void } | undefined)?.destroy?.();
      throw new StoreError(
        'too-large',
        `s3://${ref.bucket}/${ref.key} is ${head.contentLength} bytes, over the ${options.maxBytes}-byte limit`,
      );
    }
    try {
      return { head, bytes: await out.Body!.transformToByteArray() };
    } catch (err) {
      throw classifyS3Error(err, `GET body s3://${ref.bucket}/${ref.key}`);
    }
  }

  private copySource(ref: ObjectRef): string {
    const key = ref.key.split('/').map(encodeURIComponent).join('/');
    return `${ref.bucket}/${key}${ref.versionId ? `?versionId=${encodeURIComponent(ref.versionId)}` : ''}`;
  }

  async replaceMetadata(ref: ObjectRef, head: ObjectHead, metadata: Record<string, string>, ifMatch: string) {
    if (head.contentLength > MAX_COPY_BYTES) {
      throw new StoreError(
        'too-large',
        `s3://${ref.bucket}/${ref.key} is over 5 GiB: a metadata rewrite needs a multipart copy, which EffiTag does not do`,
      );
    }
    const kms = head.serverSideEncryption === 'aws:kms' || head.serverSideEncryption === 'aws:kms:dsse';
    try {
      const out = await this.s3.send(
        new CopyObjectCommand({
          Bucket: ref.bucket,
          Key: ref.key,
          CopySource: this.copySource(ref),
          CopySourceIfMatch: `"${ifMatch}"`,
          MetadataDirective: 'REPLACE',
          Metadata: metadata,
          // A REPLACE copy resets these unless they are sent again.
          ContentType: head.contentType,
          CacheControl: head.cacheControl,
          ContentDisposition: head.contentDisposition,
          ContentEncoding: head.contentEncoding,
          ContentLanguage: head.contentLanguage,
          Expires: head.expires,
          WebsiteRedirectLocation: head.websiteRedirectLocation,
          StorageClass: head.storageClass && head.storageClass !== 'STANDARD' ? (head.storageClass as StorageClass) : undefined,
          ServerSideEncryption: kms ? (head.serverSideEncryption as ServerSideEncryption) : undefined,
          SSEKMSKeyId: kms ? head.sseKmsKeyId : undefined,
          BucketKeyEnabled: kms ? head.bucketKeyEnabled : undefined,
          // Object tags are kept: TaggingDirective defaults to COPY.
        }),
      );
      return { eTag: unquote(out.CopyObjectResult?.ETag), versionId: out.VersionId };
    } catch (err) {
      throw classifyS3Error(err, `COPY s3://${ref.bucket}/${ref.key}`);
    }
  }

  async getTags(ref: ObjectRef) {
    try {
      const out = await this.s3.send(new GetObjectTaggingCommand({ Bucket: ref.bucket, Key: ref.key, VersionId: ref.versionId }));
      return Object.fromEntries((out.TagSet ?? []).map((t) => [t.Key!, t.Value ?? '']));
    } catch (err) {
      throw classifyS3Error(err, `GET tagging s3://${ref.bucket}/${ref.key}`);
    }
  }

  async putTags(ref: ObjectRef, tags: Record<string, string>) {
    try {
      await this.s3.send(
        new PutObjectTaggingCommand({
          Bucket: ref.bucket,
          Key: ref.key,
          VersionId: ref.versionId,
          Tagging: { TagSet: Object.entries(tags).map(([Key, Value]) => ({ Key, Value })) },
        }),
      );
    } catch (err) {
      throw classifyS3Error(err, `PUT tagging s3://${ref.bucket}/${ref.key}`);
    }
  }

  async list(
    bucket: string,
    options: { prefix?: string; continuationToken?: string; startAfter?: string; maxKeys?: number },
  ): Promise<ListPage> {
    if (this.options.quirks === 's3rver') return this.listV1(bucket, options);
    try {
      const out = await this.s3.send(
        new ListObjectsV2Command({
          Bucket: bucket,
          Prefix: options.prefix,
          ContinuationToken: options.continuationToken,
          StartAfter: options.continuationToken ? undefined : options.startAfter,
          MaxKeys: options.maxKeys,
          EncodingType: 'url',
        }),
      );
      return {
        objects: (out.Contents ?? []).map((o) => ({
          key: listedKey(o.Key!, out.EncodingType),
          eTag: unquote(o.ETag),
          size: o.Size ?? 0,
          lastModified: o.LastModified,
          storageClass: o.StorageClass,
        })),
        nextContinuationToken: out.IsTruncated ? out.NextContinuationToken : undefined,
      };
    } catch (err) {
      throw classifyS3Error(err, `LIST s3://${bucket}/${options.prefix ?? ''}`);
    }
  }

  /** V1 listing; the "continuation token" is the last key of the previous page (the Marker). */
  private async listV1(
    bucket: string,
    options: { prefix?: string; continuationToken?: string; startAfter?: string; maxKeys?: number },
  ): Promise<ListPage> {
    try {
      const out = await this.s3.send(
        new ListObjectsCommand({
          Bucket: bucket,
          Prefix: options.prefix,
          Marker: options.continuationToken ?? options.startAfter,
          MaxKeys: options.maxKeys,
          EncodingType: 'url',
        }),
      );
      const objects = (out.Contents ?? []).map((o) => ({
        key: listedKey(o.Key!, out.EncodingType),
        eTag: unquote(o.ETag),
        size: o.Size ?? 0,
        lastModified: o.LastModified,
        storageClass: o.StorageClass,
      }));
      return { objects, nextContinuationToken: out.IsTruncated && objects.length ? objects[objects.length - 1].key : undefined };
    } catch (err) {
      throw classifyS3Error(err, `LIST s3://${bucket}/${options.prefix ?? ''}`);
    }
  }
}

/**
 * The gallery: one small HTTP server (node:http, no framework) in front of the tag index, the bucket
 * and the queues, for a person with a browser. It runs on the user's machine with the user's
 * credentials (embedded stack or AWS) and listens on loopback: nothing is made public. The browser
 * gets thumbnails the server makes (sharp, 256 px, cached) and presigned links to the originals.
 *
 *   GET /                     the page (gallery/page.html)
 *   GET /api/search           ?tag=…&tag=…&prefix=…&minP=…&cursor=…&limit=…  → hits with thumb and original URLs
 *   GET /api/suggest?q=…      tag suggestions from the WordNet hierarchy
 *   GET /api/status           queue depths, dead-lettered work with its reasons, failures recorded on objects
 *   GET /thumb?key=…&etag=…   a WebP thumbnail
 */
import { readFileSync } from 'node:fs';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { GetObjectCommand, type S3Client } from '@aws-sdk/client-s3';
import { getSignedUrl } from '@aws-sdk/s3-request-presigner';
import sharp from 'sharp';
import { normalizeTag, suggestTags } from '../model/tag-hierarchy.ts';
import type { SqsQueue } from '../pipeline/aws/sqs-queue.ts';
import { listDeadLetters } from '../pipeline/dead-letters.ts';
import { messageOf } from '../pipeline/log.ts';
import type { ObjectStore } from '../pipeline/ports.ts';
import { FAILED_TAG, headlineTags, type TagIndex } from '../pipeline/tag-index.ts';

const PAGE = readFileSync(new URL('./page.html', import.meta.url), 'utf8');
export const THUMB_PX = 256;
/** Originals larger than this get a placeholder, not a thumbnail (the server downloads what it shrinks). */
const THUMB_MAX_BYTES = 40 * 1024 * 1024;
const PAGE_SIZE = 60;

export interface GalleryDeps {
  bucket: string;
  index: TagIndex;
  store: ObjectStore;
  /** Signs the links to originals (GetObject, 15 minutes). */
  s3: S3Client;
  /** The pipeline's queues by name, for the status view. */
  queues: () => Promise<{ name: string; queue: SqsQueue }[]>;
  /** Thumbnails kept in memory (default 2,000, about 20 MB). */
  cacheEntries?: number;
}

const PLACEHOLDER = Buffer.from(
  `<svg xmlns="http://www.w3.org/2000/svg" width="${THUMB_PX}" height="${THUMB_PX}"><rect width="100%" height="100%" fill="#ddd"/><text x="50%" y="50%" text-anchor="middle" font-family="sans-serif" font-size="16" fill="#555">no preview</text></svg>`,
);

function send(res: ServerResponse, status: number, type: string, body: string | Buffer, cache = 'no-store'): void {
  res.writeHead(status, { 'content-type': type, 'cache-control': cache, 'x-content-type-options': 'nosniff' });
  res.end(body);
}
const json = (res: ServerResponse, status: number, value: unknown) =>
  send(res, status, 'application/json; charset=utf-8', JSON.stringify(value));

export function galleryHandler(deps: GalleryDeps): (req: IncomingMessage, res: ServerResponse) => void {
  const thumbs = new Map<string, Buffer>();
  const maxEntries = deps.cacheEntries ?? 2000;

  async function thumbnail(key: string, etag: string): Promise<Buffer | undefined> {
    const id = `${key}\n${etag}`;
    const cached = thumbs.get(id);
    if (cached) {
      // Most recently used last: the Map's order is the eviction order.
      thumbs.delete(id);
      thumbs.set(id, cached);
      return cached;
    }
    try {
      const { bytes } = await deps.store.get({ bucket: deps.bucket, key }, { maxBytes: THUMB_MAX_BYTES });
      const webp = await sharp(bytes, { limitInputPixels: 100_000_000 })
        .rotate()
        .resize(THUMB_PX, THUMB_PX, { fit: 'cover' })
        .webp({ quality: 70 })
        .toBuffer();
      thumbs.set(id, webp);
      if (thumbs.size > maxEntries) thumbs.delete(thumbs.keys().next().value!);
      return webp;
    } catch {
      return undefined; // gone, too large, or a format sharp cannot read (HEIC): the placeholder
    }
  }

  async function search(url: URL) {
    const tags = url.searchParams
      .getAll('tag')
      .flatMap((t) => t.split(','))
      .map(normalizeTag)
      .filter(Boolean);
    const minP = url.searchParams.get('minP');
    const limit = Number(url.searchParams.get('limit') ?? PAGE_SIZE);
    const page = await deps.index.search({
      bucket: deps.bucket,
      tags,
      prefix: url.searchParams.get('prefix') || undefined,
      minProbability: minP ? Number(minP) : undefined,
      limit: Number.isInteger(limit) && limit >= 1 && limit <= 200 ? limit : PAGE_SIZE,
      cursor: url.searchParams.get('cursor') || undefined,
    });
    const hits = await Promise.all(
      page.hits.map(async (h) => ({
        key: h.key,
        size: h.size,
        lastModified: h.lastModified,
        variant: h.variant,
        tags: headlineTags(h.tags, tags),
        thumb: `/thumb?${new URLSearchParams({ key: h.key, etag: h.eTag })}`,
        original: await getSignedUrl(deps.s3, new GetObjectCommand({ Bucket: deps.bucket, Key: h.key }), { expiresIn: 900 }),
      })),
    );
    return { bucket: deps.bucket, tags, hits, ...(page.cursor ? { cursor: page.cursor } : {}) };
  }

  async function status() {
    const sources = await deps.queues();
    const depths = await Promise.all(sources.map(async (s) => ({ queue: s.name, waiting: await s.queue.depth() })));
    const dead = await listDeadLetters(sources, { limit: 200 });
    const recorded = await deps.index.search({ bucket: deps.bucket, tags: [FAILED_TAG], limit: 100 });
    return {
      recorded: recorded.hits.map((h) => ({ key: h.key, reason: h.failure ?? '', at: h.at })),
      queues: depths.map((d) => ({ ...d, deadLettered: dead.find((r) => r.source === d.queue)?.messages ?? 0 })),
      failures: dead.flatMap((r) => r.groups.map((g) => ({ queue: r.source, reason: g.reason, count: g.count, samples: g.samples }))),
    };
  }

  return (req, res) => {
    const url = new URL(req.url ?? '/', 'http://gallery');
    const route = async () => {
      if (req.method !== 'GET') return send(res, 405, 'text/plain', 'GET only');
      switch (url.pathname) {
        case '/':
          return send(res, 200, 'text/html; charset=utf-8', PAGE);
        case '/api/search':
          return json(res, 200, await search(url));
        case '/api/suggest':
          return json(res, 200, suggestTags(url.searchParams.get('q') ?? '', 12));
        case '/api/status':
          return json(res, 200, await status());
        case '/thumb': {
          const key = url.searchParams.get('key');
          if (!key) return send(res, 400, 'text/plain', 'key required');
          const webp = await thumbnail(key, url.searchParams.get('etag') ?? '');
          // Addressed by ETag: a thumbnail never changes, so the browser may keep it.
          return webp
            ? send(res, 200, 'image/webp', webp, 'private, max-age=86400, immutable')
            : send(res, 200, 'image/svg+xml', PLACEHOLDER, 'no-store');
        }
        default:
          return send(res, 404, 'text/plain', 'not found');
      }
    };
    route().catch((err) => {
      const msg = messageOf(err);
      json(res, /invalid cursor|limit must be/.test(msg) ? 400 : 502, { error: msg });
    });
  };
}

export async function startGallery(
  deps: GalleryDeps,
  options: { host?: string; port?: number } = {},
): Promise<{ url: string; server: Server; close(): Promise<void> }> {
  const server = createServer(galleryHandler(deps));
  const host = options.host ?? '127.0.0.1';
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(options.port ?? 0, host, () => resolve());
  });
  const { port } = server.address() as { port: number };
  return {
    url: `http://${host.includes(':') ? `[${host}]` : host}:${port}/`,
    server,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}

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
 *   GET /api/similar?key=…    the images most like one (its embedding's nearest, same model), best first
 *   GET /api/dupes?prefix=…   duplicate groups (pipeline/dupes.ts: exact by perceptual hash, near by embedding),
 *                             with the thresholds used (each space's calibration, as `effitag dupes` uses them)
 *   GET /thumb?key=…&etag=…   a WebP thumbnail (cached by the object's real ETag; `etag` only lets the browser keep it)
 *
 * Only the gallery's own page may call it: requests naming another Host or coming from another
 * origin are refused (DNS rebinding would otherwise hand any web page the keys and signed links).
 */
import { messageOf } from '../base/errors.ts';
import { readFileSync } from 'node:fs';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { GetObjectCommand, type S3Client } from '@aws-sdk/client-s3';
import { getSignedUrl } from '@aws-sdk/s3-request-presigner';
import sharp from 'sharp';
import { normalizeTag, suggestTags } from '../model/tag-hierarchy.ts';
import { listDeadLetters } from '../pipeline/dead-letters.ts';
import { DISTANCE_RULE, DupesError, findDupes, SCORE_RULE } from '../pipeline/dupes.ts';
import { describeHashThreshold, describeThreshold, type ThresholdOptions } from '../pipeline/dupes-lines.ts';
import type { CalibrationStore } from '../pipeline/near-calibration.ts';
import { type MessageQueue, type ObjectHead, type ObjectStore, StoreError, type VectorIndex } from '../pipeline/ports.ts';
import { FAILED_TAG, headlineTags, type TagIndex } from '../pipeline/tag-index.ts';
import { MAX_LIMIT, SimilarError, type SimilarReport, similarToObject } from '../pipeline/similar.ts';
import { refusal } from './request-guard.ts';

const PAGE = readFileSync(new URL('./page.html', import.meta.url), 'utf8');
export const THUMB_PX = 256;
/** Originals larger than this get a placeholder, not a thumbnail (the server downloads what it shrinks). */
const THUMB_MAX_BYTES = 40 * 1024 * 1024;
/**
 * Nor does one whose pixels would take more than this to decode (64 Mpx, 256 MB as RGBA: a 61 Mpx
 * camera's photos pass; a 9999x9999 PNG, 400 MB decoded, does not). sharp reads the size from the
 * header and refuses before decoding.
 */
export const THUMB_MAX_PIXELS = 64 * 1024 * 1024;
/** Thumbnails made at once: each holds a libuv worker thread the index and the bucket calls also need. */
const THUMB_CONCURRENCY = 2;
/** One decode may take this long; past it the placeholder (and the refusal is remembered for that ETag). */
const THUMB_TIMEOUT_S = 10;
const PAGE_SIZE = 60;
/** Duplicate groups the page gets at most (the CLI lists them all). */
const DUPE_GROUPS_SHOWN = 200;
/** Index entries one search request reads at most; past it the page comes back short, with a cursor. */
const SEARCH_MAX_SCANNED = 1000;
/** How a threshold is set by hand here (the lines the page shows name it): /api/dupes's parameters, not the CLI's flags. */
const DUPES_PARAMETERS: ThresholdOptions = {
  maxDistance: 'maxDistance',
  minScore: 'minScore',
  set: (option, value) => `?${option}=${value} in the page's address`,
};

export interface GalleryDeps {
  bucket: string;
  index: TagIndex;
  store: ObjectStore;
  /** Signs the links to originals (GetObject, 15 minutes). */
  s3: S3Client;
  /** The pipeline's queues by name, for the status view. */
  queues: () => Promise<{ name: string; queue: MessageQueue }[]>;
  /** Image embeddings (issue 23), for "Similar" and the near duplicates; without it, Similar says so. */
  vectors?: VectorIndex;
  /**
   * The near-duplicate thresholds measured per embedding space (`effitag dupes calibrate`), where
   * `effitag dupes` reads them (cli/commands/dupes.ts, stackCalibrations): so the Duplicates view
   * groups as the CLI does. Without it every space is uncalibrated, and the page says so.
   */
  calibrations?: Pick<CalibrationStore, 'read'>;
  /** Thumbnails kept in memory (default 2,000, about 20 MB). */
  cacheEntries?: number;
  /** Index entries a search request reads at most (default 1,000). */
  searchMaxScanned?: number;
  /** Decode limits (tests lower them). */
  thumbMaxPixels?: number;
  thumbTimeoutSeconds?: number;
}

/** What the gallery did, for tests and figures. */
export interface GalleryStats {
  /** Originals downloaded and decoded into thumbnails (or refused by sharp). */
  decodes: number;
  /** Requests refused by the Host/Origin check. */
  refused: number;
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

/** A bad request: the message goes back to the page as a 400. */
class BadRequest extends Error {}

/**
 * A key the gallery may fetch from its bucket. The SDK sends `.` and `..` segments as they are and
 * HTTP servers resolve them, so `../other-bucket/k` would address another bucket: such keys get no
 * thumbnail (the gallery cannot name them safely), whatever the index holds.
 */
export function thumbnailKeyProblem(key: string): string | undefined {
  if (!key) return 'key required';
  if (Buffer.byteLength(key) > 1024) return 'key longer than 1,024 bytes';
  if (key.split('/').some((s) => s === '.' || s === '..')) return 'key has a "." or ".." segment';
  return undefined;
}

/** At most `n` tasks at once; the others wait their turn in order. */
function semaphore(n: number): <T>(task: () => Promise<T>) => Promise<T> {
  let running = 0;
  const waiting: (() => void)[] = [];
  return async (task) => {
    if (running >= n) await new Promise<void>((r) => waiting.push(r));
    else running++;
    try {
      return await task();
    } finally {
      const next = waiting.shift();
      if (next) next();
      else running--;
    }
  };
}

export function galleryHandler(
  deps: GalleryDeps,
  /** port: the port it listens on (and listenHost the address), for the Host check; stats: counters to fill. */
  options: { port?: () => number; listenHost?: string; stats?: GalleryStats } = {},
): (req: IncomingMessage, res: ServerResponse) => void {
  // By key and the object's real ETag; undefined: no thumbnail can be made of that version (placeholder).
  const thumbs = new Map<string, Buffer | undefined>();
  const making = new Map<string, Promise<Buffer | undefined>>();
  const maxEntries = deps.cacheEntries ?? 2000;
  const oneAtATime = semaphore(THUMB_CONCURRENCY);
  const stats = options.stats ?? { decodes: 0, refused: 0 };

  function remember(id: string, webp: Buffer | undefined): void {
    thumbs.set(id, webp);
    if (thumbs.size > maxEntries) thumbs.delete(thumbs.keys().next().value!);
  }

  /** The thumbnail of the object as it is now: its real ETag (HEAD) keys the cache, never the caller's. */
  async function thumbnail(key: string): Promise<{ eTag?: string; webp?: Buffer }> {
    let head: ObjectHead;
    try {
      head = await deps.store.head({ bucket: deps.bucket, key });
    } catch (err) {
      if (err instanceof StoreError && err.kind !== 'transient') return {};
      throw err;
    }
    if (head.contentLength > THUMB_MAX_BYTES) return { eTag: head.eTag };
    const id = `${key}\n${head.eTag}`;
    if (thumbs.has(id)) {
      const cached = thumbs.get(id);
      // Most recently used last: the Map's order is the eviction order.
      thumbs.delete(id);
      thumbs.set(id, cached);
      return { eTag: head.eTag, webp: cached };
    }
    // Many requests for one version (a page's tiles, a reload) share one decode.
    let pending = making.get(id);
    if (!pending) {
      pending = oneAtATime(() => decode(key, head.eTag)).then(
        (webp) => {
          remember(id, webp);
          return webp;
        },
        (err) => {
          // Changed since the HEAD, gone, or unreachable: nothing to remember about this version.
          if (err instanceof StoreError) return undefined;
          remember(id, undefined); // sharp refused it (format, pixel limit, timeout): so it stays
          return undefined;
        },
      );
      pending.finally(() => making.delete(id)).catch(() => {});
      making.set(id, pending);
    }
    return { eTag: head.eTag, webp: await pending };
  }

  async function decode(key: string, eTag: string): Promise<Buffer> {
    stats.decodes++;
    const { bytes } = await deps.store.get({ bucket: deps.bucket, key }, { ifMatch: eTag, maxBytes: THUMB_MAX_BYTES });
    return sharp(bytes, { limitInputPixels: deps.thumbMaxPixels ?? THUMB_MAX_PIXELS })
      .timeout({ seconds: deps.thumbTimeoutSeconds ?? THUMB_TIMEOUT_S })
      .rotate()
      .resize(THUMB_PX, THUMB_PX, { fit: 'cover' })
      .webp({ quality: 70 })
      .toBuffer();
  }

  async function search(url: URL) {
    const tags = url.searchParams
      .getAll('tag')
      .flatMap((t) => t.split(','))
      .map(normalizeTag)
      .filter(Boolean);
    const minP = url.searchParams.get('minP') || undefined;
    const minProbability = minP === undefined ? undefined : Number(minP);
    if (minProbability !== undefined && !(minProbability >= 0 && minProbability <= 1))
      throw new BadRequest(`minP must be a number from 0 to 1, got "${minP}"`);
    const limitParam = url.searchParams.get('limit') || undefined;
    const limit = limitParam === undefined ? PAGE_SIZE : Number(limitParam);
    if (!(Number.isInteger(limit) && limit >= 1 && limit <= 200))
      throw new BadRequest(`limit must be an integer from 1 to 200, got "${limitParam}"`);
    const page = await deps.index.search({
      bucket: deps.bucket,
      tags,
      prefix: url.searchParams.get('prefix') || undefined,
      minProbability,
      limit,
      cursor: url.searchParams.get('cursor') || undefined,
      // A filter that matches little (a prefix, a high minP) would otherwise read the whole tag:
      // the page gets what was found so far and a cursor, and asks again.
      maxScanned: deps.searchMaxScanned ?? SEARCH_MAX_SCANNED,
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
    return { bucket: deps.bucket, tags, hits, scanned: page.scanned, ...(page.cursor ? { cursor: page.cursor } : {}) };
  }

  async function status() {
    const sources = await deps.queues();
    const depths = await Promise.all(
      sources.map(async (s) => {
        const d = await s.queue.depth();
        // Delayed messages are waiting too, only not yet receivable.
        return { queue: s.name, waiting: d.visible + d.delayed, inFlight: d.inFlight };
      }),
    );
    const dead = await listDeadLetters(sources, { limit: 200 });
    const recorded = await deps.index.search({ bucket: deps.bucket, tags: [FAILED_TAG], limit: 100 });
    return {
      recorded: recorded.hits.map((h) => ({ key: h.key, reason: h.failure ?? '', at: h.at })),
      queues: depths.map((d) => ({ ...d, deadLettered: dead.find((r) => r.source === d.queue)?.messages ?? 0 })),
      failures: dead.flatMap((r) => r.groups.map((g) => ({ queue: r.source, reason: g.reason, count: g.count, samples: g.samples }))),
    };
  }

  /** An image and its links, as the page shows it (tags from its index record when it has one). */
  async function shown(key: string, tags?: Record<string, number>) {
    const rec = tags ? undefined : await deps.index.get(deps.bucket, key);
    return {
      key,
      tags: headlineTags(tags ?? rec?.tags ?? {}, []),
      thumb: `/thumb?${new URLSearchParams({ key, ...(rec ? { etag: rec.eTag } : {}) })}`,
      original: await getSignedUrl(deps.s3, new GetObjectCommand({ Bucket: deps.bucket, Key: key }), { expiresIn: 900 }),
    };
  }

  /** The images most like one (pipeline/similar.ts): its own vector, queried in its model's space; itself left out. */
  async function similar(url: URL) {
    const key = url.searchParams.get('key') ?? '';
    const problem = key ? (Buffer.byteLength(key) > 1024 ? 'key longer than 1,024 bytes' : undefined) : 'key required';
    if (problem) throw new BadRequest(problem);
    const limitParam = url.searchParams.get('limit') || undefined;
    const limit = limitParam === undefined ? PAGE_SIZE : Number(limitParam);
    // Checked here too, to name the query parameter (the core's message names the CLI's --limit).
    if (!(Number.isInteger(limit) && limit >= 1 && limit <= MAX_LIMIT))
      throw new BadRequest(`limit must be an integer from 1 to ${MAX_LIMIT}, got "${limitParam}"`);
    if (!deps.vectors) throw new BadRequest('this stack keeps no image embeddings (no vector index): Similar is not available');
    let report: SimilarReport;
    try {
      report = await similarToObject({ index: deps.index, vectors: deps.vectors }, { bucket: deps.bucket, key }, { limit });
    } catch (err) {
      if (err instanceof SimilarError) throw new BadRequest(err.message);
      throw err;
    }
    return {
      bucket: deps.bucket,
      key,
      model: report.space,
      hits: await Promise.all(report.hits.map(async (h) => ({ ...(await shown(h.key)), score: h.score }))),
    };
  }

  async function dupes(url: URL) {
    // Absent: findDupes' own defaults, the CLI's (each space's calibration; a fixed score would override them all).
    // Checked here, so a bad value is named as this page's parameter (findDupes' own errors name the CLI's flags).
    const number = (name: string, rule: { valid: (n: number) => boolean; what: string }) => {
      const v = url.searchParams.get(name) || undefined;
      if (v === undefined) return undefined;
      const n = Number(v);
      if (!Number.isFinite(n) || !rule.valid(n)) throw new BadRequest(`${name} must be ${rule.what}, got "${v}"`);
      return n;
    };
    const maxDistance = number('maxDistance', DISTANCE_RULE);
    const minScore = number('minScore', SCORE_RULE);
    const prefix = url.searchParams.get('prefix') || undefined;
    try {
      const report = await findDupes(
        { index: deps.index, vectors: deps.vectors, calibrations: deps.calibrations },
        { bucket: deps.bucket, prefix },
        { maxDistance, minScore },
      );
      const groups = report.groups.slice(0, DUPE_GROUPS_SHOWN);
      return {
        bucket: deps.bucket,
        checked: report.checked,
        total: report.groups.length,
        // The thresholds used and where they came from, each with the line the page shows (the CLI's wording).
        exact: { ...report.exact, text: describeHashThreshold(report.exact, report.checked.hashed, DUPES_PARAMETERS) },
        near: report.near.map((t) => ({ ...t, text: describeThreshold(t, DUPES_PARAMETERS) })),
        groups: await Promise.all(groups.map(async (g) => ({ ...g, images: await Promise.all(g.keys.map((k) => shown(k))) }))),
      };
    } catch (err) {
      if (err instanceof DupesError) throw new BadRequest(err.message);
      throw err;
    }
  }

  return (req, res) => {
    const url = new URL(req.url ?? '/', 'http://gallery');
    const route = async () => {
      // The page itself holds no data, so a link from elsewhere may open it; nothing else answers
      // a request that another origin made or that names another host (see request-guard.ts).
      const refused = options.port && refusal(req, { port: options.port(), listenHost: options.listenHost }, ['/']);
      if (refused) {
        stats.refused++;
        return send(res, 403, 'text/plain; charset=utf-8', refused);
      }
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
        case '/api/similar':
          return json(res, 200, await similar(url));
        case '/api/dupes':
          return json(res, 200, await dupes(url));
        case '/thumb': {
          const key = url.searchParams.get('key') ?? '';
          const problem = thumbnailKeyProblem(key);
          if (problem) return send(res, 400, 'text/plain; charset=utf-8', problem);
          const { eTag, webp } = await thumbnail(key);
          if (!webp) return send(res, 200, 'image/svg+xml', PLACEHOLDER, 'no-store');
          // The URL names the ETag, so a browser may keep what it got, if that is the version it names.
          const current = eTag === url.searchParams.get('etag');
          return send(res, 200, 'image/webp', webp, current ? 'private, max-age=86400, immutable' : 'no-cache');
        }
        default:
          return send(res, 404, 'text/plain', 'not found');
      }
    };
    route().catch((err) => {
      const msg = messageOf(err);
      json(res, err instanceof BadRequest || /invalid cursor|limit must be/.test(msg) ? 400 : 502, { error: msg });
    });
  };
}

export async function startGallery(
  deps: GalleryDeps,
  options: { host?: string; port?: number } = {},
): Promise<{ url: string; server: Server; stats: GalleryStats; close(): Promise<void> }> {
  const stats: GalleryStats = { decodes: 0, refused: 0 };
  let port = 0;
  const host = options.host ?? '127.0.0.1';
  const server = createServer(galleryHandler(deps, { port: () => port, listenHost: host, stats }));
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(options.port ?? 0, host, () => resolve());
  });
  port = (server.address() as { port: number }).port;
  return {
    url: `http://${host.includes(':') ? `[${host}]` : host}:${port}/`,
    server,
    stats,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}

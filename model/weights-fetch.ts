/**
 * `effitag weights fetch`: download an official Keras .h5, check its published MD5, cache it, convert it.
 *
 * Cache: `$EFFITAG_CACHE_DIR`, else `$XDG_CACHE_HOME/effitag`, else `~/.cache/effitag`.
 *   keras/<file>.h5            the verified download (kept, so a second fetch makes no request)
 *   weights/<variant>[-notop]/ the converted artifact
 * A download goes to a temporary file and is renamed into the cache only after its MD5 matched.
 */
import { messageOf } from '../base/errors.ts';
import { createHash } from 'node:crypto';
import { createReadStream, createWriteStream } from 'node:fs';
import { mkdir, rename, rm, stat } from 'node:fs/promises';
import { cacheDir } from './cache-dir.ts';
import { basename, join } from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { decodeVariant } from './spec.ts';
import { importKerasWeights, readManifest, type WeightsManifest } from './weights.ts';
import { timmImportHint } from './weights-timm.ts';

const V1_BASE = 'https://storage.googleapis.com/keras-applications';
const V2_BASE = 'https://storage.googleapis.com/tensorflow/keras-applications/efficientnet_v2';

/** Published MD5s of the official files: [with top, without top]. */
const OFFICIAL_MD5: Readonly<Record<string, readonly [string, string]>> = {
  b0: ['902e53a9f72be733fc0bcb005b3ebbac', '50bc09e76180e00e4465e1a485ddc09d'],
  b1: ['1d254153d4ab51201f1646940f018540', '74c4e6b3e1f6a1eea24c589628592432'],
  b2: ['b15cce36ff4dcbd00b6dd88e7857a6ad', '111f8e2ac8aa800a7a99e3239f7bfb39'],
  b3: ['ffd1fdc53d0ce67064dc6a9c7960ede0', 'af6d107764bb5b1abb91932881670226'],
  b4: ['18c95ad55216b8f92d7e70b3a046e2fc', 'ebc24e6d6c33eaebbd558eafbeedf1ba'],
  b5: ['ace28f2a6363774853a83a0b21b9421a', '38879255a25d3c92d5e44e04ae6cec6f'],
  b6: ['165f6e37dce68623721b423839de8be5', '9ecce42647a20130c1f39a5d4cb75743'],
  b7: ['8c03f828fec3ef71311cd463b6759d99', 'cbcfe4450ddf6f3ad90b1b398090fe4a'],
  'v2-b0': ['21ecbf6da12460d5c40bb2f29ceb2188', '893217f2bb855e2983157299931e43ff'],
  'v2-b1': ['069f0534ff22adf035c89e2d9547a9dc', '0e80663031ca32d657f9caa404b6ec37'],
  'v2-b2': ['424e49f28180edbde1e94797771950a7', '1dfe2e7a5d45b6632553a8961ea609eb'],
  'v2-b3': ['1f1fc43bd98a6e4fd8fdfd551e02c7a0', 'f6abf7b5849ac99a89b50dd3fd532856'],
  'v2-s': ['e1d88a8495beba45748fedd0cecbe016', 'af0682fb74e8c54910f2d4393339c070'],
  'v2-m': ['a3bf6aa3276309f4fc6a34aa114c95cd', '1b8dc055df72dde80d614482840fe342'],
  'v2-l': ['27e6d408b53c7ebc868fefa357689935', 'b0b66b5c863aef5b46e8608fe1711615'],
};

export interface OfficialWeights {
  url: string;
  md5: string;
  fileName: string;
}

/** URL and MD5 of the official Keras file for a variant. */
export function officialWeights(variant: string, notop = false): OfficialWeights {
  const spec = decodeVariant(variant);
  const v = spec.variant;
  const md5 = OFFICIAL_MD5[v];
  if (!md5)
    throw new Error(
      spec.family === 'lite'
        ? `no official Keras file for ${v}: its weights are timm's (${timmImportHint(v, 'DIR')})`
        : `no official weights for ${v} (custom variants bring their own: effitag weights import)`,
    );
  const suffix = notop ? '_notop' : '';
  const fileName = v.startsWith('v2-') ? `efficientnetv2-${v.slice(3)}${suffix}.h5` : `efficientnet${v}${suffix}.h5`;
  return { url: `${v.startsWith('v2-') ? V2_BASE : V1_BASE}/${fileName}`, md5: md5[notop ? 1 : 0], fileName };
}

export { cacheDir } from './cache-dir.ts';

export interface Progress {
  start(totalBytes: number | undefined): void;
  update(bytes: number): void;
  stop(): void;
}

export interface FetchOptions {
  variant: string;
  notop?: boolean;
  /** Override the download URL; must come with `md5`. Env: EFFITAG_WEIGHTS_URL / EFFITAG_WEIGHTS_MD5. */
  url?: string;
  md5?: string;
  /** Artifact directory. Default: <cache>/weights/<variant>[-notop]. */
  out?: string;
  cache?: string;
  progress?: Progress;
  fetchImpl?: typeof fetch;
}

export interface FetchResult {
  manifest: WeightsManifest;
  dir: string;
  h5Path: string;
  downloaded: boolean;
  converted: boolean;
}

/** Raised when the weights cannot be obtained; the message says what to do instead. */
export class WeightsFetchError extends Error {
  override name = 'WeightsFetchError';
}

async function md5File(path: string): Promise<string> {
  const hash = createHash('md5');
  await pipeline(createReadStream(path), hash);
  return hash.digest('hex');
}

const exists = (p: string) =>
  stat(p).then(
    () => true,
    () => false,
  );

export async function fetchWeights(options: FetchOptions): Promise<FetchResult> {
  const spec = decodeVariant(options.variant);
  const variant = spec.variant;
  // Lite has no Keras application, so no .h5 to download or convert (a --url one would fail in the
  // converter, obscurely): its official weights are timm's safetensors, imported by another command.
  if (spec.family === 'lite') {
    const out = options.out ?? join(options.cache ?? cacheDir(), 'weights', variant);
    throw new WeightsFetchError(
      `${variant} (EfficientNet-Lite) has no Keras .h5 to fetch: ${timmImportHint(variant, out)}, then publish it (npx effitag weights publish)`,
    );
  }
  const url = options.url ?? process.env.EFFITAG_WEIGHTS_URL;
  const md5Override = options.md5 ?? process.env.EFFITAG_WEIGHTS_MD5;
  if (url && !md5Override) throw new WeightsFetchError('a weights URL override needs its expected MD5 too (--md5 or EFFITAG_WEIGHTS_MD5)');
  const official = url ? undefined : officialWeights(variant, options.notop);
  const source = url ? { url, md5: md5Override!.toLowerCase(), fileName: basename(new URL(url).pathname) || `${variant}.h5` } : official!;
  if (!/^[0-9a-f]{32}$/.test(source.md5)) throw new WeightsFetchError(`expected MD5 must be 32 hex digits, got "${source.md5}"`);

  const cache = options.cache ?? cacheDir();
  const h5Dir = join(cache, 'keras');
  // The MD5 is part of the cached name, so a different expected hash never reuses a stale file.
  const h5Path = join(h5Dir, `${source.md5}-${source.fileName}`);
  const dir = options.out ?? join(cache, 'weights', `${variant}${options.notop ? '-notop' : ''}`);

  let downloaded = false;
  if (!(await exists(h5Path)) || (await md5File(h5Path)) !== source.md5) {
    await download(source.url, source.md5, h5Path, options);
    downloaded = true;
  }
  // Reuse a converted artifact made from this very file.
  if (!downloaded && (await exists(join(dir, 'manifest.json')))) {
    const manifest = await readManifest(dir);
    if (manifest.source.md5 === source.md5 && manifest.variant === variant) return { manifest, dir, h5Path, downloaded, converted: false };
  }
  const manifest = await importKerasWeights(h5Path, { variant, out: dir, source: { url: source.url, md5: source.md5 } });
  return { manifest, dir, h5Path, downloaded, converted: true };
}

async function download(url: string, md5: string, dest: string, options: FetchOptions): Promise<void> {
  await mkdir(join(dest, '..'), { recursive: true });
  const tmp = `${dest}.${process.pid}.part`;
  const fetchImpl = options.fetchImpl ?? fetch;
  let response: Response;
  try {
    response = await fetchImpl(url, { signal: AbortSignal.timeout(10 * 60_000) });
  } catch (err) {
    const cause = (err as { cause?: { code?: string } }).cause?.code ?? messageOf(err);
    throw new WeightsFetchError(
      `cannot download ${url} (${cause}); this machine looks offline or cannot reach the host.\n` +
        `Download the file elsewhere (MD5 ${md5}) and run: effitag weights import --keras FILE --variant ${options.variant} --out DIR`,
    );
  }
  if (!response.ok || !response.body)
    throw new WeightsFetchError(`download of ${url} failed: HTTP ${response.status} ${response.statusText}`);
  const total = Number(response.headers.get('content-length')) || undefined;
  const hash = createHash('md5');
  let received = 0;
  options.progress?.start(total);
  try {
    const body = Readable.fromWeb(response.body as import('node:stream/web').ReadableStream<Uint8Array>);
    body.on('data', (chunk: Buffer) => {
      hash.update(chunk);
      received += chunk.length;
      options.progress?.update(received);
    });
    await pipeline(body, createWriteStream(tmp));
  } catch (err) {
    await rm(tmp, { force: true });
    throw new WeightsFetchError(`download of ${url} broke off after ${received} bytes: ${messageOf(err)}`);
  } finally {
    options.progress?.stop();
  }
  const actual = hash.digest('hex');
  if (actual !== md5) {
    await rm(tmp, { force: true });
    throw new WeightsFetchError(`MD5 mismatch for ${url}: expected ${md5}, got ${actual}; nothing was cached`);
  }
  await rename(tmp, dest);
}

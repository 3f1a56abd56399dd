import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { createServer, type Server } from 'node:http';
import { readdir, readFile } from 'node:fs/promises';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { planModel } from '../model/plan.ts';
import { fetchWeights, officialWeights, WeightsFetchError } from '../model/weights-fetch.ts';
import { writeKerasH5 } from './support/keras-h5-writer.ts';
import { tempDir } from './support/fixtures.ts';

describe('weights fetch', () => {
  let server: Server;
  let base: string;
  let body: Buffer;
  let md5: string;
  const requests: string[] = [];

  before(async () => {
    const dir = await tempDir();
    await writeKerasH5(join(dir, 'efficientnetb0.h5'), planModel('b0'), { seed: 5 });
    body = await readFile(join(dir, 'efficientnetb0.h5'));
    md5 = createHash('md5').update(body).digest('hex');
    server = createServer((req, res) => {
      requests.push(req.url ?? '');
      res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': body.length });
      res.end(body);
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  });
  after(() => new Promise<void>((resolve) => server.close(() => resolve())));

  it('knows the official URLs and published MD5s', () => {
    assert.deepEqual(officialWeights('b0'), {
      url: 'https://storage.googleapis.com/keras-applications/efficientnetb0.h5',
      md5: '902e53a9f72be733fc0bcb005b3ebbac',
      fileName: 'efficientnetb0.h5',
    });
    assert.equal(
      officialWeights('v2-s', true).url,
      'https://storage.googleapis.com/tensorflow/keras-applications/efficientnet_v2/efficientnetv2-s_notop.h5',
    );
    assert.equal(officialWeights('v2-s', true).md5, 'af0682fb74e8c54910f2d4393339c070');
    assert.throws(() => officialWeights('phi-1'), /no official weights/);
  });

  it('a wrong hash is an error and nothing is cached', async () => {
    const cache = await tempDir();
    const before = requests.length;
    await assert.rejects(
      fetchWeights({ variant: 'b0', url: `${base}/efficientnetb0.h5`, md5: '0'.repeat(32), cache }),
      (err: Error) => err instanceof WeightsFetchError && /MD5 mismatch/.test(err.message) && /nothing was cached/.test(err.message),
    );
    assert.equal(requests.length, before + 1);
    const kerasDir = await readdir(join(cache, 'keras')).catch(() => []);
    assert.deepEqual(kerasDir, [], 'no file, not even a partial one, is left in the cache');
    await assert.rejects(readdir(join(cache, 'weights')));
  });

  it('the right hash caches and converts; a second fetch makes no request', async () => {
    const cache = await tempDir();
    const before = requests.length;
    const first = await fetchWeights({ variant: 'b0', url: `${base}/efficientnetb0.h5`, md5, cache });
    assert.equal(first.downloaded, true);
    assert.equal(first.converted, true);
    assert.equal(first.manifest.variant, 'b0');
    assert.equal(first.manifest.source.md5, md5);
    assert.equal(requests.length, before + 1);
    assert.deepEqual(await readFile(first.h5Path), body);

    const second = await fetchWeights({ variant: 'b0', url: `${base}/efficientnetb0.h5`, md5, cache });
    assert.equal(second.downloaded, false);
    assert.equal(second.converted, false);
    assert.equal(second.manifest.sha256, first.manifest.sha256);
    assert.equal(requests.length, before + 1, 'no second request');
  });

  it('offline gives a clear message saying how to provide the weights', async () => {
    const cache = await tempDir();
    // A port nothing listens on: the connection is refused, as offline.
    const closed = createServer();
    await new Promise<void>((resolve) => closed.listen(0, '127.0.0.1', resolve));
    const port = (closed.address() as AddressInfo).port;
    await new Promise<void>((resolve) => closed.close(() => resolve()));
    await assert.rejects(
      fetchWeights({ variant: 'b0', url: `http://127.0.0.1:${port}/x.h5`, md5, cache }),
      (err: Error) =>
        err instanceof WeightsFetchError && /offline/.test(err.message) && /effitag weights import --keras FILE/.test(err.message),
    );
  });

  it('an override URL without its hash is refused', async () => {
    await assert.rejects(fetchWeights({ variant: 'b0', url: `${base}/x.h5` }), /needs its expected MD5/);
  });
});

/**
 * The rehearsal under load (issue 20, item 7): its polls do not drain the SDK's retry quota, and its
 * files are its own (per checkout and per run), so a busy machine or a second checkout cannot fail it.
 */
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { before, describe, it } from 'node:test';
import { HeadObjectCommand } from '@aws-sdk/client-s3';
import { s3Client } from '../pipeline/aws/clients.ts';
import { CHECKOUT_DIR, cached, runRoot, runTemp } from './rehearsal/paths.ts';
import { metadataOfAll } from './rehearsal/run.ts';

/** An S3 stand-in that resets the connection of each object's first request (a busy server closing keep-alive sockets). */
function resettingS3(): Promise<{ server: Server; endpoint: string; requests: () => number }> {
  let n = 0;
  const seen = new Set<string>();
  const server = createServer((req, res) => {
    n++;
    if (!seen.has(req.url!)) {
      seen.add(req.url!);
      req.socket.destroy();
      return;
    }
    res.writeHead(200, { etag: '"e"', 'x-amz-meta-effitag-status': 'tagged' });
    res.end();
  });
  return new Promise((resolve) =>
    server.listen(0, '127.0.0.1', () =>
      resolve({ server, endpoint: `http://127.0.0.1:${(server.address() as { port: number }).port}`, requests: () => n }),
    ),
  );
}

const credentials = { accessKeyId: 'a', secretAccessKey: 'b' };
const keys = Array.from({ length: 40 }, (_, i) => `catalog/item ${i}.jpg`);

describe('rehearsal under load: polling 40 objects through connection resets', () => {
  it('all at once (as the SIGKILL test did) drains the retry quota: some HEADs fail with ECONNRESET, unretried', async () => {
    const { server, endpoint } = await resettingS3();
    const s3 = s3Client({ s3Endpoint: endpoint, credentials });
    try {
      const results = await Promise.allSettled(keys.map((Key) => s3.send(new HeadObjectCommand({ Bucket: 'b', Key }))));
      const failed = results.flatMap((r) => (r.status === 'rejected' ? [r.reason] : []));
      assert.ok(failed.length > 0, 'the quota (500 tokens, 14 per retry) runs out');
      assert.equal(failed[0].code, 'ECONNRESET');
      assert.equal(failed[0].$metadata.attempts, 1, 'refused a retry, as in the CI failure');
    } finally {
      s3.destroy();
      server.close();
    }
  });

  it('metadataOfAll, a few at a time, gets every status through the same resets', async () => {
    const { server, endpoint, requests } = await resettingS3();
    const s3 = s3Client({ s3Endpoint: endpoint, credentials });
    try {
      const metadata = await metadataOfAll(s3, 'b', keys);
      assert.deepEqual(
        metadata.map((m) => m?.['effitag-status']),
        keys.map(() => 'tagged'),
      );
      assert.equal(requests(), 2 * keys.length, 'each HEAD was retried once after its reset');
    } finally {
      s3.destroy();
      server.close();
    }
  });
});

describe("rehearsal files: each run's own, caches per checkout", () => {
  let root: string;
  before(() => {
    root = runRoot();
  });

  it("synthesis and every artifact write under this run's own folder, in this checkout's, never a shared os.tmpdir()/effitag-rehearsal", () => {
    assert.ok(root.startsWith(`${CHECKOUT_DIR}/run-${process.pid}-`), root);
    assert.notEqual(CHECKOUT_DIR, join(tmpdir(), 'effitag-rehearsal'));
    const a = runTemp('synth-');
    const b = runTemp('synth-');
    assert.notEqual(a, b);
    assert.ok(a.startsWith(root) && b.startsWith(root));
  });

  it('a cache entry is built once, into a temporary name renamed into place; a concurrent build of the same entry keeps one', async () => {
    const name = `test-entry-${process.pid}-${Date.now()}`;
    let builds = 0;
    const build = async (dir: string) => {
      builds++;
      execFileSync('touch', [join(dir, 'built')]);
      await new Promise((r) => setTimeout(r, 50));
    };
    const [x, y] = await Promise.all([cached(name, build), cached(name, build)]);
    assert.equal(x, y);
    assert.ok(existsSync(join(x, 'built')));
    assert.equal(await cached(name, build), x);
    assert.equal(builds, 2, 'both raced, the second found the first in place');
    execFileSync('rm', ['-rf', x]);
  });

  it("the run's folder is removed when its process exits; a killed run's folder by the next run of the checkout", () => {
    const deadPid = spawnSync('true').pid;
    const orphan = join(CHECKOUT_DIR, `run-${deadPid}-orphan`);
    mkdirSync(join(orphan, 'synth-x'), { recursive: true });
    const out = execFileSync(
      process.execPath,
      ['--import', 'tsx', '-e', "import('./test/rehearsal/paths.ts').then((p) => { p.runTemp('x-'); console.log(p.runRoot()); })"],
      { cwd: join(import.meta.dirname, '..'), env: { ...process.env, EFFITAG_REHEARSAL_KEEP: '' } },
    )
      .toString()
      .trim()
      .split('\n')
      .at(-1)!;
    assert.ok(out.startsWith(CHECKOUT_DIR), out);
    assert.equal(existsSync(out), false);
    assert.equal(existsSync(orphan), false, "the dead run's folder was removed");
    assert.ok(existsSync(root), "a live run's folder (this one) is kept");
  });
});

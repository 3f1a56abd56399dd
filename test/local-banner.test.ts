/**
 * `effitag local` on ports and a data directory of one's own (two stacks on one machine, or a port
 * taken): the `export` line its banner prints must be all another shell needs for the `npx effitag`
 * lines printed under it. It used to name neither the ports (`show` then said `connect ECONNREFUSED
 * 127.0.0.1:4568`) nor, when the stack's own shell had EFFITAG_DATA_DIR set, the data directory.
 */
import assert from 'node:assert/strict';
import { execFile, type ChildProcess } from 'node:child_process';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { after, describe, it } from 'node:test';
import { freePort, spawnEffitagLocal } from './support/effitag-local.ts';
import { randomArtifact, tempDir } from './support/fixtures.ts';

describe("effitag local's banner on ports of one's own", () => {
  const children: ChildProcess[] = [];
  after(() => {
    for (const c of children) c.kill('SIGKILL');
  });

  it('its export line alone lets another shell run the printed `npx effitag show`', async () => {
    const dir = await tempDir();
    await randomArtifact(join(dir, 'weights', 'b0'), 'b0');
    const ports = { s3: await freePort(), sqs: await freePort(), dynamodb: await freePort(), s3vectors: await freePort() };
    const data = join(dir, 'my data');
    // The stack's shell has the data directory in its environment; the user's next shell does not.
    const child = await spawnEffitagLocal(
      [
        '--weights',
        join(dir, 'weights'),
        '--s3-port',
        String(ports.s3),
        '--sqs-port',
        String(ports.sqs),
        '--dynamodb-port',
        String(ports.dynamodb),
        '--s3vectors-port',
        String(ports.s3vectors),
        '--no-gallery',
        '--no-workers',
        '--log-level',
        'warn',
      ],
      { env: { EFFITAG_DATA_DIR: data }, children },
    );
    const out = child.output();
    const exportLine = out.split('\n').find((l) => l.trim().startsWith('export AWS_ACCESS_KEY_ID='));
    assert.ok(exportLine, out);
    const show = out.split('\n').find((l) => l.trim().startsWith('npx effitag show '));
    assert.ok(show, out);
    // Another shell: none of the stack's EFFITAG_* settings, only what the banner says to paste.
    const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('EFFITAG_') && !k.startsWith('AWS_')));
    const r = await promisify(execFile)('bash', ['-c', `${exportLine.trim()} && cd ${JSON.stringify(process.cwd())} && ${show.trim()}`], {
      env,
    }).then(
      (x) => ({ code: 0, ...x }),
      (e: { code: number; stdout: string; stderr: string }) => e,
    );
    // The object does not exist: the command reached this stack, signed with its credentials.
    assert.match(r.stderr, /no such object s3:\/\/effitag-local\/photos\/photo\.jpg/, r.stderr + r.stdout);
  });
});

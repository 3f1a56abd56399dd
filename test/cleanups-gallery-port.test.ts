/**
 * `effitag gallery` beside `npm start`: both defaulted to 127.0.0.1:4570, so the second to start (a
 * deployed stack's gallery while the embedded stack runs, or the other way round) failed with Node's
 * "listen EADDRINUSE: address already in use 127.0.0.1:4570". Now `effitag gallery` has a default
 * of its own, and a taken port is one line that says what to do.
 */
import assert from 'node:assert/strict';
import { createServer, type Server } from 'node:net';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import type { Command } from 'commander';
import { buildProgram } from '../cli/program.ts';
import { GALLERY_COMMAND_PORT, galleryListenProblem } from '../cli/commands/gallery.ts';
import { ensureEmbeddedCredentials } from '../pipeline/aws/local-credentials.ts';
import { EMBEDDED_PORTS } from '../pipeline/aws/wiring.ts';
import { runEffitag } from './support/effitag-local.ts';
import { tempDir } from './support/fixtures.ts';
import { standInHandle } from './support/local-stack.ts';

/** The default of a command's option, as commander has it (the environment read when the program is built). */
function defaultOf(command: string, flag: string): unknown {
  const saved = process.env.EFFITAG_GALLERY_PORT;
  delete process.env.EFFITAG_GALLERY_PORT;
  try {
    const sub = buildProgram().commands.find((c: Command) => c.name() === command);
    const option = sub?.options.find((o) => o.long === flag);
    assert.ok(option, `${command} ${flag}`);
    return option.defaultValue;
  } finally {
    if (saved !== undefined) process.env.EFFITAG_GALLERY_PORT = saved;
  }
}

describe('`effitag gallery` and `npm start` (effitag local) at once', () => {
  const servers: Server[] = [];
  after(() => {
    for (const s of servers) s.close();
  });

  it("their default gallery ports differ: neither takes the other's", () => {
    assert.equal(defaultOf('local', '--gallery-port'), EMBEDDED_PORTS.gallery);
    assert.equal(defaultOf('gallery', '--port'), GALLERY_COMMAND_PORT);
    assert.notEqual(GALLERY_COMMAND_PORT, EMBEDDED_PORTS.gallery);
    // Nor any other port the embedded stack takes by default.
    assert.ok(!Object.values(EMBEDDED_PORTS).includes(GALLERY_COMMAND_PORT as never), JSON.stringify(EMBEDDED_PORTS));
  });

  it('a taken --port: one line naming it and the fix, exit 1 (it was "listen EADDRINUSE: address already in use")', async () => {
    const taken = createServer();
    servers.push(taken);
    await new Promise<void>((r) => taken.listen(0, '127.0.0.1', r));
    const port = (taken.address() as { port: number }).port;
    const dir = await tempDir('effitag-cleanups-gallery-');
    const data = join(dir, 'data');
    // A stack handle the gallery can open without reaching anything: it fails at its own listen.
    standInHandle(data, { credentials: ensureEmbeddedCredentials(data), buckets: ['effitag-local'] });
    const r = await runEffitag(['gallery', '--port', String(port)], { EFFITAG_DATA_DIR: data });
    assert.equal(r.code, 1, r.stdout);
    assert.equal(r.stderr, `effitag: port ${port} on 127.0.0.1 is in use (another effitag gallery?): pass --port N (0: any free port)\n`);
  });

  it("npm start's own port taken (EFFITAG_GALLERY_PORT=4570, or --port 4570): the line points at the gallery already there", () => {
    const inUse = Object.assign(new Error(`listen EADDRINUSE: address already in use 127.0.0.1:${EMBEDDED_PORTS.gallery}`), {
      code: 'EADDRINUSE',
    });
    assert.equal(
      galleryListenProblem(inUse, EMBEDDED_PORTS.gallery).message,
      `port ${EMBEDDED_PORTS.gallery} on 127.0.0.1 is in use (npm start serves the embedded stack's gallery there by default: ` +
        `http://127.0.0.1:${EMBEDDED_PORTS.gallery}/): for another gallery, pass --port N (0: any free port)`,
    );
    const other = Object.assign(new Error('listen EADDRNOTAVAIL'), { code: 'EADDRNOTAVAIL' });
    assert.equal(galleryListenProblem(other, 1234), other, 'any other failure as it was');
  });
});

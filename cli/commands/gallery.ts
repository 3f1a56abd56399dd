/** `effitag gallery`: the tag gallery in a browser, for the embedded stack or a deployed one. */
import { parseS3Url } from '../../base/s3-url.ts';
import type { Command } from 'commander';
import { startGallery } from '../../gallery/server.ts';
import { EMBEDDED_PORTS } from '../../pipeline/aws/wiring.ts';
import { openCommandStack, stackVectors } from '../stack.ts';
import { parseNumber, printable } from '../format.ts';
import { stackCalibrations } from './dupes.ts';

interface GalleryCli {
  port: number;
}

/**
 * `effitag gallery`'s default port: not the embedded stack's gallery's (EMBEDDED_PORTS.gallery, 4570),
 * so a gallery of a deployed stack (or a second one of the embedded stack) runs beside `npm start`,
 * whichever starts first. With the same default, the second to start failed on a taken port.
 */
export const GALLERY_COMMAND_PORT = 4572;

export function registerGalleryCommand(program: Command): void {
  program
    .command('gallery')
    .description('browse and search tagged images in a browser (served on loopback, with your credentials)')
    .argument('[bucket]', "the bucket (s3://name or name; default: the stack's)")
    .option(
      '--port <port>',
      `port on 127.0.0.1 (env EFFITAG_GALLERY_PORT; 0: any free port; npm start serves its own gallery on ${EMBEDDED_PORTS.gallery})`,
      parseNumber('--port', 0, 65535, true),
      Number(process.env.EFFITAG_GALLERY_PORT ?? GALLERY_COMMAND_PORT),
    )
    .action(async (bucketArg: string | undefined, opts: GalleryCli, command: Command) => {
      const conn = await openCommandStack(command);
      const named = bucketArg ?? conn.handle.buckets[0] ?? '';
      const bucket = named.startsWith('s3://') ? parseS3Url(named).bucket : named;
      if (!bucket) throw new Error(`which bucket? stack ${conn.handle.name} names none: pass it (effitag gallery s3://BUCKET)`);
      const gallery = await startGallery(
        {
          bucket,
          index: conn.requireIndex(),
          store: conn.store,
          s3: conn.s3,
          queues: async () => conn.sources,
          vectors: stackVectors(conn),
          // The near thresholds `effitag dupes` reads (beside the stack's weights), so Duplicates groups as it does.
          calibrations: stackCalibrations(conn),
        },
        { port: opts.port },
      ).catch((err: NodeJS.ErrnoException) => {
        conn.close();
        throw galleryListenProblem(err, opts.port);
      });
      process.stdout.write(`EffiTag gallery for s3://${printable(bucket)}: ${gallery.url}  (Ctrl-C stops it)\n`);
      await new Promise<void>((resolve) => {
        process.once('SIGINT', resolve);
        process.once('SIGTERM', resolve);
      });
      await gallery.close();
      conn.close();
    });
}

/** The port in use (or not ours to take) as one line with its fix, not Node's "listen EADDRINUSE: …". */
export function galleryListenProblem(err: NodeJS.ErrnoException, port: number): Error {
  const fix = 'pass --port N (0: any free port)';
  const where = `port ${port} on 127.0.0.1`;
  if (err.code === 'EADDRINUSE')
    return new Error(
      port === EMBEDDED_PORTS.gallery
        ? `${where} is in use (npm start serves the embedded stack's gallery there by default: http://127.0.0.1:${port}/): for another gallery, ${fix}`
        : `${where} is in use (another effitag gallery?): ${fix}`,
      { cause: err },
    );
  if (err.code === 'EACCES') return new Error(`${where} may not be opened by this user (below 1024?): ${fix}`, { cause: err });
  return err;
}

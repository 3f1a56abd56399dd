/** `effitag gallery`: the tag gallery in a browser, for the embedded stack or a deployed one. */
import { parseS3Url } from '../../base/s3-url.ts';
import type { Command } from 'commander';
import { startGallery } from '../../gallery/server.ts';
import { EMBEDDED_PORTS } from '../../pipeline/aws/wiring.ts';
import { openCommandStack, stackVectors } from '../stack.ts';
import { parseNumber, printable } from '../format.ts';

interface GalleryCli {
  port: number;
}

export function registerGalleryCommand(program: Command): void {
  program
    .command('gallery')
    .description('browse and search tagged images in a browser (served on loopback, with your credentials)')
    .argument('[bucket]', "the bucket (s3://name or name; default: the stack's)")
    .option(
      '--port <port>',
      'port on 127.0.0.1 (env EFFITAG_GALLERY_PORT)',
      parseNumber('--port', 0, 65535, true),
      Number(process.env.EFFITAG_GALLERY_PORT ?? EMBEDDED_PORTS.gallery),
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
        },
        { port: opts.port },
      );
      process.stdout.write(`EffiTag gallery for s3://${printable(bucket)}: ${gallery.url}  (Ctrl-C stops it)\n`);
      await new Promise<void>((resolve) => {
        process.once('SIGINT', resolve);
        process.once('SIGTERM', resolve);
      });
      await gallery.close();
      conn.close();
    });
}

/** `effitag gallery`: the tag gallery in a browser, for the embedded stack or a deployed one. */
import type { Command } from 'commander';
import { startGallery } from '../../gallery/server.ts';
import { connect, EMBEDDED_PORTS, embeddedEndpoints, pipelineQueues, placeFromFlags, tagIndex } from '../../pipeline/aws/wiring.ts';
import { parseNumber, printable } from '../format.ts';

interface GalleryCli {
  port: number;
  aws?: boolean;
  table?: string;
  queueUrls?: string;
  intakeUrl?: string;
  endpoint: string;
  sqsEndpoint: string;
  dynamodbEndpoint: string;
}

export function registerGalleryCommand(program: Command): void {
  program
    .command('gallery')
    .description('browse and search tagged images in a browser (served on loopback, with your credentials)')
    .argument('[bucket]', 'the bucket (s3://name or name)', 'effitag-local')
    .option(
      '--port <port>',
      'port on 127.0.0.1 (env EFFITAG_GALLERY_PORT)',
      parseNumber('--port', 0, 65535, true),
      Number(process.env.EFFITAG_GALLERY_PORT ?? EMBEDDED_PORTS.gallery),
    )
    .option('--aws', 'a deployed stack (credentials from the environment) instead of the embedded stack')
    .option('--table <name>', 'the stack output IndexTable (AWS; env EFFITAG_INDEX_TABLE)')
    .option('--queue-urls <json>', 'the stack output QueueUrls, for the status view (AWS; env EFFITAG_QUEUE_URLS)')
    .option('--intake-url <url>', 'the stack output IntakeQueueUrl (AWS; env EFFITAG_INTAKE_URL)')
    .option('--endpoint <url>', 'the embedded stack S3 endpoint', embeddedEndpoints().s3Endpoint)
    .option('--sqs-endpoint <url>', 'the embedded stack SQS endpoint', embeddedEndpoints().sqsEndpoint)
    .option('--dynamodb-endpoint <url>', 'the embedded stack DynamoDB endpoint', embeddedEndpoints().dynamoEndpoint)
    .action(async (bucketArg: string, opts: GalleryCli) => {
      const bucket = bucketArg.replace(/^s3:\/\//, '').replace(/\/.*$/, '');
      const conn = connect(placeFromFlags({ ...opts, dynamoEndpoint: opts.dynamodbEndpoint }));
      const gallery = await startGallery(
        {
          bucket,
          index: tagIndex(conn, opts.table),
          store: conn.store,
          s3: conn.s3,
          queues: () => pipelineQueues(conn, { queueUrls: opts.queueUrls, intakeUrl: opts.intakeUrl }),
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

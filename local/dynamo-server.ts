/**
 * The embedded DynamoDB: dynalite (the DynamoDB API over HTTP, LevelDB on disk) for the tag index,
 * on loopback by default like the S3 and SQS stand-ins. Tables are created at once (no CREATING wait).
 */
import dynalite from 'dynalite';
import { clientEndpoint } from './s3-server.ts';

export interface RunningDynamo {
  endpoint: string;
  port: number;
  close(): Promise<void>;
}

export async function startDynamoServer(options: { host?: string; port?: number; directory?: string }): Promise<RunningDynamo> {
  const host = options.host ?? '127.0.0.1';
  // No directory: in memory (tests); else on disk and kept across restarts.
  const server = dynalite({ path: options.directory, createTableMs: 0, deleteTableMs: 0, updateTableMs: 0 });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(options.port ?? 0, host, () => resolve());
  });
  const port = (server.address() as { port: number }).port;
  return {
    endpoint: clientEndpoint(host, port),
    port,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections?.();
      }),
  };
}

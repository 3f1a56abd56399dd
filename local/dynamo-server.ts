/**
 * The embedded DynamoDB: dynalite (the DynamoDB API over HTTP, LevelDB on disk) for the tag index,
 * on loopback by default like the S3 and SQS stand-ins. Tables are created at once (no CREATING wait).
 */
import dynalite from 'dynalite';
import type { EmbeddedCredentials } from '../pipeline/aws/local-credentials.ts';
import { listenGuarded } from './request-guard.ts';
import { clientEndpoint } from './s3-server.ts';

export interface RunningDynamo {
  endpoint: string;
  port: number;
  /** Also accept requests relayed by a loopback proxy on this port (they carry, and signed, its Host). */
  trustProxyPort(port: number): void;
  close(): Promise<void>;
}

export async function startDynamoServer(options: {
  host?: string;
  port?: number;
  directory?: string;
  /** The only credentials it accepts requests signed with (local/request-guard.ts); dynalite checks none. */
  credentials: EmbeddedCredentials;
  /** Pages that may call it from a browser (the stack's gallery); any other Origin is refused. */
  trustedOrigins?: readonly string[];
}): Promise<RunningDynamo> {
  const host = options.host ?? '127.0.0.1';
  // No directory: in memory (tests); else on disk and kept across restarts.
  const server = dynalite({ path: options.directory, createTableMs: 0, deleteTableMs: 0, updateTableMs: 0 });
  const { guard, port } = await listenGuarded(server, 'dynamodb', options);
  return {
    endpoint: clientEndpoint(host, port),
    port,
    trustProxyPort: (p) => guard.trustProxyPort(p),
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections?.();
      }),
  };
}

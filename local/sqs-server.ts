/**
 * The embedded SQS: fauxqs (SQS over the JSON protocol, FIFO deduplication, DLQ redrive) listening
 * on the address it is given, loopback by default. fauxqs' own `startFauxqs` always listens on
 * 0.0.0.0 whatever host it is told, which would let anyone on the network read and inject queue
 * messages; its `buildApp` lets us choose.
 */
import { CreateQueueCommand, GetQueueAttributesCommand } from '@aws-sdk/client-sqs';
import { buildApp } from 'fauxqs';
import { sqsClient } from '../pipeline/aws/clients.ts';
import type { LocalCredentials } from '../pipeline/aws/local-credentials.ts';
import { guardFastify, RequestGuard } from './request-guard.ts';
import { clientEndpoint } from './s3-server.ts';

export interface RunningSqs {
  /** Where clients send requests (loopback when listening on every address). */
  endpoint: string;
  port: number;
  /** Also accept requests relayed by a loopback proxy on this port (they carry, and signed, its Host). */
  trustProxyPort(port: number): void;
  createQueue(name: string, attributes?: Record<string, string>): Promise<{ url: string; arn: string }>;
  close(): Promise<void>;
}

export async function startSqsServer(options: {
  host?: string;
  port?: number;
  /** The only credentials it accepts requests signed with (local/request-guard.ts); its own client signs with them. */
  credentials: LocalCredentials;
  /** Pages that may call it from a browser (the stack's gallery); any other Origin is refused. */
  trustedOrigins?: readonly string[];
}): Promise<RunningSqs> {
  const host = options.host ?? '127.0.0.1';
  const app = buildApp({ logger: false });
  // Before any route: Host, Origin and signature (fauxqs checks none; it also serves an unsigned queue inspector).
  const guard = new RequestGuard({
    service: 'sqs',
    credentials: options.credentials,
    listenHost: options.host,
    trustedOrigins: options.trustedOrigins,
  });
  guardFastify(app as unknown as Parameters<typeof guardFastify>[0], guard);
  await app.listen({ port: options.port ?? 0, host });
  const port = (app.server.address() as { port: number }).port;
  guard.ports.add(port);
  const endpoint = clientEndpoint(host, port);
  const sqs = sqsClient({ sqsEndpoint: endpoint, credentials: options.credentials });
  return {
    endpoint,
    port,
    trustProxyPort: (p) => guard.trustProxyPort(p),
    async createQueue(name, attributes) {
      const url = (await sqs.send(new CreateQueueCommand({ QueueName: name, Attributes: attributes }))).QueueUrl!;
      const arn = (await sqs.send(new GetQueueAttributesCommand({ QueueUrl: url, AttributeNames: ['QueueArn'] }))).Attributes!.QueueArn!;
      return { url, arn };
    },
    async close() {
      sqs.destroy();
      await app.close();
    },
  };
}

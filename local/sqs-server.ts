/**
 * The embedded SQS: fauxqs (SQS over the JSON protocol, FIFO deduplication, DLQ redrive) listening
 * on the address it is given, loopback by default. fauxqs' own `startFauxqs` always listens on
 * 0.0.0.0 whatever host it is told, which would let anyone on the network read and inject queue
 * messages; its `buildApp` lets us choose.
 */
import { CreateQueueCommand, GetQueueAttributesCommand } from '@aws-sdk/client-sqs';
import { buildApp } from 'fauxqs';
import { sqsClient } from '../pipeline/aws/clients.ts';
import { clientEndpoint } from './s3-server.ts';

export interface RunningSqs {
  /** Where clients send requests (loopback when listening on every address). */
  endpoint: string;
  port: number;
  createQueue(name: string, attributes?: Record<string, string>): Promise<{ url: string; arn: string }>;
  close(): Promise<void>;
}

export async function startSqsServer(options: {
  host?: string;
  port?: number;
  credentials: { accessKeyId: string; secretAccessKey: string };
}): Promise<RunningSqs> {
  const host = options.host ?? '127.0.0.1';
  const app = buildApp({ logger: false });
  await app.listen({ port: options.port ?? 0, host });
  const port = (app.server.address() as { port: number }).port;
  const endpoint = clientEndpoint(host, port);
  const sqs = sqsClient({ sqsEndpoint: endpoint, credentials: options.credentials });
  return {
    endpoint,
    port,
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

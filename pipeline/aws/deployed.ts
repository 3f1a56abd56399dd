/** What every deployed entry point (Lambda handlers, GPU container) wires from the environment. */
import { s3Client, sqsClient } from './clients.ts';
import { S3Store } from './s3-store.ts';
import { SqsQueue } from './sqs-queue.ts';
import { runtimeConfig, type RuntimeConfig } from '../runtime-config.ts';

export interface Deployed {
  config: RuntimeConfig;
  s3: ReturnType<typeof s3Client>;
  store: S3Store;
  /** Task queue of each tier. */
  queues: Record<string, SqsQueue>;
}

export function deployed(env: NodeJS.ProcessEnv = process.env): Deployed {
  const config = runtimeConfig(env);
  const s3 = s3Client();
  const sqs = sqsClient();
  const queues = Object.fromEntries(Object.entries(config.queueUrls).map(([tier, url]) => [tier, new SqsQueue(sqs, url)]));
  return { config, s3, store: new S3Store(s3), queues };
}

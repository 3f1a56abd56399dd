/**
 * The embedded SQS: fauxqs (SQS over the JSON protocol, FIFO deduplication, DLQ redrive) listening
 * on the address it is given, loopback by default. fauxqs' own `startFauxqs` always listens on
 * 0.0.0.0 whatever host it is told, which would let anyone on the network read and inject queue
 * messages; its `buildApp` lets us choose.
 *
 * fauxqs keeps messages in memory. The dead-letter queues are what must outlive a restart (they are
 * the record of what failed for good, and why): `persistDeadLetters` saves their contents to a file
 * whenever they change, before the request that changed them is answered, and puts them back at
 * start. The other queues need no copy: the catch-up journal (local/catch-up.ts) re-creates their work.
 */
import { CreateQueueCommand, GetQueueAttributesCommand, GetQueueUrlCommand, SendMessageBatchCommand } from '@aws-sdk/client-sqs';
import { existsSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { buildApp } from 'fauxqs';
import { sqsClient } from '../pipeline/aws/clients.ts';
import type { EmbeddedCredentials } from '../pipeline/aws/local-credentials.ts';
import { guardFastify, RequestGuard } from './request-guard.ts';
import { clientEndpoint } from './s3-server.ts';

export interface RunningSqs {
  /** Where clients send requests (loopback when listening on every address). */
  endpoint: string;
  port: number;
  /** Also accept requests relayed by a loopback proxy on this port (they carry, and signed, its Host). */
  trustProxyPort(port: number): void;
  createQueue(name: string, attributes?: Record<string, string>): Promise<{ url: string; arn: string }>;
  /**
   * Put back the messages `path` holds for these (existing) queues, then keep `path` up to date with
   * their contents: rewritten whole (then renamed into place) before any request that changed them
   * is answered. Resolves with the number of messages restored.
   */
  persistDeadLetters(path: string, names: readonly string[]): Promise<number>;
  /** The bodies of the messages a queue holds now (ready, delayed and in flight), without receiving them. */
  peek(name: string): string[];
  close(): Promise<void>;
}

/** A dead letter as saved: enough to send it again with its reason (message attributes) and FIFO group. */
interface SavedMessage {
  body: string;
  attributes?: Record<string, { DataType: string; StringValue?: string; BinaryValue?: string }>;
  groupId?: string;
  deduplicationId?: string;
  sentAt: number;
}

/** The part of fauxqs' queue model used here (dist/sqs/sqsStore.js). */
interface FauxqsQueue {
  enqueue(msg: unknown): void;
  deleteMessage(receiptHandle: string): unknown;
  purge(): void;
  inspectMessages(): {
    ready: FauxqsMessage[];
    delayed: FauxqsMessage[];
    inflight: { message: FauxqsMessage }[];
  };
}
interface FauxqsMessage {
  body: string;
  messageAttributes: SavedMessage['attributes'];
  messageGroupId?: string;
  messageDeduplicationId?: string;
  sentTimestamp: number;
}

/**
 * fauxqs' stores, made here so the queues can be reached in process (buildApp takes them; the
 * package exports no path to their classes, so they are loaded beside its entry point).
 */
async function fauxqsStores() {
  const base = import.meta.resolve('fauxqs');
  const load = (path: string) => import(new URL(path, base).href);
  const [{ SqsStore }, { SnsStore }, { S3Store }] = await Promise.all([
    load('./sqs/sqsStore.js'),
    load('./sns/snsStore.js'),
    load('./s3/s3Store.js'),
  ]);
  return { sqsStore: new SqsStore(), snsStore: new SnsStore(), s3Store: new S3Store() };
}

export async function startSqsServer(options: {
  host?: string;
  port?: number;
  /** The only credentials it accepts requests signed with (local/request-guard.ts); its own client signs with them. */
  credentials: EmbeddedCredentials;
  /** Pages that may call it from a browser (the stack's gallery); any other Origin is refused. */
  trustedOrigins?: readonly string[];
}): Promise<RunningSqs> {
  const host = options.host ?? '127.0.0.1';
  const stores = await fauxqsStores();
  const sqsStore = stores.sqsStore as { getQueueByName(name: string): FauxqsQueue | undefined };
  const app = buildApp({ logger: false, stores });
  // Dead-letter persistence (persistDeadLetters): saved before the answer of a request that changed them.
  // `kept`: what the file holds for queues this run does not have (a tier since removed): kept, not dropped.
  let persisted: { path: string; names: readonly string[]; kept: Record<string, SavedMessage[]>; dirty: boolean } | undefined;
  const save = () => {
    if (!persisted?.dirty) return;
    persisted.dirty = false;
    const queues: Record<string, SavedMessage[]> = { ...persisted.kept };
    for (const name of persisted.names) {
      const m = sqsStore.getQueueByName(name)?.inspectMessages();
      if (!m) continue;
      queues[name] = [...m.ready, ...m.delayed, ...m.inflight.map((i) => i.message)]
        .sort((a, b) => a.sentTimestamp - b.sentTimestamp)
        .map((x) => ({
          body: x.body,
          attributes: x.messageAttributes && Object.keys(x.messageAttributes).length ? x.messageAttributes : undefined,
          groupId: x.messageGroupId,
          deduplicationId: x.messageDeduplicationId,
          sentAt: x.sentTimestamp,
        }));
    }
    const tmp = `${persisted.path}.${process.pid}.tmp`;
    writeFileSync(tmp, `${JSON.stringify({ version: 1, queues })}\n`);
    renameSync(tmp, persisted.path);
  };
  (app as unknown as { addHook(name: 'onSend', hook: (req: unknown, reply: unknown, payload: unknown) => Promise<unknown>): void }).addHook(
    'onSend',
    async (_req, _reply, payload) => {
      save();
      return payload;
    },
  );
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
    peek(name) {
      const m = sqsStore.getQueueByName(name)?.inspectMessages();
      return m ? [...m.ready, ...m.delayed, ...m.inflight.map((i) => i.message)].map((x) => x.body) : [];
    },
    async persistDeadLetters(path, names) {
      const saved: Record<string, SavedMessage[]> = existsSync(path) ? (JSON.parse(readFileSync(path, 'utf8')).queues ?? {}) : {};
      let restored = 0;
      for (const name of names) {
        const messages = saved[name] ?? [];
        const url = (await sqs.send(new GetQueueUrlCommand({ QueueName: name }))).QueueUrl!;
        const fifo = name.endsWith('.fifo');
        for (let i = 0; i < messages.length; i += 10) {
          const out = await sqs.send(
            new SendMessageBatchCommand({
              QueueUrl: url,
              Entries: messages.slice(i, i + 10).map((m, j) => ({
                Id: String(j),
                MessageBody: m.body,
                MessageAttributes: m.attributes
                  ? Object.fromEntries(
                      Object.entries(m.attributes).map(([k, v]) => [
                        k,
                        {
                          DataType: v.DataType,
                          StringValue: v.StringValue,
                          BinaryValue: v.BinaryValue ? Buffer.from(v.BinaryValue, 'base64') : undefined,
                        },
                      ]),
                    )
                  : undefined,
                ...(fifo
                  ? { MessageGroupId: m.groupId ?? 'restored', MessageDeduplicationId: m.deduplicationId ?? `restored-${i + j}` }
                  : {}),
              })),
            }),
          );
          if (out.Failed?.length) throw new Error(`restoring ${name}: ${out.Failed.map((f) => f.Message).join('; ')}`);
          restored += out.Successful?.length ?? 0;
        }
      }
      const kept = Object.fromEntries(Object.entries(saved).filter(([name]) => !names.includes(name)));
      persisted = { path, names, kept, dirty: true };
      for (const name of names) {
        const q = sqsStore.getQueueByName(name);
        if (!q) continue;
        // Every way a message enters or leaves a queue in fauxqs (a send, a redrive, a delete, a purge).
        for (const method of ['enqueue', 'deleteMessage', 'purge'] as const) {
          const original = q[method].bind(q) as (...args: unknown[]) => unknown;
          (q as unknown as Record<string, unknown>)[method] = (...args: unknown[]) => {
            if (persisted) persisted.dirty = true;
            return original(...args);
          };
        }
      }
      save();
      return restored;
    },
    async close() {
      sqs.destroy();
      await app.close();
      save();
    },
  };
}

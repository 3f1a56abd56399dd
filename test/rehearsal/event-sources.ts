/**
 * Lambda's SQS event source mappings, as AWS runs them: poll the template's source queue with the
 * function's own role, hand the function batches in the exact SQS event shape (FIFO attributes
 * included), delete what succeeded, and leave what `batchItemFailures` names for another receive.
 * The poller's calls are audited under the function's role, since on AWS the mapping uses it.
 */
import { ChangeMessageVisibilityCommand, DeleteMessageBatchCommand, ReceiveMessageCommand, type Message } from '@aws-sdk/client-sqs';
import { sqsClient } from '../../pipeline/aws/clients.ts';
import { auditCalls } from '../../pipeline/aws/audit.ts';
import type { LambdaFunction } from './lambda.ts';
import { REGION, type Assembly } from './template.ts';
import { CREDENTIALS, type World } from './world.ts';

export interface SqsRecord {
  messageId: string;
  receiptHandle: string;
  body: string;
  attributes: Record<string, string>;
  messageAttributes: Record<string, unknown>;
  md5OfBody: string;
  eventSource: 'aws:sqs';
  eventSourceARN: string;
  awsRegion: string;
}

export function sqsEvent(messages: readonly Message[], queueArn: string): { Records: SqsRecord[] } {
  return {
    Records: messages.map((m) => ({
      messageId: m.MessageId!,
      receiptHandle: m.ReceiptHandle!,
      body: m.Body ?? '',
      attributes: m.Attributes ?? {},
      messageAttributes: {},
      md5OfBody: m.MD5OfBody ?? '',
      eventSource: 'aws:sqs',
      eventSourceARN: queueArn,
      awsRegion: REGION,
    })),
  };
}

export interface EventSource {
  functionId: string;
  queueId: string;
  /** Poll once: at most one batch. Returns how many messages were handed to the function. */
  pollOnce(): Promise<number>;
  /** Per invocation: records, failures, and the attribute names its records carried (FIFO ones included). */
  invocations: { records: number; failures: number; error?: string; attributes: string[] }[];
  stop(): void;
}

export function eventSourcesFor(assembly: Assembly, world: World, fn: LambdaFunction): EventSource[] {
  return assembly
    .ofType('AWS::Lambda::EventSourceMapping')
    .filter(([, r]) => r.Properties!.FunctionName.Ref === fn.logicalId)
    .map(([, r]) => {
      const p = r.Properties!;
      const queueId = p.EventSourceArn['Fn::GetAtt'][0] as string;
      const queue = world.queues.get(queueId)!;
      const sqs = auditCalls(sqsClient({ sqsEndpoint: world.sqsEndpoint, credentials: CREDENTIALS }), 'sqs', fn.auditLog);
      const partial = (p.FunctionResponseTypes ?? []).includes('ReportBatchItemFailures');
      const source: EventSource = {
        functionId: fn.logicalId,
        queueId,
        invocations: [],
        async pollOnce() {
          const out = await sqs.send(
            new ReceiveMessageCommand({
              QueueUrl: queue.url,
              MaxNumberOfMessages: Math.min(10, p.BatchSize ?? 10),
              WaitTimeSeconds: 1,
              MessageSystemAttributeNames: ['All'],
            }),
          );
          const messages = out.Messages ?? [];
          if (!messages.length) return 0;
          let failed = new Set<string>();
          let error: string | undefined;
          try {
            const result = await fn.invoke<{ batchItemFailures?: { itemIdentifier: string }[] } | null>(sqsEvent(messages, queue.arn));
            if (partial) failed = new Set((result?.batchItemFailures ?? []).map((f) => f.itemIdentifier));
          } catch (err) {
            // A thrown handler fails the whole batch: every message comes back.
            error = (err as Error).message;
            failed = new Set(messages.map((m) => m.MessageId!));
          }
          const done = messages.filter((m) => !failed.has(m.MessageId!));
          if (done.length) {
            await sqs.send(
              new DeleteMessageBatchCommand({
                QueueUrl: queue.url,
                Entries: done.map((m, i) => ({ Id: String(i), ReceiptHandle: m.ReceiptHandle! })),
              }),
            );
          }
          // On AWS a failed message waits out the visibility timeout; here it comes back after 1 s.
          for (const m of messages.filter((x) => failed.has(x.MessageId!))) {
            await sqs.send(
              new ChangeMessageVisibilityCommand({ QueueUrl: queue.url, ReceiptHandle: m.ReceiptHandle!, VisibilityTimeout: 1 }),
            );
          }
          source.invocations.push({
            records: messages.length,
            failures: failed.size,
            error,
            attributes: Object.keys(messages[0].Attributes ?? {}).sort(),
          });
          return messages.length;
        },
        stop: () => sqs.destroy(),
      };
      return source;
    });
}

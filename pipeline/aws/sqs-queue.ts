/** MessageQueue on @aws-sdk/client-sqs (standard or FIFO queues; real SQS or the embedded stand-in). */
import {
  ChangeMessageVisibilityCommand, DeleteMessageBatchCommand, GetQueueAttributesCommand, ReceiveMessageCommand, SendMessageBatchCommand, SQSClient,
} from '@aws-sdk/client-sqs';
import type { MessageQueue, OutgoingMessage, QueueMessage } from '../ports.ts';

export class SqsQueue implements MessageQueue {
  readonly fifo: boolean;
  constructor(private readonly sqs: SQSClient, readonly url: string, readonly name = url.split('/').pop() ?? url) {
    this.fifo = url.endsWith('.fifo');
  }

  async send(messages: readonly OutgoingMessage[]): Promise<void> {
    for (let i = 0; i < messages.length; i += 10) {
      const chunk = messages.slice(i, i + 10);
      const out = await this.sqs.send(new SendMessageBatchCommand({
        QueueUrl: this.url,
        Entries: chunk.map((m, j) => ({
          Id: String(j), MessageBody: m.body,
          ...(this.fifo ? { MessageDeduplicationId: m.deduplicationId, MessageGroupId: m.groupId ?? 'default' } : {}),
        })),
      }));
      if (out.Failed?.length) {
        throw new Error(`SQS ${this.name}: ${out.Failed.length} message(s) not sent: ${out.Failed.map((f) => `${f.Code} ${f.Message ?? ''}`).join('; ')}`);
      }
    }
  }

  async receive(options: { max: number; waitSeconds: number; visibilitySeconds?: number; signal?: AbortSignal }): Promise<QueueMessage[]> {
    const out = await this.sqs.send(new ReceiveMessageCommand({
      QueueUrl: this.url, MaxNumberOfMessages: Math.min(10, options.max), WaitTimeSeconds: options.waitSeconds,
      VisibilityTimeout: options.visibilitySeconds, MessageSystemAttributeNames: ['ApproximateReceiveCount'],
    }), { abortSignal: options.signal });
    return (out.Messages ?? []).map((m) => ({
      id: m.MessageId!, receipt: m.ReceiptHandle!, body: m.Body ?? '',
      receiveCount: Number(m.Attributes?.ApproximateReceiveCount ?? 1),
    }));
  }

  async delete(messages: readonly QueueMessage[]): Promise<void> {
    for (let i = 0; i < messages.length; i += 10) {
      const chunk = messages.slice(i, i + 10);
      const out = await this.sqs.send(new DeleteMessageBatchCommand({
        QueueUrl: this.url, Entries: chunk.map((m, j) => ({ Id: String(j), ReceiptHandle: m.receipt })),
      }));
      if (out.Failed?.length) throw new Error(`SQS ${this.name}: ${out.Failed.length} delete(s) failed`);
    }
  }

  /** Messages in the queue: visible, in flight and delayed (SQS's approximate counts). */
  async depth(): Promise<number> {
    const out = await this.sqs.send(new GetQueueAttributesCommand({
      QueueUrl: this.url, AttributeNames: ['ApproximateNumberOfMessages', 'ApproximateNumberOfMessagesNotVisible', 'ApproximateNumberOfMessagesDelayed'],
    }));
    return Object.values(out.Attributes ?? {}).reduce((n, v) => n + Number(v ?? 0), 0);
  }

  async setVisibility(message: QueueMessage, seconds: number): Promise<void> {
    await this.sqs.send(new ChangeMessageVisibilityCommand({ QueueUrl: this.url, ReceiptHandle: message.receipt, VisibilityTimeout: Math.round(seconds) }));
  }
}

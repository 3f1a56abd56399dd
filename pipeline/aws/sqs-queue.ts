/** MessageQueue on @aws-sdk/client-sqs (standard or FIFO queues; real SQS or the embedded stand-in). */
import {
  ChangeMessageVisibilityCommand,
  DeleteMessageBatchCommand,
  GetQueueAttributesCommand,
  GetQueueUrlCommand,
  ReceiveMessageCommand,
  SendMessageBatchCommand,
  type QueueAttributeName,
  type SQSClient,
} from '@aws-sdk/client-sqs';
import type { MessageQueue, OutgoingMessage, QueueDepth, QueueMessage } from '../ports.ts';

export class SqsQueue implements MessageQueue {
  readonly fifo: boolean;
  constructor(
    private readonly sqs: SQSClient,
    readonly url: string,
    readonly name = url.split('/').pop() ?? url,
  ) {
    this.fifo = url.endsWith('.fifo');
  }

  async send(messages: readonly OutgoingMessage[]): Promise<void> {
    for (let i = 0; i < messages.length; i += 10) {
      const chunk = messages.slice(i, i + 10);
      const out = await this.sqs.send(
        new SendMessageBatchCommand({
          QueueUrl: this.url,
          Entries: chunk.map((m, j) => ({
            Id: String(j),
            MessageBody: m.body,
            ...(this.fifo ? { MessageDeduplicationId: m.deduplicationId, MessageGroupId: m.groupId ?? 'default' } : {}),
            ...(m.attributes
              ? {
                  MessageAttributes: Object.fromEntries(
                    Object.entries(m.attributes).map(([k, v]) => [k, { DataType: 'String', StringValue: v }]),
                  ),
                }
              : {}),
          })),
        }),
      );
      if (out.Failed?.length) {
        throw new Error(
          `SQS ${this.name}: ${out.Failed.length} message(s) not sent: ${out.Failed.map((f) => `${f.Code} ${f.Message ?? ''}`).join('; ')}`,
        );
      }
    }
  }

  async receive(options: { max: number; waitSeconds: number; visibilitySeconds?: number; signal?: AbortSignal }): Promise<QueueMessage[]> {
    const out = await this.sqs.send(
      new ReceiveMessageCommand({
        QueueUrl: this.url,
        MaxNumberOfMessages: Math.min(10, options.max),
        WaitTimeSeconds: options.waitSeconds,
        VisibilityTimeout: options.visibilitySeconds,
        MessageAttributeNames: ['All'],
        MessageSystemAttributeNames: ['ApproximateReceiveCount', 'MessageGroupId', 'MessageDeduplicationId'],
      }),
      { abortSignal: options.signal },
    );
    return (out.Messages ?? []).map((m) => ({
      id: m.MessageId!,
      receipt: m.ReceiptHandle!,
      body: m.Body ?? '',
      receiveCount: Number(m.Attributes?.ApproximateReceiveCount ?? 1),
      groupId: m.Attributes?.MessageGroupId,
      deduplicationId: m.Attributes?.MessageDeduplicationId,
      ...(m.MessageAttributes
        ? { attributes: Object.fromEntries(Object.entries(m.MessageAttributes).map(([k, v]) => [k, v.StringValue ?? ''])) }
        : {}),
    }));
  }

  async delete(messages: readonly QueueMessage[]): Promise<void> {
    for (let i = 0; i < messages.length; i += 10) {
      const chunk = messages.slice(i, i + 10);
      const out = await this.sqs.send(
        new DeleteMessageBatchCommand({
          QueueUrl: this.url,
          Entries: chunk.map((m, j) => ({ Id: String(j), ReceiptHandle: m.receipt })),
        }),
      );
      if (out.Failed?.length) throw new Error(`SQS ${this.name}: ${out.Failed.length} delete(s) failed`);
    }
  }

  /**
   * The queue's dead-letter queue and after how many receives SQS moves a message there, from its
   * redrive policy; undefined without one.
   */
  async deadLetterQueue(): Promise<{ queue: SqsQueue; maxReceives: number } | undefined> {
    const out = await this.sqs.send(new GetQueueAttributesCommand({ QueueUrl: this.url, AttributeNames: ['RedrivePolicy'] }));
    if (!out.Attributes?.RedrivePolicy) return undefined;
    const policy = JSON.parse(out.Attributes.RedrivePolicy) as { deadLetterTargetArn: string; maxReceiveCount: number | string };
    const [, , , , account, name] = policy.deadLetterTargetArn.split(':');
    const url = (await this.sqs.send(new GetQueueUrlCommand({ QueueName: name, QueueOwnerAWSAccountId: account }))).QueueUrl!;
    return { queue: new SqsQueue(this.sqs, url, name), maxReceives: Number(policy.maxReceiveCount) };
  }

  /** SQS's approximate counts, one GetQueueAttributes. */
  async depth(): Promise<QueueDepth> {
    const out = await this.sqs.send(
      new GetQueueAttributesCommand({
        QueueUrl: this.url,
        AttributeNames: ['ApproximateNumberOfMessages', 'ApproximateNumberOfMessagesNotVisible', 'ApproximateNumberOfMessagesDelayed'],
      }),
    );
    const count = (name: QueueAttributeName) => Number(out.Attributes?.[name] ?? 0);
    const visible = count('ApproximateNumberOfMessages');
    const inFlight = count('ApproximateNumberOfMessagesNotVisible');
    const delayed = count('ApproximateNumberOfMessagesDelayed');
    return { visible, inFlight, delayed, total: visible + inFlight + delayed };
  }

  async setVisibility(message: QueueMessage, seconds: number): Promise<void> {
    await this.sqs.send(
      new ChangeMessageVisibilityCommand({ QueueUrl: this.url, ReceiptHandle: message.receipt, VisibilityTimeout: Math.round(seconds) }),
    );
  }
}

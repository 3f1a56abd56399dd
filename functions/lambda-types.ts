/** The parts of the Lambda SQS event and partial-batch response the handlers use. */
export interface SQSRecord {
  messageId: string;
  receiptHandle: string;
  body: string;
  attributes: { ApproximateReceiveCount?: string } & Record<string, string | undefined>;
  eventSourceARN?: string;
}
export interface SQSEvent {
  Records: SQSRecord[];
}
export interface SQSBatchResponse {
  batchItemFailures: { itemIdentifier: string }[];
}

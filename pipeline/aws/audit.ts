/**
 * Call audit for the deploy rehearsal: when `EFFITAG_AUDIT_LOG` names a file, every AWS SDK call a
 * client makes is appended to it as one JSON line (service, command, the parameters that name a
 * resource, and the HTTP status it ended with). The rehearsal evaluates each line against the IAM
 * policies of the synthesized template. Off unless the variable is set; the stack never sets it.
 */
import { appendFileSync } from 'node:fs';

export interface AuditedCall {
  service: 's3' | 'sqs' | 'dynamodb' | 's3vectors';
  command: string;
  input: Record<string, string>;
  /** HTTP status of the final attempt (after the SDK's retries); absent when no response came. */
  status?: number;
  error?: string;
}

/** The request parameters that decide which resource an IAM check is made on. */
const RESOURCE_PARAMS = [
  'Bucket',
  'Key',
  'VersionId',
  'CopySource',
  'Prefix',
  'QueueUrl',
  'QueueName',
  'TaggingDirective',
  'TableName',
  // S3 Vectors (pipeline/aws/s3-vectors.ts)
  'vectorBucketName',
  'indexName',
] as const;

interface MiddlewareClient {
  middlewareStack: { add(mw: unknown, options: { step: 'initialize'; name: string }): void };
}

export function auditCalls<C extends MiddlewareClient>(
  client: C,
  service: AuditedCall['service'],
  file = process.env.EFFITAG_AUDIT_LOG,
): C {
  if (!file) return client;
  const write = (call: AuditedCall) => appendFileSync(file, `${JSON.stringify(call)}\n`);
  client.middlewareStack.add(
    (
      next: (args: { input: Record<string, unknown> }) => Promise<{ response: { statusCode?: number } }>,
      context: { commandName?: string },
    ) =>
      async (args: { input: Record<string, unknown> }) => {
        const input = Object.fromEntries(
          RESOURCE_PARAMS.filter((k) => typeof args.input[k] === 'string').map((k) => [k, args.input[k] as string]),
        );
        // BatchWriteItem names its table as the key of RequestItems.
        const batch = args.input.RequestItems;
        if (batch && typeof batch === 'object') input.TableName = Object.keys(batch)[0];
        // S3 Vectors authorizes reading data or metadata (a filter, returnMetadata, returnData) as s3vectors:GetVectors too.
        const a = args.input;
        if (service === 's3vectors' && (a.filter !== undefined || a.returnMetadata === true || a.returnData === true))
          input.readsVectors = 'true';
        const command = (context.commandName ?? 'Unknown').replace(/Command$/, '');
        try {
          const out = await next(args);
          write({ service, command, input, status: out.response?.statusCode });
          return out;
        } catch (err) {
          const e = err as { name?: string; $metadata?: { httpStatusCode?: number } };
          write({ service, command, input, status: e.$metadata?.httpStatusCode, error: e.name ?? String(err) });
          throw err;
        }
      },
    // 'initialize': one line per call, not per retry attempt.
    { step: 'initialize', name: 'effitagAudit' },
  );
  return client;
}

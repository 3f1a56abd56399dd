/**
 * The IAM half of the rehearsal: every AWS call a function or task made (from the SDK audit log) is
 * turned into the IAM request(s) AWS authorizes it with, and evaluated by an IAM policy simulator
 * (@cloud-copilot/iam-simulate) against that principal's policies in the synthesized template and
 * the resource's own policy (bucket or queue policy). A call the template would deny is named with
 * its action, resource and role. The reverse list, granted but never used, is reported too.
 */
import { runSimulation } from '@cloud-copilot/iam-simulate';
import { readFileSync, existsSync } from 'node:fs';
import type { AuditedCall } from '../../pipeline/aws/audit.ts';
import { parseCopySource } from '../../local/s3-server.ts';
import { ACCOUNT, REGION, type Assembly, type Resolver } from './template.ts';

export interface IamRequest {
  action: string;
  resource: string;
  context: Record<string, string>;
  /** Why this request: the call it authorizes. */
  call: string;
}

export interface Verdict extends IamRequest {
  role: string;
  result: 'Allowed' | 'ImplicitlyDenied' | 'ExplicitlyDenied' | 'Unmapped' | 'Error';
  detail?: string;
  count: number;
}

const s3Arn = (bucket: string, key?: string) => `arn:aws:s3:::${bucket}${key === undefined ? '' : `/${key}`}`;

/** The IAM requests S3, SQS and DynamoDB make of one API call. */
export function iamRequestsOf(
  c: AuditedCall,
  queueArnOfUrl: (url: string) => string | undefined,
  tableArnOf: (name: string) => string | undefined = () => undefined,
): IamRequest[] | undefined {
  const i = c.input;
  const call = `${c.service}:${c.command}`;
  if (c.service === 's3vectors') return s3VectorsRequests(c);
  if (c.service === 'dynamodb') {
    // DynamoDB's actions are named after its operations (BatchWriteItem is authorized as itself).
    const table = tableArnOf(i.TableName ?? '');
    return table ? [{ action: `dynamodb:${c.command}`, resource: table, context: {}, call }] : undefined;
  }
  const obj = (action: string, bucket = i.Bucket, key = i.Key, version = i.VersionId) => ({
    action: version ? `${action}Version` : action,
    resource: s3Arn(bucket, key),
    context: {},
    call,
  });
  const list = (prefix: string, bucket = i.Bucket) => ({
    action: 's3:ListBucket',
    resource: s3Arn(bucket),
    context: { 's3:prefix': prefix },
    call,
  });
  if (c.service === 's3') {
    switch (c.command) {
      case 'GetObject':
      case 'HeadObject':
        // S3 answers 404 for a missing key only to a caller that may list the bucket; else 403.
        return [obj('s3:GetObject'), ...(c.status === 404 ? [list(i.Key)] : [])];
      case 'PutObject':
        return [obj('s3:PutObject', i.Bucket, i.Key, undefined)];
      case 'CopyObject': {
        const src = parseCopySource(i.CopySource);
        const tags = (i.TaggingDirective ?? 'COPY') === 'COPY';
        return [
          obj('s3:GetObject', src.bucket, src.key, src.versionId),
          obj('s3:PutObject', i.Bucket, i.Key, undefined),
          ...(tags
            ? [obj('s3:GetObjectTagging', src.bucket, src.key, src.versionId), obj('s3:PutObjectTagging', i.Bucket, i.Key, undefined)]
            : []),
        ];
      }
      case 'GetObjectTagging':
        return [obj('s3:GetObjectTagging')];
      case 'PutObjectTagging':
        return [obj('s3:PutObjectTagging')];
      case 'ListObjects':
      case 'ListObjectsV2':
        return [list(i.Prefix ?? '')];
      default:
        return undefined;
    }
  }
  const queue = queueArnOfUrl(i.QueueUrl ?? i.QueueName ?? '');
  if (!queue) return undefined;
  const action = (
    {
      SendMessage: 'sqs:SendMessage',
      SendMessageBatch: 'sqs:SendMessage',
      ReceiveMessage: 'sqs:ReceiveMessage',
      DeleteMessage: 'sqs:DeleteMessage',
      DeleteMessageBatch: 'sqs:DeleteMessage',
      ChangeMessageVisibility: 'sqs:ChangeMessageVisibility',
      ChangeMessageVisibilityBatch: 'sqs:ChangeMessageVisibility',
      GetQueueAttributes: 'sqs:GetQueueAttributes',
      GetQueueUrl: 'sqs:GetQueueUrl',
    } as Record<string, string>
  )[c.command];
  return action ? [{ action, resource: queue, context: {}, call }] : undefined;
}

/**
 * S3 Vectors: actions are named after operations, on the index ARN (ListIndexes and the bucket
 * operations on the vector bucket's). Reading data or metadata (QueryVectors with a filter or
 * returnMetadata, ListVectors with returnData/returnMetadata) is authorized as GetVectors too.
 */
function s3VectorsRequests(c: AuditedCall): IamRequest[] | undefined {
  const i = c.input;
  const call = `${c.service}:${c.command}`;
  if (!i.vectorBucketName) return undefined;
  const bucketArn = `arn:aws:s3vectors:${REGION}:${ACCOUNT}:bucket/${i.vectorBucketName}`;
  const onBucket = (action: string) => ({ action: `s3vectors:${action}`, resource: bucketArn, context: {}, call });
  const onIndex = (action: string) => ({ action: `s3vectors:${action}`, resource: `${bucketArn}/index/${i.indexName}`, context: {}, call });
  switch (c.command) {
    case 'ListIndexes':
    case 'GetVectorBucket':
    case 'CreateVectorBucket':
      return [onBucket(c.command)];
    case 'QueryVectors':
    case 'ListVectors':
      return i.indexName ? [onIndex(c.command), ...(i.readsVectors ? [onIndex('GetVectors')] : [])] : undefined;
    case 'PutVectors':
    case 'DeleteVectors':
    case 'GetVectors':
    case 'CreateIndex':
    case 'GetIndex':
    case 'DeleteIndex':
      return i.indexName ? [onIndex(c.command)] : undefined;
    default:
      return undefined;
  }
}

export function readAudit(file: string): AuditedCall[] {
  if (!existsSync(file)) return [];
  return readFileSync(file, 'utf8')
    .split('\n')
    .filter(Boolean)
    .map((l) => JSON.parse(l) as AuditedCall);
}

type PolicyDocument = { Version?: string; Statement: Record<string, any>[] };

/** A role's identity policies in the template: its inline policies and every AWS::IAM::Policy attached to it. */
export function identityPolicies(assembly: Assembly, resolver: Resolver, roleId: string): { name: string; policy: PolicyDocument }[] {
  const role = assembly.template.Resources[roleId];
  if (role?.Type !== 'AWS::IAM::Role') throw new Error(`${roleId} is not a role in the template`);
  const inline = ((role.Properties?.Policies ?? []) as { PolicyName: string; PolicyDocument: unknown }[]).map((p) => ({
    name: p.PolicyName,
    policy: resolver.resolve(p.PolicyDocument) as PolicyDocument,
  }));
  const attached = assembly
    .ofType('AWS::IAM::Policy')
    .filter(([, p]) => ((p.Properties?.Roles ?? []) as { Ref?: string }[]).some((r) => r.Ref === roleId))
    .map(([id, p]) => ({ name: id, policy: resolver.resolve(p.Properties!.PolicyDocument) as PolicyDocument }));
  return [...inline, ...attached];
}

/** The bucket or queue policy that governs a resource ARN, if the template has one. */
function resourcePolicy(assembly: Assembly, resolver: Resolver, resource: string): PolicyDocument | undefined {
  if (resource.startsWith('arn:aws:s3:::')) {
    const bucket = resource.slice('arn:aws:s3:::'.length).split('/')[0];
    const found = assembly.ofType('AWS::S3::BucketPolicy').find(([, p]) => resolver.resolve(p.Properties!.Bucket) === bucket);
    return found ? resolver.resolve(found[1].Properties!.PolicyDocument) : undefined;
  }
  if (resource.startsWith('arn:aws:sqs:')) {
    const found = assembly.ofType('AWS::SQS::QueuePolicy').find(([, p]) =>
      (p.Properties!.Queues as unknown[]).some((q) => {
        const url = String(resolver.resolve(q));
        return url.split('/').pop() === resource.split(':').pop();
      }),
    );
    return found ? resolver.resolve(found[1].Properties!.PolicyDocument) : undefined;
  }
  return undefined;
}

/** Evaluate one role's calls; identical requests are evaluated once and counted. */
export async function evaluateCalls(
  assembly: Assembly,
  resolver: Resolver,
  roleId: string,
  calls: readonly AuditedCall[],
  queueArnOfUrl: (url: string) => string | undefined,
  tableArnOf?: (name: string) => string | undefined,
): Promise<Verdict[]> {
  const identity = identityPolicies(assembly, resolver, roleId);
  const verdicts = new Map<string, Verdict>();
  for (const c of calls) {
    const requests = iamRequestsOf(c, queueArnOfUrl, tableArnOf);
    if (!requests) {
      const key = `unmapped ${c.service}:${c.command}`;
      const v = verdicts.get(key) ?? {
        role: roleId,
        action: `${c.service}:${c.command}`,
        resource: JSON.stringify(c.input),
        context: {},
        call: `${c.service}:${c.command}`,
        result: 'Unmapped' as const,
        detail: 'no IAM mapping for this call: add it to test/rehearsal/iam.ts',
        count: 0,
      };
      v.count++;
      verdicts.set(key, v);
      continue;
    }
    for (const r of requests) {
      const key = `${r.action} ${r.resource} ${JSON.stringify(r.context)}`;
      const known = verdicts.get(key);
      if (known) {
        known.count++;
        continue;
      }
      const rp = resourcePolicy(assembly, resolver, r.resource);
      const response = await runSimulation(
        {
          identityPolicies: identity,
          serviceControlPolicies: [],
          resourceControlPolicies: [],
          ...(rp ? { resourcePolicy: rp } : {}),
          request: {
            principal: `arn:aws:iam::${ACCOUNT}:role/${roleId}`,
            action: r.action,
            resource: { resource: r.resource, accountId: ACCOUNT },
            // The SDK talks HTTPS to AWS; the stand-ins' plain HTTP is the rehearsal's only difference.
            contextVariables: { 'aws:SecureTransport': 'true', ...r.context },
          },
        } as Parameters<typeof runSimulation>[0],
        {},
      );
      const result = response.resultType === 'error' ? 'Error' : response.overallResult;
      verdicts.set(key, {
        ...r,
        role: roleId,
        result: result as Verdict['result'],
        count: 1,
        detail: response.resultType === 'error' ? JSON.stringify(response.errors) : undefined,
      });
    }
  }
  return [...verdicts.values()];
}

/** Actions a role is granted (Allow statements) that none of its calls used, with their resources. */
export function unusedGrants(
  assembly: Assembly,
  resolver: Resolver,
  roleId: string,
  verdicts: readonly Verdict[],
): { action: string; resources: string[] }[] {
  const used = new Set(verdicts.filter((v) => v.result === 'Allowed').map((v) => v.action));
  const unused = new Map<string, Set<string>>();
  for (const { policy } of identityPolicies(assembly, resolver, roleId)) {
    for (const s of policy.Statement) {
      if (s.Effect !== 'Allow') continue;
      for (const action of ([] as string[]).concat(s.Action ?? [])) {
        const pattern = new RegExp(`^${action.replace(/[.+?^${}()|[\]\\]/g, '\\$&').replace(/\*/g, '.*')}$`, 'i');
        if ([...used].some((u) => pattern.test(u))) continue;
        const set = unused.get(action) ?? new Set<string>();
        for (const r of ([] as string[]).concat(s.Resource ?? [])) set.add(r);
        unused.set(action, set);
      }
    }
  }
  return [...unused].map(([action, resources]) => ({ action, resources: [...resources] })).sort((a, b) => a.action.localeCompare(b.action));
}

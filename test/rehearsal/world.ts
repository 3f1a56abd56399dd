/**
 * The rehearsal's AWS: every S3 bucket, SQS queue and DynamoDB table of the synthesized template,
 * created on the embedded stand-ins (s3rver, fauxqs, dynalite) over loopback, with the template's own queue attributes and
 * redrive, and the bucket's notification configuration honoured (events go to the queue the template
 * names, filtered by its prefix rules). Each resource gets a physical name, URL and ARN, so the
 * template's environment variables and IAM policies resolve to what the code really calls.
 */
import { CreateBucketCommand, type S3Client } from '@aws-sdk/client-s3';
import { CreateTableCommand, type KeySchemaElement, type AttributeDefinition } from '@aws-sdk/client-dynamodb';
import { startDynamoServer } from '../../local/dynamo-server.ts';
import { startS3VectorsServer } from '../../local/s3vectors-server.ts';
import { CreateIndexCommand, CreateVectorBucketCommand } from '@aws-sdk/client-s3vectors';
import { s3VectorsClient } from '../../pipeline/aws/s3-vectors.ts';
import { startSqsServer } from '../../local/sqs-server.ts';
import { dynamoClient, s3Client, sqsClient } from '../../pipeline/aws/clients.ts';
import { SqsQueue } from '../../pipeline/aws/sqs-queue.ts';
import { decodeS3Key } from '../../pipeline/events.ts';
import { startS3Server } from '../../local/s3-server.ts';
import { eventBridgeFromS3Record } from './eventbridge.ts';
import { runTemp } from './paths.ts';
import { ACCOUNT, REGION, Resolver, type Assembly, type Physical } from './template.ts';

export const CREDENTIALS = { accessKeyId: 'S3RVER', secretAccessKey: 'S3RVER' };
/**
 * The deployed runtimes look for weights not published yet every minute; the rehearsal has them
 * look every few seconds (EFFITAG_WEIGHTS_RECHECK_SECONDS, a harness detail like the endpoints), so
 * it does not wait out the minute once per tiers file.
 */
export const WEIGHTS_RECHECK_SECONDS = 5;

export interface World {
  s3Endpoint: string;
  sqsEndpoint: string;
  dynamoEndpoint: string;
  /** The embedded S3 Vectors, holding the template's vector buckets and indexes (issue 23). */
  s3vectorsEndpoint: string;
  /** An operator's S3 client (uploads, checks); its calls are not attributed to any role. */
  s3: S3Client;
  resolver: Resolver;
  physical: Map<string, Physical>;
  /** Local queue by logical id. */
  queues: Map<string, SqsQueue & { arn: string; logicalId: string }>;
  bucketName(logicalId: string): string;
  /** The ARN a queue URL (or, for GetQueueUrl, a queue name) stands for; undefined when not the template's. */
  queueArnOfUrl(urlOrName: string): string | undefined;
  /** The ARN of a table by its physical name; undefined when not the template's. */
  tableArnOf(name: string): string | undefined;
  stop(): Promise<void>;
}

/** Deterministic physical names: lowercased logical ids, as unique as the template's. */
const bucketNameOf = (logicalId: string) => `rh-${logicalId.toLowerCase()}`.slice(0, 63);

export async function startWorld(assembly: Assembly, options: { dataDir?: string } = {}): Promise<World> {
  const physical = new Map<string, Physical>();
  const resolver = new Resolver((id) => physical.get(id) ?? fallback(id));
  const fallback = (id: string): Physical | undefined => {
    const r = assembly.template.Resources[id];
    if (!r) return undefined;
    // Resources the rehearsal does not stand in for: a stable fake identity.
    const arnOf: Record<string, string> = {
      'AWS::IAM::Role': `arn:aws:iam::${ACCOUNT}:role/${id}`,
      'AWS::Lambda::Function': `arn:aws:lambda:${REGION}:${ACCOUNT}:function:${id}`,
      'AWS::KMS::Key': `arn:aws:kms:${REGION}:${ACCOUNT}:key/${id}`,
      'AWS::SNS::Topic': `arn:aws:sns:${REGION}:${ACCOUNT}:${id}`,
      'AWS::StepFunctions::StateMachine': `arn:aws:states:${REGION}:${ACCOUNT}:stateMachine:${id}`,
      'AWS::ECS::Cluster': `arn:aws:ecs:${REGION}:${ACCOUNT}:cluster/${id}`,
    };
    const arn = arnOf[r.Type] ?? `arn:aws:cloudformation:${REGION}:${ACCOUNT}:${id}`;
    return { ref: r.Type === 'AWS::SNS::Topic' ? arn : id, attributes: { Arn: arn } };
  };

  const sqsServer = await startSqsServer({ credentials: CREDENTIALS });
  const stops: (() => Promise<unknown>)[] = [() => sqsServer.close()];
  const sqs = sqsClient({ sqsEndpoint: sqsServer.endpoint, credentials: CREDENTIALS });
  const queues: World['queues'] = new Map();
  const localArn = new Map<string, string>();
  const urlToArn = new Map<string, string>();
  // Dead-letter queues first, so a queue's redrive can name its DLQ's local ARN.
  const queueDefs = assembly
    .ofType('AWS::SQS::Queue')
    .sort(([, a], [, b]) => Number(Boolean(a.Properties?.RedrivePolicy)) - Number(Boolean(b.Properties?.RedrivePolicy)));
  for (const [id, r] of queueDefs) {
    const p = r.Properties ?? {};
    const fifo = p.FifoQueue === true;
    const name = `${id}${fifo ? '.fifo' : ''}`;
    const attributes: Record<string, string> = {};
    if (fifo) attributes.FifoQueue = 'true';
    if (p.VisibilityTimeout !== undefined) attributes.VisibilityTimeout = String(p.VisibilityTimeout);
    if (p.RedrivePolicy) {
      const dlqId = p.RedrivePolicy.deadLetterTargetArn['Fn::GetAtt'][0] as string;
      attributes.RedrivePolicy = JSON.stringify({
        deadLetterTargetArn: localArn.get(dlqId),
        maxReceiveCount: p.RedrivePolicy.maxReceiveCount,
      });
    }
    // fauxqs names its queues `http://sqs.<region>.localhost:<port>/…`; the deployed code sends to
    // a queue URL's host, as with real SQS URLs (the processes resolve `.localhost` to loopback).
    const { url, arn: queueArn } = await sqsServer.createQueue(name, attributes);
    localArn.set(id, queueArn);
    const arn = `arn:aws:sqs:${REGION}:${ACCOUNT}:${name}`;
    physical.set(id, { ref: url, attributes: { Arn: arn, QueueName: name, QueueUrl: url } });
    urlToArn.set(url, arn);
    urlToArn.set(name, arn);
    queues.set(id, Object.assign(new SqsQueue(sqs, url, name), { arn, logicalId: id }));
  }

  const dynamoServer = await startDynamoServer({ credentials: CREDENTIALS });
  stops.push(() => dynamoServer.close());
  const dynamo = dynamoClient({ dynamoEndpoint: dynamoServer.endpoint, credentials: CREDENTIALS });
  const tableArns = new Map<string, string>();
  for (const [id, r] of assembly.ofType('AWS::DynamoDB::Table')) {
    const name = `rh-${id}`;
    const arn = `arn:aws:dynamodb:${REGION}:${ACCOUNT}:table/${name}`;
    await dynamo.send(
      new CreateTableCommand({
        TableName: name,
        BillingMode: 'PAY_PER_REQUEST',
        KeySchema: r.Properties!.KeySchema as KeySchemaElement[],
        AttributeDefinitions: r.Properties!.AttributeDefinitions as AttributeDefinition[],
      }),
    );
    physical.set(id, { ref: name, attributes: { Arn: arn } });
    tableArns.set(name, arn);
  }

  // S3 Vectors: the template's vector buckets and indexes, as CloudFormation would create them.
  const vectorsServer = await startS3VectorsServer({ credentials: CREDENTIALS });
  stops.push(() => vectorsServer.close());
  const vectors = s3VectorsClient({ endpoint: vectorsServer.endpoint, credentials: CREDENTIALS });
  stops.push(async () => vectors.destroy());
  for (const [id, r] of assembly.ofType('AWS::S3Vectors::VectorBucket')) {
    const name = (r.Properties?.VectorBucketName as string | undefined) ?? `rh-${id.toLowerCase()}`.slice(0, 63);
    await vectors.send(new CreateVectorBucketCommand({ vectorBucketName: name }));
    const arn = `arn:aws:s3vectors:${REGION}:${ACCOUNT}:bucket/${name}`;
    physical.set(id, { ref: arn, attributes: { VectorBucketArn: arn } });
  }
  for (const [id, r] of assembly.ofType('AWS::S3Vectors::Index')) {
    const p = resolver.resolve(r.Properties) as Record<string, any>;
    const bucket = (p.VectorBucketName as string | undefined) ?? String(p.VectorBucketArn).split('/')[1];
    await vectors.send(
      new CreateIndexCommand({
        vectorBucketName: bucket,
        indexName: p.IndexName,
        dataType: p.DataType,
        dimension: p.Dimension,
        distanceMetric: p.DistanceMetric,
        metadataConfiguration: p.MetadataConfiguration
          ? { nonFilterableMetadataKeys: p.MetadataConfiguration.NonFilterableMetadataKeys }
          : undefined,
      }),
    );
    const arn = `arn:aws:s3vectors:${REGION}:${ACCOUNT}:bucket/${bucket}/index/${p.IndexName}`;
    physical.set(id, { ref: arn, attributes: { IndexArn: arn } });
  }

  const dataDir = options.dataDir ?? runTemp('s3-');
  const notifications: { event: string; bucket: string; queue: SqsQueue; prefix: string; suffix: string }[] = [];
  const eventRules: { detailTypes: string[]; buckets: string[]; prefixes: string[] | undefined; queue: SqsQueue }[] = [];
  const notify = (event: string) => async (body: string) => {
    const record = JSON.parse(body).Records[0];
    const key = decodeS3Key(record.s3.object.key);
    for (const n of notifications) {
      if (n.event === event && n.bucket === record.s3.bucket.name && key.startsWith(n.prefix) && key.endsWith(n.suffix))
        await n.queue.send([{ body }]);
    }
    // EventBridge mode: the bucket sends every change to EventBridge; a rule matching its pattern
    // delivers the event itself to its SQS target.
    const detailType = event === 's3:ObjectCreated:*' ? 'Object Created' : 'Object Deleted';
    for (const r of eventRules) {
      if (!r.detailTypes.includes(detailType) || !r.buckets.includes(record.s3.bucket.name)) continue;
      if (r.prefixes && !r.prefixes.some((p) => key.startsWith(p))) continue;
      const e = eventBridgeFromS3Record(record, { region: REGION, account: ACCOUNT });
      if (e) await r.queue.send([{ body: JSON.stringify(e) }]);
    }
  };
  const s3server = await startS3Server({
    directory: dataDir,
    credentials: CREDENTIALS,
    onObjectCreated: notify('s3:ObjectCreated:*'),
    onObjectRemoved: notify('s3:ObjectRemoved:*'),
  });
  stops.unshift(() => s3server.close());
  const s3 = s3Client({ s3Endpoint: s3server.endpoint, credentials: CREDENTIALS });
  for (const [id] of assembly.ofType('AWS::S3::Bucket')) {
    const name = bucketNameOf(id);
    physical.set(id, { ref: name, attributes: { Arn: `arn:aws:s3:::${name}`, DomainName: `${name}.s3.amazonaws.com` } });
    await s3.send(new CreateBucketCommand({ Bucket: name }));
  }
  // The bucket's notification configuration, as S3 would apply it.
  for (const [, r] of assembly.ofType('Custom::S3BucketNotifications')) {
    const bucket = resolver.resolve(r.Properties!.BucketName) as string;
    for (const c of r.Properties!.NotificationConfiguration.QueueConfigurations ?? []) {
      const event = (c.Events as string[]).find((e) => e === 's3:ObjectCreated:*' || e === 's3:ObjectRemoved:*');
      if (!event) continue;
      const queueId = c.QueueArn['Fn::GetAtt'][0] as string;
      const rules: { Name: string; Value: string }[] = c.Filter?.Key?.FilterRules ?? [];
      notifications.push({
        event,
        bucket,
        queue: queues.get(queueId)!,
        prefix: rules.find((f) => f.Name.toLowerCase() === 'prefix')?.Value ?? '',
        suffix: rules.find((f) => f.Name.toLowerCase() === 'suffix')?.Value ?? '',
      });
    }
  }

  // EventBridge rules on S3 events with an SQS target (effitag:events=eventbridge).
  for (const [, r] of assembly.ofType('AWS::Events::Rule')) {
    const pattern = r.Properties!.EventPattern ?? {};
    if (!(pattern.source ?? []).includes('aws.s3')) continue;
    for (const t of r.Properties!.Targets ?? []) {
      const queueId = t.Arn?.['Fn::GetAtt']?.[0] as string | undefined;
      const queue = queueId ? queues.get(queueId) : undefined;
      if (!queue) continue;
      const keyFilter = pattern.detail?.object?.key as { prefix: string }[] | undefined;
      eventRules.push({
        detailTypes: pattern['detail-type'] ?? [],
        buckets: (pattern.detail?.bucket?.name ?? []).map((b: unknown) => resolver.resolve(b)),
        prefixes: keyFilter?.map((k) => k.prefix),
        queue,
      });
    }
  }

  return {
    s3Endpoint: s3server.endpoint,
    sqsEndpoint: sqsServer.endpoint,
    dynamoEndpoint: dynamoServer.endpoint,
    s3vectorsEndpoint: vectorsServer.endpoint,
    s3,
    resolver,
    physical,
    queues,
    bucketName: (id) => physical.get(id)!.ref,
    queueArnOfUrl: (url) => urlToArn.get(url),
    tableArnOf: (name) => tableArns.get(name),
    async stop() {
      for (const s of stops) await s().catch(() => {});
      s3.destroy();
      sqs.destroy();
      dynamo.destroy();
    },
  };
}

/**
 * S3 Vectors on AWS (issue 23): the template's vector bucket and per-model indexes, the grants, and
 * the rehearsal's IAM simulation of every S3 Vectors call the adapter makes against that template.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { runSimulation } from '@cloud-copilot/iam-simulate';
import type { App } from 'aws-cdk-lib';
import type { Template } from 'aws-cdk-lib/assertions';
import { embeddingModels, featureDimension, VECTOR_ACTIONS } from '../cdk/constructs/similar-images.ts';
import { startS3VectorsServer } from '../local/s3vectors-server.ts';
import type { AuditedCall } from '../pipeline/aws/audit.ts';
import { generateCredentials } from '../pipeline/aws/local-credentials.ts';
import { S3VectorIndex, s3VectorsClient, vectorIndexName } from '../pipeline/aws/s3-vectors.ts';
import { evaluateCalls, iamRequestsOf, readAudit } from './rehearsal/iam.ts';
import { ACCOUNT, type Assembly, type Physical, readAssembly, REGION, Resolver } from './rehearsal/template.ts';
import { nagViolations, synthStack } from './support/synth.ts';

type Statement = { Sid?: string; Action: string | string[]; Resource: unknown; Effect: string };
const actionsOf = (s: Statement) => ([] as string[]).concat(s.Action);

describe('S3 Vectors in the CDK stack (default tiers)', () => {
  let template: Template;
  let app: App;
  let tiers: ReturnType<typeof synthStack>['config']['tiers'];
  before(() => {
    ({
      template,
      app,
      config: { tiers },
    } = synthStack());
  });

  test('feature widths follow the head conv (B0 1,280, B2 1,408, B3 1,536, B5 2,048, B7 2,560, V2 1,280)', () => {
    assert.deepEqual(
      ['b0', 'b1', 'b2', 'b3', 'b5', 'b7', 'v2-s', 'v2-m', 'v2-b3'].map(featureDimension),
      [1280, 1280, 1408, 1536, 2048, 2560, 1280, 1280, 1536],
    );
  });

  test('one vector bucket, retained, and one cosine float32 index per model the tiers tag with, named as the adapter names them', () => {
    const buckets = template.findResources('AWS::S3Vectors::VectorBucket');
    assert.equal(Object.keys(buckets).length, 1);
    const [[bucketId, bucket]] = Object.entries(buckets);
    assert.equal(bucket.Properties.VectorBucketName, undefined, 'a generated name: a retained bucket cannot block the next deploy');
    assert.deepEqual(bucket.Properties.EncryptionConfiguration, { SseType: 'AES256' });
    assert.equal(bucket.DeletionPolicy, 'Retain');
    const indexes = Object.values(template.findResources('AWS::S3Vectors::Index'));
    const expected = embeddingModels(tiers);
    assert.deepEqual(expected.map((m) => m.model).sort(), ['b0', 'b1', 'b2', 'b3', 'b5', 'b7', 'v2-m', 'v2-s']);
    assert.equal(indexes.length, expected.length);
    for (const { model, dimension } of expected) {
      const index = indexes.find((i) => i.Properties.IndexName === vectorIndexName(model));
      assert.ok(index, `an index for ${model}`);
      assert.equal(index.Properties.Dimension, dimension);
      assert.equal(index.Properties.DistanceMetric, 'cosine');
      assert.equal(index.Properties.DataType, 'float32');
      assert.deepEqual(index.Properties.VectorBucketArn, { 'Fn::GetAtt': [bucketId, 'VectorBucketArn'] });
      assert.deepEqual(index.Properties.MetadataConfiguration, { NonFilterableMetadataKeys: ['key', 'etag'] });
      assert.equal(index.DeletionPolicy, 'Retain');
    }
  });

  test('grants: workers and the router act on the index ARNs only; nobody may create or delete indexes; ListIndexes only for the reader', () => {
    const policies = template.findResources('AWS::IAM::Policy');
    const vectorStatements = Object.entries(policies).flatMap(([id, p]) =>
      (p.Properties.PolicyDocument.Statement as Statement[])
        .filter((s) => actionsOf(s).some((a) => a.startsWith('s3vectors:')))
        .map((s) => ({ id, s })),
    );
    const workers = vectorStatements.filter(({ s }) => s.Sid === 'WriteEmbeddings');
    // One Lambda tier and two GPU tiers: three worker roles.
    assert.equal(workers.length, 3, vectorStatements.map((v) => v.id).join(', '));
    for (const { s } of workers) assert.deepEqual(actionsOf(s), [...VECTOR_ACTIONS.worker]);
    const routers = vectorStatements.filter(({ s }) => s.Sid === 'DropEmbeddingsOfRemovedObjects');
    assert.equal(routers.length, 1);
    assert.deepEqual(actionsOf(routers[0].s), ['s3vectors:DeleteVectors']);
    assert.equal(vectorStatements.length, 4, 'no other role touches vectors');
    for (const { s } of vectorStatements) {
      const resources = ([] as unknown[]).concat(s.Resource);
      assert.equal(resources.length, 8);
      for (const r of resources) assert.deepEqual(Object.keys(r as object), ['Fn::GetAtt'], JSON.stringify(r));
      for (const r of resources) assert.equal((r as { 'Fn::GetAtt': string[] })['Fn::GetAtt'][1], 'IndexArn');
    }
    const all = JSON.stringify(template.toJSON());
    for (const forbidden of ['s3vectors:*', 's3vectors:CreateIndex', 's3vectors:DeleteIndex', 's3vectors:DeleteVectorBucket'])
      assert.ok(!all.includes(`"${forbidden}"`), `${forbidden} is granted somewhere`);
    const reader = Object.values(template.findResources('AWS::IAM::ManagedPolicy')).find((p) =>
      JSON.stringify(p).includes('QueryEmbeddings'),
    );
    assert.ok(reader, 'a reader policy to attach to users of effitag similar');
    const readerStatements = reader.Properties.PolicyDocument.Statement as Statement[];
    assert.deepEqual(actionsOf(readerStatements.find((s) => s.Sid === 'ListEmbeddingIndexes')!), ['s3vectors:ListIndexes']);
  });

  test('outputs: VectorBucket and the reader policy; the workers are told the bucket (EFFITAG_VECTOR_BUCKET)', () => {
    const outputs = template.toJSON().Outputs as Record<string, { Value: unknown }>;
    const [bucketId] = Object.keys(template.findResources('AWS::S3Vectors::VectorBucket'));
    // The name is the ARN's last part (arn:aws:s3vectors:REGION:ACCOUNT:bucket/NAME).
    const name = { 'Fn::Select': [1, { 'Fn::Split': ['/', { 'Fn::GetAtt': [bucketId, 'VectorBucketArn'] }] }] };
    assert.deepEqual(outputs.VectorBucket.Value, name);
    assert.ok(outputs.VectorReaderPolicy);
    const fns = Object.values(template.findResources('AWS::Lambda::Function')).filter((f) =>
      JSON.stringify(f.Properties.Environment ?? {}).includes('EFFITAG_TIERS'),
    );
    assert.ok(fns.length > 0);
    for (const f of fns) assert.deepEqual(f.Properties.Environment.Variables.EFFITAG_VECTOR_BUCKET, name);
  });

  test('cdk-nag: no AwsSolutions findings', () => {
    assert.deepEqual(nagViolations(app), []);
  });
});

describe('every S3 Vectors call the adapter makes is allowed by the template (the rehearsal IAM simulation)', () => {
  const credentials = generateCredentials();
  /** What CloudFormation named the vector bucket (the stack output VectorBucket). */
  const BUCKET = 'effitag-similarimagesbucket-1a2b3c';
  let assembly: Assembly;
  let resolver: Resolver;
  let server: Awaited<ReturnType<typeof startS3VectorsServer>>;
  let dir: string;
  let roleOf: (sid: string) => string;

  before(async () => {
    const { app } = synthStack();
    assembly = readAssembly(app.synth().directory);
    // Physical values as CloudFormation gives them: a generated bucket name, the index ARN from it and the index's name.
    resolver = new Resolver((id): Physical | undefined => {
      const r = assembly.template.Resources[id];
      if (r?.Type === 'AWS::S3Vectors::VectorBucket') {
        const arn = `arn:aws:s3vectors:${REGION}:${ACCOUNT}:bucket/${BUCKET}`;
        return { ref: arn, attributes: { VectorBucketArn: arn } };
      }
      if (r?.Type === 'AWS::S3Vectors::Index') {
        const arn = `${resolver.resolve(r.Properties!.VectorBucketArn)}/index/${r.Properties!.IndexName}`;
        return { ref: arn, attributes: { IndexArn: arn } };
      }
      return r ? { ref: id, attributes: { Arn: `arn:aws:cloudformation:${REGION}:${ACCOUNT}:${id}` } } : undefined;
    });
    roleOf = (sid) => {
      const [, policy] = assembly
        .ofType('AWS::IAM::Policy')
        .find(([, p]) => (p.Properties!.PolicyDocument.Statement as Statement[]).some((s) => s.Sid === sid))!;
      return (policy.Properties!.Roles as { Ref: string }[])[0].Ref;
    };
    dir = mkdtempSync(join(tmpdir(), 'effitag-vectors-iam-'));
    server = await startS3VectorsServer({ credentials, buckets: [BUCKET] });
    // The deploy's indexes: the adapter's calls are then those a deployed worker makes.
    const setup = new S3VectorIndex({ client: s3VectorsClient({ endpoint: server.endpoint, credentials }), vectorBucket: BUCKET });
    await setup.put('b0@000000000000', [
      { bucket: 'x', key: 'seed', vector: Float32Array.from({ length: 1280 }, (_, i) => (i === 0 ? 1 : 0)) },
    ]);
  });
  after(async () => {
    await server.close();
    rmSync(dir, { recursive: true, force: true });
  });

  /** The audited calls of `work`, done through an adapter whose client writes the audit log. */
  async function audited(work: (index: S3VectorIndex) => Promise<unknown>): Promise<AuditedCall[]> {
    const file = join(dir, `audit-${Math.random().toString(36).slice(2)}.jsonl`);
    process.env.EFFITAG_AUDIT_LOG = file;
    const client = s3VectorsClient({ endpoint: server.endpoint, credentials });
    delete process.env.EFFITAG_AUDIT_LOG;
    try {
      await work(new S3VectorIndex({ client, vectorBucket: BUCKET, createIndexes: false }));
    } finally {
      client.destroy();
    }
    return readAudit(file);
  }

  const v = (seed: number) => {
    const a = Float32Array.from({ length: 1280 }, (_, i) => Math.sin(seed * 7 + i));
    const n = Math.hypot(...a);
    return a.map((x) => x / n);
  };

  test("a worker's puts, gets, queries and removes; the router's removes: all allowed, and the simulation does deny", async () => {
    const worker = await audited(async (index) => {
      await index.put('b0@aaaaaaaaaaaa', [{ bucket: 'photos', key: 'a.jpg', vector: v(1), eTag: 'e1' }]);
      await index.get('b0@aaaaaaaaaaaa', { bucket: 'photos', key: 'a.jpg' });
      await index.query('b0@aaaaaaaaaaaa', v(1), { limit: 5, bucket: 'photos', prefix: 'a' });
      await index.remove('b0@aaaaaaaaaaaa', [{ bucket: 'photos', key: 'a.jpg' }]);
    });
    assert.deepEqual(
      worker.map((c) => `${c.service}:${c.command}:${c.status}`),
      ['s3vectors:PutVectors:200', 's3vectors:GetVectors:200', 's3vectors:QueryVectors:200', 's3vectors:DeleteVectors:200'],
    );
    const workerRole = roleOf('WriteEmbeddings');
    const verdicts = await evaluateCalls(assembly, resolver, workerRole, worker, () => undefined);
    assert.equal(verdicts.length, 4, JSON.stringify(verdicts));
    for (const verdict of verdicts) assert.equal(verdict.result, 'Allowed', `${verdict.action} on ${verdict.resource}`);
    assert.deepEqual(
      iamRequestsOf(worker[2], () => undefined)!.map((r) => r.action),
      ['s3vectors:QueryVectors', 's3vectors:GetVectors'],
      'a filtered query is also a GetVectors',
    );

    const routerRole = roleOf('DropEmbeddingsOfRemovedObjects');
    const routerCalls = worker.filter((c) => c.command === 'DeleteVectors');
    for (const verdict of await evaluateCalls(assembly, resolver, routerRole, routerCalls, () => undefined))
      assert.equal(verdict.result, 'Allowed');
    // Not vacuous: what a role was not given is denied.
    const denied = await evaluateCalls(
      assembly,
      resolver,
      routerRole,
      worker.filter((c) => c.command === 'PutVectors'),
      () => undefined,
    );
    assert.equal(denied[0].result, 'ImplicitlyDenied');
    const create: AuditedCall = {
      service: 's3vectors',
      command: 'CreateIndex',
      input: { vectorBucketName: BUCKET, indexName: 'model-new' },
    };
    assert.equal((await evaluateCalls(assembly, resolver, workerRole, [create], () => undefined))[0].result, 'ImplicitlyDenied');
    // A model no tier uses has no index, and no grant.
    const other = { ...worker[0], input: { ...worker[0].input, indexName: vectorIndexName('b4') } };
    assert.equal((await evaluateCalls(assembly, resolver, workerRole, [other], () => undefined))[0].result, 'ImplicitlyDenied');
  });

  test("effitag similar's calls (a vector read, a query, the spaces listed) are allowed by the reader policy", async () => {
    const reader = await audited(async (index) => {
      await index.get('b0@000000000000', { bucket: 'x', key: 'seed' });
      await index.query('b0@000000000000', v(2), { limit: 10, bucket: 'x' });
      await index.spaces();
    });
    assert.deepEqual(
      reader.map((c) => c.command),
      ['GetVectors', 'QueryVectors', 'ListIndexes', 'ListVectors'],
    );
    const [, policy] = assembly
      .ofType('AWS::IAM::ManagedPolicy')
      .find(([, p]) => JSON.stringify(p.Properties!.PolicyDocument).includes('QueryEmbeddings'))!;
    const document = resolver.resolve(policy.Properties!.PolicyDocument);
    for (const call of reader) {
      for (const r of iamRequestsOf(call, () => undefined)!) {
        const response = await runSimulation(
          {
            identityPolicies: [{ name: 'reader', policy: document }],
            serviceControlPolicies: [],
            resourceControlPolicies: [],
            request: {
              principal: `arn:aws:iam::${ACCOUNT}:user/someone`,
              action: r.action,
              resource: { resource: r.resource, accountId: ACCOUNT },
              contextVariables: { 'aws:SecureTransport': 'true' },
            },
          } as Parameters<typeof runSimulation>[0],
          {},
        );
        assert.equal(
          response.resultType === 'error' ? JSON.stringify(response.errors) : response.overallResult,
          'Allowed',
          `${r.action} ${r.resource}`,
        );
      }
    }
  });
});

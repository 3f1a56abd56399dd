/**
 * The EffiTag stack: composes the constructs, one per concern. All decisions come from the validated
 * configuration (cdk/config.ts); nothing here is specific to a tier name.
 */
import { CfnOutput, Stack, type StackProps } from 'aws-cdk-lib';
import type * as ecs from 'aws-cdk-lib/aws-ecs';
import * as lambda from 'aws-cdk-lib/aws-lambda';
import type * as s3 from 'aws-cdk-lib/aws-s3';
import type { Construct } from 'constructs';
import { encodeStackEnv } from '../pipeline/runtime-config.ts';
import type { EffiTagConfig } from './config.ts';
import type { BucketAccess } from './constructs/access.ts';
import { CpuRuntimeLayer, CpuTier, lambdaBatchTimeout } from './constructs/cpu-tier.ts';
import { createGpuCluster, servicesAfterCapacityProviders } from './constructs/gpu-cluster.ts';
import { GpuTier, gpuBatchTimeout } from './constructs/gpu-tier.ts';
import { Ingest } from './constructs/ingest.ts';
import { Observability } from './constructs/observability.ts';
import { createStorage } from './constructs/storage.ts';
import { TagIndexTable } from './constructs/tag-index.ts';
import { TierQueue } from './constructs/tier-queues.ts';
import { Backfill } from './constructs/backfill.ts';
import { SimilarImages } from './constructs/similar-images.ts';

/** Properties of an {@link EffiTagStack}. */
export interface EffiTagStackProps extends StackProps {
  /** What to deploy: the tiers, buckets, prefixes and options read from the cdk context (cdk/config.ts). */
  readonly config: EffiTagConfig;
}

export class EffiTagStack extends Stack {
  readonly tierQueues: Record<string, TierQueue> = {};
  readonly images: BucketAccess;
  readonly weights: BucketAccess;
  readonly prefixes: string[];
  readonly accessLogs?: s3.Bucket;
  readonly backfill: Backfill;
  readonly index?: TagIndexTable;
  /** Image embeddings (issue 23): the S3 Vectors bucket and an index per model. */
  readonly similar: SimilarImages;

  constructor(scope: Construct, id: string, props: EffiTagStackProps) {
    super(scope, id, props);
    // The Distributed Map's ResultWriterV2 is used only under this flag (set before any child exists).
    this.node.setContext('@aws-cdk/aws-stepfunctions:useDistributedMapResultWriterV2', true);
    // Without it, an ECS service with no desiredCount is given DesiredCount: 1 in the template.
    this.node.setContext('@aws-cdk/aws-ecs:removeDefaultDesiredCount', true);
    const { config } = props;
    const tiers = Object.values(config.tiers.tiers);
    this.prefixes = config.prefixes;
    const storage = createStorage(this, config);
    const { images, weights, weightsLocation } = storage;
    this.images = images;
    this.weights = weights;
    this.accessLogs = storage.accessLogs;

    for (const tier of tiers) {
      const batchTimeout = tier.kind === 'lambda-cpu' ? lambdaBatchTimeout(tier) : gpuBatchTimeout(tier);
      this.tierQueues[tier.name] = new TierQueue(this, `Tier-${tier.name}`, { tierName: tier.name, tier, batchTimeout });
    }
    this.index = config.index ? new TagIndexTable(this, 'TagIndex') : undefined;
    this.similar = new SimilarImages(this, 'SimilarImages', { tiers: config.tiers });
    const queueUrlsJson = this.toJsonString(Object.fromEntries(Object.entries(this.tierQueues).map(([n, q]) => [n, q.queue.queueUrl])));
    let environment: Record<string, string>;
    try {
      environment = encodeStackEnv({
        tiers: config.tiers,
        queueUrlsJson,
        weightsLocation,
        indexTable: this.index?.table.tableName,
        vectorBucket: this.similar.bucketName,
      });
    } catch (err) {
      throw new Error(`${config.tiersFile}: ${(err as Error).message}`);
    }
    const taskQueues = Object.fromEntries(Object.entries(this.tierQueues).map(([n, q]) => [n, q.queue]));

    const ingest = new Ingest(this, 'Ingest', {
      bucket: images,
      prefixes: config.prefixes,
      events: config.events,
      weights,
      runtimeEnvironment: environment,
      tierQueues: taskQueues,
      index: this.index,
    });

    const observed: Record<string, { queue: TierQueue['queue']; dlq: TierQueue['dlq']; service?: ecs.Ec2Service; fn?: lambda.IFunction }> =
      {};
    for (const [n, q] of Object.entries(this.tierQueues)) observed[n] = { queue: q.queue, dlq: q.dlq };
    const shared = { bucket: images, prefixes: config.prefixes, weights, environment, index: this.index };

    let cluster: ecs.Cluster | undefined;
    const gpuTiers = tiers.flatMap((t) => (t.kind === 'ecs-gpu' ? [t] : []));
    if (gpuTiers.length) {
      const gpu = createGpuCluster(this, { vpcId: config.vpcId });
      cluster = gpu.cluster;
      const services = gpuTiers.map((tier) => {
        const { queue, dlq } = this.tierQueues[tier.name];
        const service = new GpuTier(this, `Gpu-${tier.name}`, { ...shared, ...gpu, tierName: tier.name, tier, queue, dlq }).service;
        this.similar.grant(service.taskDefinition.taskRole, 'worker');
        observed[tier.name].service = service;
        return service;
      });
      servicesAfterCapacityProviders(gpu.cluster, services);
    }
    const layers = new Map<string, lambda.ILayerVersion>();
    for (const tier of tiers) {
      if (tier.kind !== 'lambda-cpu') continue;
      const arch = tier.compute.architecture === 'arm64' ? lambda.Architecture.ARM_64 : lambda.Architecture.X86_64;
      if (!layers.has(arch.name)) layers.set(arch.name, new CpuRuntimeLayer(this, `CpuRuntime-${arch.name}`, { architecture: arch }).layer);
      const { queue, dlq } = this.tierQueues[tier.name];
      observed[tier.name].fn = new CpuTier(this, `Cpu-${tier.name}`, {
        ...shared,
        tierName: tier.name,
        tier,
        queue,
        dlq,
        layer: layers.get(arch.name)!,
      }).fn;
      this.similar.grant(observed[tier.name].fn!, 'worker');
    }

    this.similar.grant(ingest.router, 'router');

    const backfill = new Backfill(this, 'Backfill', { ...shared, accessLogs: this.accessLogs, tierQueues: taskQueues });
    this.backfill = backfill;

    const observability = new Observability(this, 'Observability', {
      tiers: observed,
      intake: ingest.intake,
      intakeDlq: ingest.intakeDlq,
      router: ingest.router,
      clusterName: cluster?.clusterName,
      alarmEmail: config.alarmEmail,
      backfill: backfill.stateMachine,
    });

    new CfnOutput(this, 'BucketName', { value: images.bucket.bucketName, description: 'Bucket whose uploads are tagged' });
    new CfnOutput(this, 'WeightsLocation', {
      value: weightsLocation,
      description: 'Where weights are published: effitag --stack <stack name> weights publish --tiers FILE (reads this output)',
    });
    new CfnOutput(this, 'DashboardName', { value: observability.dashboard.dashboardName });
    new CfnOutput(this, 'Tiers', {
      // At most 3,000 bytes (encodeStackEnv refuses more): an output holds it.
      value: JSON.stringify(config.tiers.input),
      description: 'The tiers the stack runs (effitag --stack <stack name> backfill|similar read this output)',
    });
    new CfnOutput(this, 'IntakeQueueUrl', {
      value: ingest.intake.queueUrl,
      description: 'The intake queue (effitag --stack <stack name> dlq list reads this output)',
    });
    new CfnOutput(this, 'QueueUrls', {
      value: queueUrlsJson,
      description: 'Tier → task queue URL (effitag --stack <stack name> backfill reads this output)',
    });
    new CfnOutput(this, 'BackfillStateMachine', {
      value: backfill.stateMachine.stateMachineArn,
      description: 'The backfill state machine (effitag --stack <stack name> backfill --remote reads this output)',
    });
    if (this.index)
      new CfnOutput(this, 'IndexTable', {
        value: this.index.table.tableName,
        description: 'The tag index (effitag --stack <stack name> search|gallery|show read this output)',
      });
    new CfnOutput(this, 'VectorBucket', {
      value: this.similar.bucketName,
      description: 'S3 Vectors bucket of the image embeddings (effitag --stack <stack name> similar|dupes read this output)',
    });
    new CfnOutput(this, 'VectorReaderPolicy', {
      value: this.similar.readerPolicy.managedPolicyArn,
      description: 'Attach to whoever runs effitag --stack <stack name> similar|dupes|gallery',
    });
    new CfnOutput(this, 'AlarmTopic', { value: observability.topic.topicArn });
  }
}

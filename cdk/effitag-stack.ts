/**
 * The EffiTag stack: composes the constructs, one per concern. All decisions come from the validated
 * configuration (cdk/config.ts); nothing here is specific to a tier name.
 */
import { AspectPriority, Aspects, CfnOutput, Duration, IgnoreMode, RemovalPolicy, Stack, type StackProps } from 'aws-cdk-lib';
import * as ec2 from 'aws-cdk-lib/aws-ec2';
import { DockerImageAsset, Platform } from 'aws-cdk-lib/aws-ecr-assets';
import * as ecs from 'aws-cdk-lib/aws-ecs';
import * as kms from 'aws-cdk-lib/aws-kms';
import * as lambda from 'aws-cdk-lib/aws-lambda';
import * as s3 from 'aws-cdk-lib/aws-s3';
import type { Construct, IConstruct } from 'constructs';
import type { EffiTagConfig } from './config.ts';
import { kmsGrant, type BucketAccess } from './constructs/access.ts';
import { GPU_WORKER_DOCKERFILE, gpuWorkerContextRules, REPO_ROOT } from './constructs/bundling.ts';
import { CpuRuntimeLayer, CpuTier, lambdaBatchTimeout } from './constructs/cpu-tier.ts';
import { GpuTier, gpuBatchTimeout } from './constructs/gpu-tier.ts';
import { Ingest } from './constructs/ingest.ts';
import { Observability } from './constructs/observability.ts';
import { TierQueue } from './constructs/tier-queues.ts';
import { Backfill } from './constructs/backfill.ts';

export interface EffiTagStackProps extends StackProps {
  config: EffiTagConfig;
}

/**
 * The cluster's capacity-provider association is created by an aspect of aws-cdk-lib at synthesis,
 * after every construct exists, and nothing makes the services wait for it: a first deploy could
 * create a service before its capacity provider is associated ("capacity provider not associated").
 * This aspect runs after that one and adds the dependency.
 */
function servicesAfterCapacityProviders(cluster: ecs.Cluster, services: ecs.Ec2Service[]): void {
  Aspects.of(cluster).add({
    visit(node: IConstruct) {
      if (node instanceof ecs.CfnClusterCapacityProviderAssociations) for (const s of services) s.node.addDependency(node);
    },
  }, { priority: AspectPriority.READONLY });
}

/** Lambda environment variables are limited to 4 KB in all. */
const MAX_TIERS_ENV = 3000;

export class EffiTagStack extends Stack {
  readonly tierQueues: Record<string, TierQueue> = {};
  readonly images: BucketAccess;
  readonly weights: BucketAccess;
  readonly prefixes: string[];
  readonly accessLogs?: s3.Bucket;
  readonly backfill: Backfill;

  constructor(scope: Construct, id: string, props: EffiTagStackProps) {
    super(scope, id, props);
    // The Distributed Map's ResultWriterV2 is used only under this flag (set before any child exists).
    this.node.setContext('@aws-cdk/aws-stepfunctions:useDistributedMapResultWriterV2', true);
    // Without it, an ECS service with no desiredCount is given DesiredCount: 1 in the template.
    this.node.setContext('@aws-cdk/aws-ecs:removeDefaultDesiredCount', true);
    const { config } = props;
    const tiersJson = JSON.stringify(config.tiers);
    if (tiersJson.length > MAX_TIERS_ENV) throw new Error(`${config.tiersFile}: the tiers configuration is ${tiersJson.length} bytes; at most ${MAX_TIERS_ENV} fit a Lambda environment`);

    // The bucket to tag: imported, or created with the safe defaults.
    this.prefixes = config.prefixes;
    if (!config.bucketName || !config.weightsBucket) {
      this.accessLogs = new s3.Bucket(this, 'AccessLogs', {
        blockPublicAccess: s3.BlockPublicAccess.BLOCK_ALL, enforceSSL: true, encryption: s3.BucketEncryption.S3_MANAGED,
        objectOwnership: s3.ObjectOwnership.BUCKET_OWNER_PREFERRED, removalPolicy: RemovalPolicy.RETAIN,
        lifecycleRules: [{ expiration: Duration.days(90) }],
      });
    }
    const accessLogs = this.accessLogs;
    let bucket: s3.IBucket;
    if (config.bucketName) {
      bucket = s3.Bucket.fromBucketName(this, 'Bucket', config.bucketName);
    } else {
      bucket = new s3.Bucket(this, 'Bucket', {
        blockPublicAccess: s3.BlockPublicAccess.BLOCK_ALL, enforceSSL: true, encryption: s3.BucketEncryption.S3_MANAGED,
        serverAccessLogsBucket: accessLogs, serverAccessLogsPrefix: 'images/',
        // Not versioned on purpose: every metadata write-back is a copy, which would store each image twice.
        versioned: false, removalPolicy: RemovalPolicy.RETAIN,
      });
    }
    const bucketKey = config.bucketKmsKeyArn ? kms.Key.fromKeyArn(this, 'BucketKey', config.bucketKmsKeyArn) : undefined;
    const images: BucketAccess = { bucket, prefix: '', grantKms: kmsGrant(bucketKey) };
    this.images = images;

    const weightsBucket = config.weightsBucket
      ? s3.Bucket.fromBucketName(this, 'WeightsBucket', config.weightsBucket)
      : new s3.Bucket(this, 'Weights', {
        blockPublicAccess: s3.BlockPublicAccess.BLOCK_ALL, enforceSSL: true, encryption: s3.BucketEncryption.S3_MANAGED,
        versioned: true, removalPolicy: RemovalPolicy.RETAIN, serverAccessLogsBucket: accessLogs, serverAccessLogsPrefix: 'weights/',
      });
    const weights: BucketAccess = { bucket: weightsBucket, prefix: config.weightsPrefix };
    this.weights = weights;
    const weightsLocation = `s3://${weightsBucket.bucketName}/${config.weightsPrefix}`;

    for (const [name, tier] of Object.entries(config.tiers.tiers)) {
      const batchTimeout = tier.compute.target === 'lambda-cpu' ? lambdaBatchTimeout(tier) : gpuBatchTimeout(tier);
      this.tierQueues[name] = new TierQueue(this, `Tier-${name}`, { tierName: name, tier, batchTimeout });
    }
    const environment = {
      EFFITAG_TIERS: tiersJson,
      EFFITAG_QUEUE_URLS: this.toJsonString(Object.fromEntries(Object.entries(this.tierQueues).map(([n, q]) => [n, q.queue.queueUrl]))),
      EFFITAG_WEIGHTS: weightsLocation,
      EFFITAG_LOG_LEVEL: 'info',
    };

    const ingest = new Ingest(this, 'Ingest', {
      bucket: images, prefixes: config.prefixes, weights, runtimeEnvironment: environment,
      tierQueues: Object.fromEntries(Object.entries(this.tierQueues).map(([n, q]) => [n, q.queue])),
    });

    const gpuTiers = Object.entries(config.tiers.tiers).filter(([, t]) => t.compute.target === 'ecs-gpu');
    const cpuTiers = Object.entries(config.tiers.tiers).filter(([, t]) => t.compute.target === 'lambda-cpu');
    const observed: Record<string, { queue: TierQueue['queue']; dlq: TierQueue['dlq']; service?: ecs.Ec2Service; fn?: lambda.IFunction }> = {};
    for (const [n, q] of Object.entries(this.tierQueues)) observed[n] = { queue: q.queue, dlq: q.dlq };

    let cluster: ecs.Cluster | undefined;
    if (gpuTiers.length) {
      const vpc = config.vpcId
        ? ec2.Vpc.fromLookup(this, 'Vpc', { vpcId: config.vpcId })
        : new ec2.Vpc(this, 'Vpc', {
          // Minimal: public subnets only, no NAT gateway (~$33/month each); instances accept no inbound traffic.
          maxAzs: 2, natGateways: 0, subnetConfiguration: [{ name: 'public', subnetType: ec2.SubnetType.PUBLIC }],
          gatewayEndpoints: { S3: { service: ec2.GatewayVpcEndpointAwsService.S3 } },
          // Rejected traffic only: what a security review needs, at a fraction of full flow-log cost.
          flowLogs: { rejected: { destination: ec2.FlowLogDestination.toCloudWatchLogs(), trafficType: ec2.FlowLogTrafficType.REJECT } },
        });
      cluster = new ecs.Cluster(this, 'Cluster', { vpc, containerInsightsV2: ecs.ContainerInsights.ENABLED });
      const image = new DockerImageAsset(this, 'WorkerImage', {
        directory: REPO_ROOT, file: GPU_WORKER_DOCKERFILE, platform: Platform.LINUX_AMD64,
        // The Dockerfile's own ignore list: the asset (and so the tasks) changes only with the worker.
        ignoreMode: IgnoreMode.DOCKER, exclude: gpuWorkerContextRules(),
      });
      const services: ecs.Ec2Service[] = [];
      for (const [name, tier] of gpuTiers) {
        const gpu = new GpuTier(this, `Gpu-${name}`, {
          tierName: name, tier: tier as never, cluster, vpc, image, queue: this.tierQueues[name].queue, dlq: this.tierQueues[name].dlq,
          bucket: images, prefixes: config.prefixes, weights, environment,
        });
        observed[name].service = gpu.service;
        services.push(gpu.service);
      }
      servicesAfterCapacityProviders(cluster, services);
    }
    const layers = new Map<string, lambda.ILayerVersion>();
    for (const [name, tier] of cpuTiers) {
      if (tier.compute.target !== 'lambda-cpu') continue;
      const arch = tier.compute.architecture === 'arm64' ? lambda.Architecture.ARM_64 : lambda.Architecture.X86_64;
      if (!layers.has(arch.name)) layers.set(arch.name, new CpuRuntimeLayer(this, `CpuRuntime-${arch.name}`, { architecture: arch }).layer);
      const cpu = new CpuTier(this, `Cpu-${name}`, {
        tierName: name, tier: tier as never, queue: this.tierQueues[name].queue, dlq: this.tierQueues[name].dlq, bucket: images, prefixes: config.prefixes,
        weights, environment, layer: layers.get(arch.name)!,
      });
      observed[name].fn = cpu.fn;
    }

    const backfill = new Backfill(this, 'Backfill', {
      bucket: images, prefixes: config.prefixes, weights, environment, accessLogs: this.accessLogs,
      tierQueues: Object.fromEntries(Object.entries(this.tierQueues).map(([n, q]) => [n, q.queue])),
    });
    this.backfill = backfill;

    const observability = new Observability(this, 'Observability', {
      tiers: observed, intake: ingest.intake, intakeDlq: ingest.intakeDlq, router: ingest.router,
      clusterName: cluster?.clusterName, alarmEmail: config.alarmEmail, backfill: backfill.stateMachine,
    });

    new CfnOutput(this, 'BucketName', { value: bucket.bucketName, description: 'Bucket whose uploads are tagged' });
    new CfnOutput(this, 'WeightsLocation', { value: weightsLocation, description: 'Publish weights here: effitag weights publish --weights DIR <this>' });
    new CfnOutput(this, 'DashboardName', { value: observability.dashboard.dashboardName });
    new CfnOutput(this, 'IntakeQueueUrl', { value: ingest.intake.queueUrl, description: 'effitag dlq list|redrive --aws --intake-url <this>' });
    new CfnOutput(this, 'QueueUrls', { value: environment.EFFITAG_QUEUE_URLS, description: 'EFFITAG_QUEUE_URLS for effitag backfill --aws' });
    new CfnOutput(this, 'BackfillStateMachine', { value: backfill.stateMachine.stateMachineArn, description: 'effitag backfill --remote --state-machine <this>' });
    new CfnOutput(this, 'AlarmTopic', { value: observability.topic.topicArn });
  }
}

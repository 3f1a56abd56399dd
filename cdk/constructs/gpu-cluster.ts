/**
 * What every GPU tier shares: the VPC (imported, or a minimal one), the ECS cluster and the worker
 * image asset. Created in the stack's own scope (see storage.ts: logical IDs must not move).
 */
import { Aspects, AspectPriority, IgnoreMode, type Stack } from 'aws-cdk-lib';
import * as ec2 from 'aws-cdk-lib/aws-ec2';
import { DockerImageAsset, Platform } from 'aws-cdk-lib/aws-ecr-assets';
import * as ecs from 'aws-cdk-lib/aws-ecs';
import type { IConstruct } from 'constructs';
import { GPU_WORKER_DOCKERFILE, gpuWorkerContextRules, REPO_ROOT } from './bundling.ts';

/** What the GPU tiers share: the VPC, the ECS cluster and the worker image. */
export interface GpuCluster {
  /** The given VPC, or a created minimal one (public subnets, no NAT). */
  readonly vpc: ec2.IVpc;
  /** The ECS cluster every GPU tier's service runs in. */
  readonly cluster: ecs.Cluster;
  /** The GPU worker image (containers/gpu-worker/Dockerfile). */
  readonly image: DockerImageAsset;
}

export function createGpuCluster(stack: Stack, props: { vpcId?: string }): GpuCluster {
  const vpc = props.vpcId
    ? ec2.Vpc.fromLookup(stack, 'Vpc', { vpcId: props.vpcId })
    : new ec2.Vpc(stack, 'Vpc', {
        // Minimal: public subnets only, no NAT gateway (~$33/month each); instances accept no inbound traffic.
        maxAzs: 2,
        natGateways: 0,
        subnetConfiguration: [{ name: 'public', subnetType: ec2.SubnetType.PUBLIC }],
        gatewayEndpoints: { S3: { service: ec2.GatewayVpcEndpointAwsService.S3 } },
        // Rejected traffic only: what a security review needs, at a fraction of full flow-log cost.
        flowLogs: { rejected: { destination: ec2.FlowLogDestination.toCloudWatchLogs(), trafficType: ec2.FlowLogTrafficType.REJECT } },
      });
  const cluster = new ecs.Cluster(stack, 'Cluster', { vpc, containerInsightsV2: ecs.ContainerInsights.ENABLED });
  const image = new DockerImageAsset(stack, 'WorkerImage', {
    directory: REPO_ROOT,
    file: GPU_WORKER_DOCKERFILE,
    platform: Platform.LINUX_AMD64,
    // The Dockerfile's own ignore list: the asset (and so the tasks) changes only with the worker.
    ignoreMode: IgnoreMode.DOCKER,
    exclude: gpuWorkerContextRules(),
  });
  return { vpc, cluster, image };
}

/**
 * The cluster's capacity-provider association is created by an aspect of aws-cdk-lib at synthesis,
 * after every construct exists, and nothing makes the services wait for it: a first deploy could
 * create a service before its capacity provider is associated ("capacity provider not associated").
 * This aspect runs after that one and adds the dependency.
 */
export function servicesAfterCapacityProviders(cluster: ecs.Cluster, services: ecs.Ec2Service[]): void {
  Aspects.of(cluster).add(
    {
      visit(node: IConstruct) {
        if (node instanceof ecs.CfnClusterCapacityProviderAssociations) for (const s of services) s.node.addDependency(node);
      },
    },
    { priority: AspectPriority.READONLY },
  );
}

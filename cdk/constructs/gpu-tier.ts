/**
 * A GPU tier: an Auto Scaling group of GPU instances (ECS-optimized Amazon Linux 2023 GPU AMI, spot or
 * on-demand) behind an ECS capacity provider with managed scaling and minimum 0 (no desiredCapacity:
 * it would reset the group on every deploy), and an ECS service running the worker image with one GPU
 * per task. The service scales on the queue's backlog (visible + in flight) with exact-capacity steps:
 * one message starts one task from zero, an empty backlog returns to zero; no CPU-based scaling.
 */
import { Duration } from 'aws-cdk-lib';
import * as appscaling from 'aws-cdk-lib/aws-applicationautoscaling';
import * as autoscaling from 'aws-cdk-lib/aws-autoscaling';
import * as cw from 'aws-cdk-lib/aws-cloudwatch';
import * as ec2 from 'aws-cdk-lib/aws-ec2';
import type { DockerImageAsset } from 'aws-cdk-lib/aws-ecr-assets';
import * as ecs from 'aws-cdk-lib/aws-ecs';
import * as iam from 'aws-cdk-lib/aws-iam';
import * as logs from 'aws-cdk-lib/aws-logs';
import type * as sqs from 'aws-cdk-lib/aws-sqs';
import { Construct } from 'constructs';
import { GPU_INSTANCES } from '../../tiers/prices.ts';
import type { Tier } from '../../tiers/schema.ts';
import type { BucketAccess } from './access.ts';
import { grantWorker } from './worker-permissions.ts';

/** Time one GPU batch may take (download, decode, inference, write-back), with room for weights at start. */
export function gpuBatchTimeout(tier: Tier): Duration {
  return Duration.seconds(Math.max(120, 60 + tier.batchSize * 2));
}

/** Backlog → exact task count: 1 task from the first message, one more per 200 messages, up to maxTasks. */
export function backlogSteps(maxTasks: number): appscaling.ScalingInterval[] {
  const steps: appscaling.ScalingInterval[] = [{ upper: 1, change: 0 }, { lower: 1, upper: maxTasks > 1 ? 200 : undefined, change: 1 }];
  for (let n = 2; n <= maxTasks; n++) steps.push({ lower: 200 * (n - 1), upper: n < maxTasks ? 200 * n : undefined, change: n });
  return steps;
}

export interface GpuTierProps {
  tierName: string;
  tier: Tier & { compute: { target: 'ecs-gpu' } };
  cluster: ecs.Cluster;
  vpc: ec2.IVpc;
  image: DockerImageAsset;
  queue: sqs.IQueue;
  bucket: BucketAccess;
  prefixes: string[];
  weights: BucketAccess;
  environment: Record<string, string>;
}

export class GpuTier extends Construct {
  readonly service: ecs.Ec2Service;
  readonly autoScalingGroup: autoscaling.AutoScalingGroup;
  readonly capacityProvider: ecs.AsgCapacityProvider;

  constructor(scope: Construct, id: string, props: GpuTierProps) {
    super(scope, id);
    const { tier } = props;
    const { instanceType, capacity, maxTasks } = tier.compute;
    const securityGroup = new ec2.SecurityGroup(this, 'Instances', { vpc: props.vpc, allowAllOutbound: true, description: `EffiTag ${props.tierName} GPU instances: no inbound` });
    const launchTemplate = new ec2.LaunchTemplate(this, 'LaunchTemplate', {
      instanceType: new ec2.InstanceType(instanceType),
      machineImage: ecs.EcsOptimizedImage.amazonLinux2023(ecs.AmiHardwareType.GPU),
      userData: ec2.UserData.forLinux(),
      securityGroup,
      // The ECS agent's permissions are added to this role by the capacity provider.
      role: new iam.Role(this, 'InstanceRole', { assumedBy: new iam.ServicePrincipal('ec2.amazonaws.com'), description: `EffiTag ${props.tierName} GPU instances (ECS agent)` }),
      requireImdsv2: true,
      associatePublicIpAddress: true,
      blockDevices: [{ deviceName: '/dev/xvda', volume: ec2.BlockDeviceVolume.ebs(60, { encrypted: true, volumeType: ec2.EbsDeviceVolumeType.GP3 }) }],
    });
    this.autoScalingGroup = new autoscaling.AutoScalingGroup(this, 'Group', {
      vpc: props.vpc,
      vpcSubnets: { subnetType: ec2.SubnetType.PUBLIC },
      minCapacity: 0,
      maxCapacity: maxTasks,
      // Spot through a mixed-instances policy (a launch template may not request spot itself here).
      ...(capacity === 'spot'
        ? { mixedInstancesPolicy: { launchTemplate, instancesDistribution: { onDemandBaseCapacity: 0, onDemandPercentageAboveBaseCapacity: 0, spotAllocationStrategy: autoscaling.SpotAllocationStrategy.PRICE_CAPACITY_OPTIMIZED } } }
        : { launchTemplate }),
      capacityRebalance: capacity === 'spot',
    });
    this.capacityProvider = new ecs.AsgCapacityProvider(this, 'Capacity', {
      autoScalingGroup: this.autoScalingGroup,
      enableManagedScaling: true,
      targetCapacityPercent: 100,
      minimumScalingStepSize: 1,
      enableManagedTerminationProtection: true,
      machineImageType: ecs.MachineImageType.AMAZON_LINUX_2,
    });
    props.cluster.addAsgCapacityProvider(this.capacityProvider);

    const memoryGiB = GPU_INSTANCES[instanceType]?.memoryGiB ?? 16;
    const task = new ecs.Ec2TaskDefinition(this, 'Task');
    task.addContainer('worker', {
      image: ecs.ContainerImage.fromDockerImageAsset(props.image),
      gpuCount: 1,
      memoryReservationMiB: Math.floor(memoryGiB * 1024 * 0.75),
      environment: { ...props.environment, EFFITAG_TIER: props.tierName, TF_FORCE_GPU_ALLOW_GROWTH: 'true', EFFITAG_TFJS_BACKEND: 'tensorflow-gpu' },
      logging: ecs.LogDrivers.awsLogs({ streamPrefix: props.tierName, logGroup: new logs.LogGroup(this, 'Logs', { retention: logs.RetentionDays.ONE_MONTH }) }),
      // SIGTERM → finish the batch in hand (see pipeline/shutdown.ts) before ECS sends SIGKILL.
      stopTimeout: Duration.seconds(120),
    });
    grantWorker(task.taskRole, { bucket: props.bucket, prefixes: props.prefixes, weights: props.weights, queue: props.queue });

    this.service = new ecs.Ec2Service(this, 'Service', {
      cluster: props.cluster,
      taskDefinition: task,
      desiredCount: 0,
      minHealthyPercent: 0,
      maxHealthyPercent: 100,
      capacityProviderStrategies: [{ capacityProvider: this.capacityProvider.capacityProviderName, weight: 1 }],
      circuitBreaker: { rollback: true },
    });

    const backlog = new cw.MathExpression({
      expression: 'visible + inflight',
      usingMetrics: {
        visible: props.queue.metricApproximateNumberOfMessagesVisible({ period: Duration.minutes(1), statistic: 'Maximum' }),
        inflight: props.queue.metricApproximateNumberOfMessagesNotVisible({ period: Duration.minutes(1), statistic: 'Maximum' }),
      },
      period: Duration.minutes(1),
      label: `${props.tierName} backlog`,
    });
    const scaling = this.service.autoScaleTaskCount({ minCapacity: 0, maxCapacity: maxTasks });
    scaling.scaleOnMetric('Backlog', {
      metric: backlog,
      scalingSteps: backlogSteps(maxTasks),
      adjustmentType: appscaling.AdjustmentType.EXACT_CAPACITY,
      evaluationPeriods: 1,
      cooldown: Duration.minutes(2),
    });
  }
}

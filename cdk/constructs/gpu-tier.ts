/**
 * A GPU tier: an Auto Scaling group of GPU instances (ECS-optimized Amazon Linux 2023 GPU AMI, spot or
 * on-demand) behind an ECS capacity provider with managed scaling and minimum 0 (no desiredCapacity:
 * it would reset the group on every deploy), and an ECS service running the worker image with one GPU
 * per task. The service scales on the queue's backlog (visible + in flight) with exact-capacity steps
 * of one alarm: one message starts one task from zero, an empty backlog returns to zero; no CPU-based
 * scaling. (cdk/scaling-model.ts evaluates the synthesized alarms and steps; test/cdk-scaling.test.ts.)
 */
import { Duration, Stack } from 'aws-cdk-lib';
import * as appscaling from 'aws-cdk-lib/aws-applicationautoscaling';
import * as autoscaling from 'aws-cdk-lib/aws-autoscaling';
import * as cw from 'aws-cdk-lib/aws-cloudwatch';
import * as cwActions from 'aws-cdk-lib/aws-cloudwatch-actions';
import * as ec2 from 'aws-cdk-lib/aws-ec2';
import type { DockerImageAsset } from 'aws-cdk-lib/aws-ecr-assets';
import * as ecs from 'aws-cdk-lib/aws-ecs';
import * as iam from 'aws-cdk-lib/aws-iam';
import * as logs from 'aws-cdk-lib/aws-logs';
import type * as sqs from 'aws-cdk-lib/aws-sqs';
import { Construct } from 'constructs';
import { GPU_INSTANCES, spotAlternatives } from '../../tiers/prices.ts';
import { encodeTierEnv } from '../../pipeline/runtime-config.ts';
import type { Tier, TierOf } from '../../tiers/schema.ts';
import { grantWorker, type WorkerResources } from './worker-permissions.ts';

/**
 * The host directory that keeps the CUDA JIT cache between tasks on one instance: TensorFlow's
 * release builds carry machine code up to sm_75, so A10G (sm_86) and L4 (sm_89) compile PTX at first
 * use, for minutes. Owned by the container's user (uid 1000).
 */
export const CUDA_CACHE_HOST_PATH = '/var/cache/effitag-cuda';
const CUDA_CACHE_PATH = '/var/cache/cuda';
/** CUDA's largest allowed JIT cache (4 GiB); its 256 MiB default evicts TensorFlow's kernels. */
const CUDA_CACHE_MAXSIZE = String(4 * 1024 ** 3);

/** Time one GPU batch may take (download, decode, inference, write-back), with room for weights at start. */
export function gpuBatchTimeout(tier: Tier): Duration {
  return Duration.seconds(Math.max(120, 60 + tier.batchSize * 2));
}

/** Messages of backlog per task beyond the first: n tasks from 200·(n−1) messages. */
export const MESSAGES_PER_TASK = 200;

/**
 * Backlog → exact task count, as the steps of ONE alarm whose threshold is 0 (`backlog >= 0`, so it
 * is in ALARM whenever the queue reports, and bounds relative to 0 are absolute backlogs): [0, 1) → 0,
 * [1, 200) → 1, [200, 400) → 2, …, [200·(max−1), ∞) → max. Above the threshold Application Auto
 * Scaling reads a step's lower bound inclusive and its upper exclusive, so every integer backlog has
 * exactly one step. Why one alarm: aws-cdk-lib's scaleOnMetric splits exact-capacity steps into a
 * lower and an upper alarm, and two alarms in ALARM at once each apply their own count (at their
 * shared threshold the count flapped, and the lower alarm's relative bounds set 0 tasks for a backlog
 * of 1 on a tier with more than one task). Target tracking on backlog per task cannot start the first
 * task (no tasks, no ratio).
 */
export function backlogSteps(maxTasks: number): appscaling.ScalingInterval[] {
  const steps: appscaling.ScalingInterval[] = [{ lower: 0, upper: 1, change: 0 }];
  for (let n = 1; n <= maxTasks; n++) {
    const lower = n === 1 ? 1 : MESSAGES_PER_TASK * (n - 1);
    steps.push({ lower, upper: n < maxTasks ? MESSAGES_PER_TASK * n : undefined, change: n });
  }
  return steps;
}

/** Properties of a {@link GpuTier}. */
export interface GpuTierProps extends WorkerResources {
  /** The tier's name in the tiers file. */
  readonly tierName: string;
  /** The tier, as `parseTiers` resolved it. */
  readonly tier: TierOf<'ecs-gpu'>;
  /** The ECS cluster the tier's service runs in. */
  readonly cluster: ecs.Cluster;
  /** The VPC the tier's instances start in. */
  readonly vpc: ec2.IVpc;
  /** The GPU worker image. */
  readonly image: DockerImageAsset;
  /** The tier's task queue (its backlog scales the service). */
  readonly queue: sqs.IQueue;
  /** The runtime contract's environment (pipeline/runtime-config.ts `encodeStackEnv`). */
  readonly environment: Record<string, string>;
}

export class GpuTier extends Construct {
  readonly service: ecs.Ec2Service;
  readonly autoScalingGroup: autoscaling.AutoScalingGroup;
  readonly capacityProvider: ecs.AsgCapacityProvider;

  constructor(scope: Construct, id: string, props: GpuTierProps) {
    super(scope, id);
    const { tier } = props;
    const { instanceType, capacity, maxTasks } = tier.compute;
    const instanceTypes =
      capacity === 'spot' ? [instanceType, ...(tier.compute.alternativeInstanceTypes ?? spotAlternatives(instanceType))] : [instanceType];
    const securityGroup = new ec2.SecurityGroup(this, 'Instances', {
      vpc: props.vpc,
      allowAllOutbound: true,
      description: `EffiTag ${props.tierName} GPU instances: no inbound`,
    });
    const userData = ec2.UserData.forLinux();
    userData.addCommands(`mkdir -p ${CUDA_CACHE_HOST_PATH}`, `chown 1000:1000 ${CUDA_CACHE_HOST_PATH}`);
    // On a spot interruption notice the agent drains the instance: its task gets SIGTERM and finishes
    // its batch within the two minutes. (aws-cdk-lib's spotInstanceDraining option writes this only
    // for groups with a spotPrice, never for a mixed-instances policy, so it is written here.)
    if (capacity === 'spot') userData.addCommands('echo ECS_ENABLE_SPOT_INSTANCE_DRAINING=true >> /etc/ecs/ecs.config');
    const instanceRole = new iam.Role(this, 'InstanceRole', {
      assumedBy: new iam.ServicePrincipal('ec2.amazonaws.com'),
      description: `EffiTag ${props.tierName} GPU instances (ECS agent)`,
    });
    // Draining is the agent's own call (UpdateContainerInstancesState → DRAINING), which ECS's managed
    // instance policy grants and the capacity provider's generated policy does not: without it the
    // interruption notice is logged, the call is denied, and the task is killed mid-batch two minutes
    // later. Scoped to this cluster's container instances by the ecs:cluster condition.
    if (capacity === 'spot')
      instanceRole.addToPrincipalPolicy(
        new iam.PolicyStatement({
          sid: 'SpotInstanceDraining',
          actions: ['ecs:UpdateContainerInstancesState'],
          resources: ['*'],
          conditions: { ArnEquals: { 'ecs:cluster': props.cluster.clusterArn } },
        }),
      );
    const launchTemplate = new ec2.LaunchTemplate(this, 'LaunchTemplate', {
      instanceType: new ec2.InstanceType(instanceType),
      machineImage: ecs.EcsOptimizedImage.amazonLinux2023(ecs.AmiHardwareType.GPU),
      userData,
      securityGroup,
      // The ECS agent's permissions are added to this role by the capacity provider.
      role: instanceRole,
      requireImdsv2: true,
      // One hop: the instance (its ECS agent) reaches IMDS, containers behind the Docker bridge do
      // not, so a task cannot take the instance role's credentials (it has its own task role).
      httpPutResponseHopLimit: 1,
      associatePublicIpAddress: true,
      blockDevices: [
        { deviceName: '/dev/xvda', volume: ec2.BlockDeviceVolume.ebs(60, { encrypted: true, volumeType: ec2.EbsDeviceVolumeType.GP3 }) },
      ],
    });
    this.autoScalingGroup = new autoscaling.AutoScalingGroup(this, 'Group', {
      vpc: props.vpc,
      vpcSubnets: { subnetType: ec2.SubnetType.PUBLIC },
      minCapacity: 0,
      maxCapacity: maxTasks,
      // Spot through a mixed-instances policy (a launch template may not request spot itself here),
      // over several instance types (one type's spot pools run
      // dry often; price-capacity-optimized picks among the pools that have capacity).
      ...(capacity === 'spot'
        ? {
            mixedInstancesPolicy: {
              launchTemplate,
              launchTemplateOverrides: instanceTypes.map((t) => ({ instanceType: new ec2.InstanceType(t) })),
              instancesDistribution: {
                onDemandBaseCapacity: 0,
                onDemandPercentageAboveBaseCapacity: 0,
                spotAllocationStrategy: autoscaling.SpotAllocationStrategy.PRICE_CAPACITY_OPTIMIZED,
              },
            },
          }
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

    // The task must fit the smallest instance type the group may launch.
    const memoryGiB = Math.min(...instanceTypes.map((t) => GPU_INSTANCES[t]?.memoryGiB ?? 16));
    const task = new ecs.Ec2TaskDefinition(this, 'Task');
    task.addVolume({ name: 'cuda-cache', host: { sourcePath: CUDA_CACHE_HOST_PATH } });
    const container = task.addContainer('worker', {
      image: ecs.ContainerImage.fromDockerImageAsset(props.image),
      gpuCount: 1,
      memoryReservationMiB: Math.floor(memoryGiB * 1024 * 0.75),
      environment: {
        ...props.environment,
        ...encodeTierEnv({ tier: props.tierName, tfjsBackend: 'tensorflow-gpu' }),
        TF_FORCE_GPU_ALLOW_GROWTH: 'true',
        CUDA_CACHE_PATH,
        CUDA_CACHE_MAXSIZE,
        // With IMDS out of the container's reach (hop limit 1), the SDK cannot ask it for the region.
        AWS_REGION: Stack.of(this).region,
        AWS_DEFAULT_REGION: Stack.of(this).region,
      },
      logging: ecs.LogDrivers.awsLogs({
        streamPrefix: props.tierName,
        logGroup: new logs.LogGroup(this, 'Logs', { retention: logs.RetentionDays.ONE_MONTH }),
      }),
      // SIGTERM → finish the batch in hand (see pipeline/shutdown.ts) before ECS sends SIGKILL.
      stopTimeout: Duration.seconds(120),
    });
    container.addMountPoints({ sourceVolume: 'cuda-cache', containerPath: CUDA_CACHE_PATH, readOnly: false });
    grantWorker(task.taskRole, {
      bucket: props.bucket,
      prefixes: props.prefixes,
      weights: props.weights,
      queue: props.queue,
      dlq: props.dlq,
      index: props.index,
    });

    this.service = new ecs.Ec2Service(this, 'Service', {
      cluster: props.cluster,
      taskDefinition: task,
      // No desiredCount: the backlog scaling owns the task count. A fixed count in the template would
      // reset it on every deploy that changes the task (nearly every image change), stopping work
      // mid-backlog. (A new service starts at 1 task; the empty-backlog step returns it to 0.)
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
    const policy = new appscaling.StepScalingAction(this, 'BacklogPolicy', {
      scalingTarget: scaling,
      adjustmentType: appscaling.AdjustmentType.EXACT_CAPACITY,
      cooldown: Duration.minutes(2),
      metricAggregationType: appscaling.MetricAggregationType.MAXIMUM,
    });
    for (const step of backlogSteps(maxTasks))
      policy.addAdjustment({ lowerBound: step.lower, upperBound: step.upper, adjustment: step.change });
    const alarm = new cw.Alarm(this, 'BacklogAlarm', {
      metric: backlog,
      threshold: 0,
      comparisonOperator: cw.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
      evaluationPeriods: 1,
      // Missing data (an SQS queue idle for 6 hours stops reporting) leaves the count alone: by then
      // the [0, 1) step has already set it to 0.
      treatMissingData: cw.TreatMissingData.MISSING,
      alarmDescription: `EffiTag ${props.tierName}: backlog scaling. In ALARM whenever the queue reports (threshold 0); the policy's steps pick the task count, 0 included. Not an incident.`,
    });
    // Application Auto Scaling actions repeat every minute while the alarm stays in ALARM, so the
    // steps follow the backlog without the alarm changing state.
    alarm.addAlarmAction(new cwActions.ApplicationScalingAction(policy));
  }
}

/**
 * The real `PreflightAws`: CloudFormation, S3, EC2, Lambda and Service Quotas through the AWS SDK, with
 * the same retry settings as the deployed clients. Read-only calls only. Not exercised by the tests
 * (no AWS account here); the logic it feeds is pipeline/preflight.ts, tested with a fake.
 */
import { CloudFormationClient, paginateListStackResources } from '@aws-sdk/client-cloudformation';
import {
  DescribeAvailabilityZonesCommand,
  DescribeInstanceTypesCommand,
  DescribeSubnetsCommand,
  EC2Client,
  paginateDescribeInstanceTypeOfferings,
} from '@aws-sdk/client-ec2';
import { GetAccountSettingsCommand, LambdaClient } from '@aws-sdk/client-lambda';
import { GetBucketNotificationConfigurationCommand, HeadObjectCommand } from '@aws-sdk/client-s3';
import { GetAWSDefaultServiceQuotaCommand, GetServiceQuotaCommand, ServiceQuotasClient } from '@aws-sdk/client-service-quotas';
import type { BucketNotificationConfig, HeadResult, PreflightAws, StackResource } from '../preflight.ts';
import { s3Client } from './clients.ts';
import { describeStackOutputs } from './stack-handle.ts';

const status = (err: unknown) => (err as { $metadata?: { httpStatusCode?: number } }).$metadata?.httpStatusCode;
const named = (err: unknown, ...names: string[]) => names.includes((err as { name?: string }).name ?? '');

export function awsPreflight(region?: string): PreflightAws {
  const common = { ...(region ? { region } : {}), maxAttempts: 4 };
  const cfn = new CloudFormationClient(common);
  const ec2 = new EC2Client(common);
  const lambda = new LambdaClient(common);
  const quotas = new ServiceQuotasClient(common);
  const s3 = s3Client({ region: region ?? process.env.AWS_REGION ?? process.env.AWS_DEFAULT_REGION });

  return {
    // The one place stack outputs are read (pipeline/aws/stack-handle.ts): `--stack NAME` reads them there too.
    stackOutputs: (stackName) => describeStackOutputs(stackName, { region }),

    async stackResources(stackName) {
      const resources: StackResource[] = [];
      for await (const page of paginateListStackResources({ client: cfn }, { StackName: stackName }))
        for (const r of page.StackResourceSummaries ?? [])
          resources.push({ logicalId: r.LogicalResourceId ?? '', type: r.ResourceType ?? '', physicalId: r.PhysicalResourceId });
      return resources;
    },

    async headObject(bucket, key): Promise<HeadResult> {
      try {
        await s3.send(new HeadObjectCommand({ Bucket: bucket, Key: key }));
        return 'present';
      } catch (err) {
        if (status(err) === 404 || named(err, 'NotFound', 'NoSuchKey')) return 'missing';
        if (status(err) === 403) return 'denied';
        throw err;
      }
    },

    async subnetZones({ subnetIds, vpcId }) {
      const out = await ec2.send(
        new DescribeSubnetsCommand(subnetIds?.length ? { SubnetIds: subnetIds } : { Filters: [{ Name: 'vpc-id', Values: [vpcId ?? ''] }] }),
      );
      return (out.Subnets ?? []).map((s) => ({ subnetId: s.SubnetId ?? '', zone: s.AvailabilityZone ?? '' }));
    },

    async availabilityZones() {
      const out = await ec2.send(
        new DescribeAvailabilityZonesCommand({
          Filters: [
            { Name: 'zone-type', Values: ['availability-zone'] },
            { Name: 'state', Values: ['available'] },
          ],
        }),
      );
      return (out.AvailabilityZones ?? []).map((z) => z.ZoneName ?? '').filter(Boolean);
    },

    async instanceTypeOfferings(types, zones) {
      const offered: { instanceType: string; zone: string }[] = [];
      if (!types.length || !zones.length) return offered;
      const pages = paginateDescribeInstanceTypeOfferings(
        { client: ec2 },
        {
          LocationType: 'availability-zone',
          Filters: [
            { Name: 'instance-type', Values: types },
            { Name: 'location', Values: zones },
          ],
        },
      );
      for await (const page of pages)
        for (const o of page.InstanceTypeOfferings ?? []) offered.push({ instanceType: String(o.InstanceType), zone: o.Location ?? '' });
      return offered;
    },

    async instanceVcpus(types) {
      // biome-ignore lint/suspicious/noExplicitAny: the SDK's InstanceType is an enum of known names; a tiers file may name a newer one
      const out = await ec2.send(new DescribeInstanceTypesCommand({ InstanceTypes: types as any[] }));
      return Object.fromEntries((out.InstanceTypes ?? []).map((t) => [String(t.InstanceType), t.VCpuInfo?.DefaultVCpus ?? 0]));
    },

    async lambdaAccountSettings() {
      const out = await lambda.send(new GetAccountSettingsCommand({}));
      return {
        concurrentExecutions: out.AccountLimit?.ConcurrentExecutions ?? 0,
        unreservedConcurrentExecutions: out.AccountLimit?.UnreservedConcurrentExecutions ?? 0,
      };
    },

    async serviceQuota(code) {
      try {
        const out = await quotas.send(new GetServiceQuotaCommand({ ServiceCode: 'ec2', QuotaCode: code }));
        return out.Quota?.Value;
      } catch (err) {
        if (named(err, 'NoSuchResourceException')) {
          // Never changed in this account: the AWS default applies.
          const out = await quotas.send(new GetAWSDefaultServiceQuotaCommand({ ServiceCode: 'ec2', QuotaCode: code }));
          return out.Quota?.Value;
        }
        if (named(err, 'AccessDeniedException', 'NoAvailableOrganizationException')) return undefined;
        throw err;
      }
    },

    async bucketNotifications(bucket): Promise<BucketNotificationConfig> {
      const out = await s3.send(new GetBucketNotificationConfigurationCommand({ Bucket: bucket }));
      return {
        QueueConfigurations: out.QueueConfigurations,
        TopicConfigurations: out.TopicConfigurations,
        LambdaFunctionConfigurations: out.LambdaFunctionConfigurations,
        ...(out.EventBridgeConfiguration ? { EventBridgeConfiguration: out.EventBridgeConfiguration } : {}),
      };
    },
  };
}

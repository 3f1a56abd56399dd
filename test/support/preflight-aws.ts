/**
 * A preflight AWS that answers as a fresh account with the stack deployed (weights at
 * s3://wb/weights/, two tier queues) and nothing else in the way; `over` changes any answer.
 */
import type { PreflightAws } from '../../pipeline/preflight.ts';

export function deployedStackAws(over: Partial<PreflightAws> = {}): PreflightAws {
  const none = async () => [];
  return {
    stackOutputs: async () => ({ WeightsLocation: 's3://wb/weights/', QueueUrls: JSON.stringify({ fast: 'q1', lite: 'q2' }) }),
    stackResources: none,
    headObject: async () => 'missing',
    subnetZones: none,
    availabilityZones: none,
    instanceTypeOfferings: none,
    instanceVcpus: async () => ({}),
    lambdaAccountSettings: async () => ({ concurrentExecutions: 1000, unreservedConcurrentExecutions: 1000 }),
    serviceQuota: async () => undefined,
    bucketNotifications: async () => ({}),
    ...over,
  };
}

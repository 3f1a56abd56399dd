/**
 * Default prices for the cost model. On-demand Linux list prices for us-east-1 as published on the
 * AWS pricing pages (PRICE_LIST_DATE); spot is modelled as a fraction of on-demand because spot prices
 * move hourly. Every figure can be overridden in the tiers file (`prices`), and `effitag tiers cost`
 * prints the figures it used.
 */
export const PRICE_LIST_DATE = '2025-06 (us-east-1, on-demand, Linux)';

export interface GpuInstance {
  /** $ per hour, on demand. */
  onDemand: number;
  gpus: number;
  gpu: string;
  vcpus: number;
  memoryGiB: number;
}

/** GPU instance types the ECS GPU tier supports (NVIDIA, CUDA 11.8-capable). */
export const GPU_INSTANCES: Readonly<Record<string, GpuInstance>> = {
  'g4dn.xlarge': { onDemand: 0.526, gpus: 1, gpu: 'T4', vcpus: 4, memoryGiB: 16 },
  'g4dn.2xlarge': { onDemand: 0.752, gpus: 1, gpu: 'T4', vcpus: 8, memoryGiB: 32 },
  'g4dn.4xlarge': { onDemand: 1.204, gpus: 1, gpu: 'T4', vcpus: 16, memoryGiB: 64 },
  'g4dn.8xlarge': { onDemand: 2.176, gpus: 1, gpu: 'T4', vcpus: 32, memoryGiB: 128 },
  'g4dn.12xlarge': { onDemand: 3.912, gpus: 4, gpu: 'T4', vcpus: 48, memoryGiB: 192 },
  'g5.xlarge': { onDemand: 1.006, gpus: 1, gpu: 'A10G', vcpus: 4, memoryGiB: 16 },
  'g5.2xlarge': { onDemand: 1.212, gpus: 1, gpu: 'A10G', vcpus: 8, memoryGiB: 32 },
  'g5.4xlarge': { onDemand: 1.624, gpus: 1, gpu: 'A10G', vcpus: 16, memoryGiB: 64 },
  'g5.12xlarge': { onDemand: 5.672, gpus: 4, gpu: 'A10G', vcpus: 48, memoryGiB: 192 },
  'g6.xlarge': { onDemand: 0.8048, gpus: 1, gpu: 'L4', vcpus: 4, memoryGiB: 16 },
  'g6.2xlarge': { onDemand: 0.9776, gpus: 1, gpu: 'L4', vcpus: 8, memoryGiB: 32 },
  'g6.4xlarge': { onDemand: 1.3232, gpus: 1, gpu: 'L4', vcpus: 16, memoryGiB: 64 },
  'p3.2xlarge': { onDemand: 3.06, gpus: 1, gpu: 'V100', vcpus: 8, memoryGiB: 61 },
};

/** Spot price as a fraction of on-demand (long-run average for G instances; an assumption). */
export const DEFAULT_SPOT_FRACTION = 0.35;

/** Lambda on x86_64 / arm64: $ per GB-second and per million requests. */
export const LAMBDA_PRICES = {
  x86_64: { perGbSecond: 0.0000166667, perMillionRequests: 0.2 },
  arm64: { perGbSecond: 0.0000133334, perMillionRequests: 0.2 },
} as const;

/** Lambda allocates one vCPU-equivalent per 1,769 MB of memory (AWS documentation). */
export const LAMBDA_MB_PER_VCPU = 1769;

/** Amazon Rekognition DetectLabels, first pricing tier: $1.00 per 1,000 images. */
export const REKOGNITION_PER_MILLION = 1000;

/** S3 Standard request prices, us-east-1: $ per million GET-class and PUT-class (PUT, COPY, tagging) requests. */
export const S3_REQUEST_PRICES = { get: 0.4, put: 5.0 } as const;
/** SQS requests, $ per million: three per image (send, receive, delete), priced as before at the standard queue's $0.40. */
export const SQS_PER_MILLION = 0.4;

/**
 * Per-image request charges of the pipeline itself ($ per million images), by write-back mode:
 * every mode has the router's ranged GET, the worker's GET and three SQS requests (send, receive,
 * delete); `metadata` adds the CopyObject, `tags` GetObjectTagging + PutObjectTagging, `both` all
 * three, `index` nothing on S3 (the index's own writes are priced by indexPerMillion).
 */
export function writeBackRequestsPerMillion(mode: 'metadata' | 'tags' | 'both' | 'index'): number {
  const base = 2 * S3_REQUEST_PRICES.get + 3 * SQS_PER_MILLION;
  const copy = S3_REQUEST_PRICES.put;
  const tags = S3_REQUEST_PRICES.get + S3_REQUEST_PRICES.put;
  return base + (mode === 'metadata' ? copy : mode === 'tags' ? tags : mode === 'both' ? copy + tags : 0);
}

/** The metadata mode's figure (the default): $7.00. */
export const PIPELINE_REQUESTS_PER_MILLION = writeBackRequestsPerMillion('metadata');

/** DynamoDB on-demand, us-east-1: $ per million write and read request units; storage $ per GB-month (with PITR). */
export const DYNAMODB_PRICES = { perMillionWrites: 0.625, perMillionReads: 0.125, storagePerGbMonth: 0.25, pitrPerGbMonth: 0.2 } as const;

/**
 * Amazon S3 Vectors, us-east-1 (similar images, issue 23; pipeline/aws/s3-vectors.ts): storage per
 * logical GB-month, writes per logical GB put, queries per million calls plus per TB of data
 * processed, which is the queried index's vectors (data, key and filterable metadata) times their
 * number, the first 100,000 vectors of an index at one rate and the rest at another. Checked on
 * 2026-12-07 against what pages quoting the S3 pricing page say (2025-12 general availability to
 * 2026-09): storage, PUT and per-call figures agree across them; the per-TB rates are the launch
 * figures and were not found in a primary source here (unverified), and on 2026-06-16 AWS cut the
 * rate for indexes over 10 million vectors by up to 80 % (so past that size this overstates).
 */
export const S3_VECTORS_PRICES = {
  asOf: '2026-09 (us-east-1; per-TB query rates unverified)',
  storagePerGbMonth: 0.06,
  putPerGb: 0.2,
  queryPerMillionCalls: 2.5,
  queryPerTbFirst100k: 0.004,
  queryPerTbOver100k: 0.002,
} as const;

/**
 * Logical bytes of one vector as S3 Vectors bills them, as pipeline/aws/s3-vectors.ts stores it: 4 per
 * dimension, the 64-character key (a SHA-256 in hex), filterable metadata (bucket, space, the key's
 * folders: about 100 bytes) and non-filterable metadata (the S3 key and ETag: about 110 bytes).
 */
export function vectorLogicalBytes(o: { dimension: number; keyBytes?: number; filterableBytes?: number; otherMetadataBytes?: number }): {
  stored: number;
  /** What a query processes per vector: data, key and filterable metadata. */
  processed: number;
} {
  const processed = 4 * o.dimension + (o.keyBytes ?? 64) + (o.filterableBytes ?? 100);
  return { processed, stored: processed + (o.otherMetadataBytes ?? 110) };
}

export interface VectorCost {
  /** Logical GB stored for `images` vectors. */
  storedGb: number;
  /** $ a month to keep them. */
  storagePerMonth: number;
  /** $ once, to write them (a backfill or the uploads themselves; an overwrite writes again). */
  writes: number;
  /** $ for one million similarity queries against an index holding them (`effitag similar`; `dupes` makes one per image). */
  perMillionQueries: number;
}

/** What S3 Vectors costs for `images` images with one `dimension`-wide vector each (one model's index). */
export function vectorCost(images: number, dimension: number, prices: typeof S3_VECTORS_PRICES = S3_VECTORS_PRICES): VectorCost {
  const size = vectorLogicalBytes({ dimension });
  const storedGb = (images * size.stored) / 1e9;
  const first = Math.min(images, 100_000);
  const perQueryTb =
    (first * size.processed * prices.queryPerTbFirst100k + (images - first) * size.processed * prices.queryPerTbOver100k) / 1e12;
  return {
    storedGb,
    storagePerMonth: storedGb * prices.storagePerGbMonth,
    writes: storedGb * prices.putPerGb,
    perMillionQueries: prices.queryPerMillionCalls + 1e6 * perQueryTb,
  };
}

/**
 * What the stack costs while nothing is uploaded, us-east-1 list prices, $ per month: a
 * standard-resolution CloudWatch alarm is billed per metric it reads (a metric-math alarm on
 * visible + in-flight reads two), a dashboard $3 (an account's first 3 are free, as are its first 10
 * alarm metrics), a customer-managed KMS key $1.
 */
export const IDLE_PRICES = {
  alarmMetricPerMonth: 0.1,
  dashboardPerMonth: 3,
  kmsKeyPerMonth: 1,
  /** ECS managed scaling: a target-tracking policy on CapacityProviderReservation, two alarms (high, low) per capacity provider. */
  ecsAlarmsPerCapacityProvider: 2,
  /** SQS requests, $ per million: standard and FIFO queues (an account's first million a month are free). */
  sqsStandardPerMillion: 0.4,
  sqsFifoPerMillion: 0.5,
  /**
   * ReceiveMessage calls a Lambda SQS event source makes on an idle queue, per month: it keeps about
   * five 20-second long polls open (an estimate from AWS's description of its pollers, not a bill).
   */
  idlePollsPerMonth: 5 * 3 * 60 * 24 * 30,
} as const;

/** Inference speed class of each GPU (T4 < V100 < A10G ≈ L4), so no alternative is a slower GPU. */
const GPU_CLASS: Record<string, number> = { T4: 1, V100: 2, A10G: 3, L4: 3 };

/**
 * Spot alternatives to a GPU instance type: the known types with as many GPUs, a GPU at least as
 * fast, at least its vCPUs and memory (the task's reservation still fits), at most `maxPriceRatio` ×
 * its on-demand price; cheapest first, four at most. More pools make a spot request far less likely
 * to find no capacity.
 */
export function spotAlternatives(instanceType: string, maxPriceRatio = 2): string[] {
  const base = GPU_INSTANCES[instanceType];
  if (!base) return [];
  return Object.entries(GPU_INSTANCES)
    .filter(
      ([name, i]) =>
        name !== instanceType &&
        i.gpus === base.gpus &&
        (GPU_CLASS[i.gpu] ?? 0) >= (GPU_CLASS[base.gpu] ?? 0) &&
        i.vcpus >= base.vcpus &&
        i.memoryGiB >= base.memoryGiB &&
        i.onDemand <= base.onDemand * maxPriceRatio,
    )
    .sort(([, a], [, b]) => a.onDemand - b.onDemand)
    .slice(0, 4)
    .map(([name]) => name);
}

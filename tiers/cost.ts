/**
 * `effitag tiers cost`: estimated $ per million images for each tier and variant, next to Amazon
 * Rekognition. GPU: instance $/hour ÷ images/hour at full utilisation. Lambda: GB-seconds per image
 * plus the request charge per batch. Throughput comes from the tier's `throughput` (configuration)
 * or, for CPU tiers on onnxruntime, from the benchmark JSON scaled to the function's vCPUs.
 *
 * Decoding is priced too. A worker decodes every image on its CPUs: on a CPU tier it shares them
 * with inference (6 of the 28–32 CPU-ms per 640×480 photo in the pipeline benchmark), and on a GPU
 * tier it bounds how fast images reach the GPU. Its cost grows with the image's compressed size (a
 * 12-megapixel photo takes about nine times a 640×480 one), so it is fitted on the benchmark's sizes
 * and priced at the size the caller knows (a backfill dry run measures its objects) or a reference.
 */
import { fileURLToPath } from 'node:url';
import { readFileSync } from 'node:fs';
import {
  DEFAULT_SPOT_FRACTION,
  GPU_INSTANCES,
  LAMBDA_MB_PER_VCPU,
  LAMBDA_PRICES,
  DYNAMODB_PRICES,
  IDLE_PRICES,
  writeBackRequestsPerMillion,
  PRICE_LIST_DATE,
  REKOGNITION_PER_MILLION,
  S3_VECTORS_PRICES,
  vectorCost,
  type VectorCost,
} from './prices.ts';
import { decodeVariant, roundFilters } from '../model/spec.ts';
import { TAG_HIERARCHY } from '../model/tag-hierarchy.ts';
import { modelFor, type Tier, type TiersFile } from './schema.ts';

export interface BenchRow {
  engine: string;
  variant: string;
  batch: number;
  imagesPerSecond: number;
}
export interface DecodeRow {
  source: string;
  inFlight: number;
  /** Wall time per image. */
  msPerImage: number;
  /** The JPEG's size. */
  bytes?: number;
  /** CPU time per image, all threads. */
  cpuMsPerImage?: number;
}
/**
 * The engine figures `tiers cost` and `backfill --dry-run` price with unless told otherwise: a
 * committed copy of one `npm run bench -- engines` run, with the machine it ran on, so every quoted
 * cost is reproducible from the repository (bench/results/ holds fresh, untracked runs).
 */
export const REFERENCE_BENCH = fileURLToPath(new URL('../bench/reference/engines.json', import.meta.url));

export interface BenchFile {
  machine?: { cpus?: number };
  rows: BenchRow[];
  decode?: DecodeRow[];
  /** The int8 engine over the float one, paired (bench/int8.ts), where the run measured it. */
  int8?: { rows: Int8Ratio[] };
  /** EfficientNet-Lite against B0's reference export (`npm run bench -- int8 --lite`), where the run measured it. */
  lite?: { rows: LiteRatio[] };
}

/** A variant's int8 speed-up: wall time, and (newer runs) CPU time per image, which other load on a shared host disturbs less. */
type Int8Ratio = { variant: string; int8OverFloat: number; int8OverFloatCpu?: number };

/** The committed int8 run (`npm run bench -- int8`): int8 tiers are priced as the float row × its ratio. */
export const REFERENCE_INT8 = fileURLToPath(new URL('../bench/reference/int8.json', import.meta.url));

function int8Speedup(bench: BenchFile | undefined, variant: string): number | undefined {
  let rows = bench?.int8?.rows;
  if (!rows) {
    try {
      rows = (JSON.parse(readFileSync(REFERENCE_INT8, 'utf8')) as { rows: Int8Ratio[] }).rows;
    } catch {
      return undefined;
    }
  }
  const row = rows.find((r) => r.variant === variant);
  return row?.int8OverFloatCpu ?? row?.int8OverFloat;
}

/**
 * A row of the Lite run: CPU time per image against the same reference export. For a Lite variant,
 * over B0's reference export in the same rounds (`referenceB0`); for B0, our float export over it.
 */
type LiteRatio = { variant: string; floatOverReferenceCpu?: number; floatOverReferenceB0Cpu?: number; int8OverReferenceB0Cpu?: number };

/**
 * How many times float B0's speed a Lite variant runs on `ort` (float, or its int8 model), from a Lite
 * run (the bench file's, else the committed `bench/reference/int8.json` `lite`): its CPU-time ratio
 * over B0's reference export (same rounds) divided by float B0's over that export (same run), so the
 * reference cancels. Lite has no engines row of its own; a Lite tier is priced as B0's row × this.
 * Undefined for a variant the run did not measure (it measured Lite0 only): never extrapolated.
 */
export function liteOverFloatB0(
  bench: BenchFile | undefined,
  variant: string,
  int8: boolean,
): { ratio: number; describe: string } | undefined {
  let rows = bench?.lite?.rows;
  let source = 'the bench file';
  if (!rows) {
    try {
      rows = (JSON.parse(readFileSync(REFERENCE_INT8, 'utf8')) as { lite?: { rows: LiteRatio[] } }).lite?.rows;
      source = 'bench/reference/int8.json lite';
    } catch {
      return undefined;
    }
  }
  const lite = rows?.find((r) => r.variant === variant);
  const b0 = rows?.find((r) => r.variant === 'b0')?.floatOverReferenceCpu;
  const overReference = int8 ? lite?.int8OverReferenceB0Cpu : lite?.floatOverReferenceB0Cpu;
  if (!overReference || !b0) return undefined;
  return {
    ratio: overReference / b0,
    describe: `b0's row × ${(overReference / b0).toFixed(2)} for ${variant}${int8 ? ' int8' : ''} (${overReference.toFixed(2)}× B0's reference export ÷ float b0's ${b0.toFixed(2)}×, CPU time, ${source})`,
  };
}

/** The Lite variants a Lite run measured (for the "unmeasured" note). */
function liteMeasured(bench: BenchFile | undefined): string[] {
  try {
    const rows =
      bench?.lite?.rows ?? (JSON.parse(readFileSync(REFERENCE_INT8, 'utf8')) as { lite?: { rows: LiteRatio[] } }).lite?.rows ?? [];
    return rows.filter((r) => r.floatOverReferenceB0Cpu !== undefined).map((r) => r.variant);
  } catch {
    return [];
  }
}

/**
 * A CPU tier's inference rate for one pass: the engines row of the variant (× the int8 ratio for an
 * int8 model), or for a Lite variant on `ort` without a row of its own, B0's row × the Lite run's
 * ratio. `unmeasured` says why there is none where the reason is known.
 */
function cpuRate(
  bench: BenchFile | undefined,
  engine: string,
  variant: string,
  int8: boolean,
  batch: number,
): { row?: BenchRow; speedup?: number; label?: string; unmeasured?: string } {
  const row = benchThroughput(bench, engine, variant, batch);
  if (row) {
    if (!int8) return { row, speedup: 1, label: '' };
    const speedup = int8Speedup(bench, variant);
    return speedup ? { row, speedup, label: ` int8, ${speedup.toFixed(2)}× float` } : {};
  }
  if (decodeVariant(variant).family !== 'lite') return {};
  const lite = engine === 'ort' ? liteOverFloatB0(bench, variant, int8) : undefined;
  const b0 = benchThroughput(bench, engine, 'b0', batch);
  if (lite && b0) return { row: b0, speedup: lite.ratio, label: `, ${lite.describe}` };
  const measured = liteMeasured(bench);
  return {
    unmeasured:
      engine !== 'ort'
        ? `${variant} on ${engine}: unmeasured (the Lite run measured ort only)`
        : `${variant}${int8 ? ' int8' : ''}: unmeasured (npm run bench -- int8 --lite measured ${measured.join(', ') || 'no Lite variant'}; no figure is extrapolated)`,
  };
}

export interface CostRow {
  tier: string;
  compute: string;
  variant: string;
  imagesPerSecond?: number;
  throughputSource?: string;
  dollarsPerHour?: number;
  dollarsPerMillion?: number;
  /** The tier's write-back mode, which decides the request charges. */
  writeBack?: Tier['writeBack'];
  /** S3 and SQS request charges of that mode. */
  requestsPerMillion?: number;
  /** The tag index's writes and reads (0 without an index). */
  indexPerMillion?: number;
  /** Compute plus the pipeline's S3, SQS and DynamoDB request charges. */
  allInPerMillion?: number;
  /** How many times cheaper than Rekognition (>1 = cheaper). */
  vsRekognition?: number;
  /**
   * A tier that tags with ImageNet and a custom model (`imagenet: true` beside `model`): its models,
   * and the inferences priced per image: 1 where the custom model is a head on the variant's own
   * pass (its dense head costs microseconds: not priced), 2 where it is not or was not checked.
   */
  models?: string[];
  passes?: 1 | 2;
  passNote?: string;
  note?: string;
}

export interface CostReport {
  rows: CostRow[];
  /** S3 Vectors per 1M images, for each model a tier with embeddings on stores vectors of (issue 23). */
  vectors: VectorRow[];
  rekognitionPerMillion: number;
  assumptions: string[];
}

export function readBenchFile(path: string): BenchFile {
  const parsed = JSON.parse(readFileSync(path, 'utf8')) as BenchFile;
  if (!Array.isArray(parsed.rows)) throw new Error(`${path}: not an engines benchmark result (no rows)`);
  return parsed;
}

/**
 * The benchmark row for an engine and variant at the batch size closest to the tier's, preferring the
 * configuration pipeline workers run (`ort-worker`) over the engine's default.
 */
function benchThroughput(bench: BenchFile | undefined, engine: string, variant: string, batch: number): BenchRow | undefined {
  const worker = bench?.rows.filter((r) => r.engine === `${engine}-worker` && r.variant === variant) ?? [];
  const rows = worker.length ? worker : (bench?.rows.filter((r) => r.engine === engine && r.variant === variant) ?? []);
  return rows.sort((a, b) => Math.abs(a.batch - batch) - Math.abs(b.batch - batch))[0];
}

/** CPU time to decode one image of a given compressed size, from the benchmark. */
export interface DecodeCost {
  msFor(bytes: number): number;
  /** The size priced when none is known: the benchmark's 1024×768 JPEG (0 in files that lack sizes). */
  referenceBytes: number;
  referenceSource: string;
  describe: string;
}

/**
 * Per benchmarked size, the CPU time of its busiest run (measured, or wall time × cores in files
 * without it), then a least-squares line through them: CPU-ms = a + b · MB.
 */
export function decodeCost(bench: BenchFile | undefined, cpus: number): DecodeCost | undefined {
  const bySource = new Map<string, { bytes?: number; ms: number; inFlight: number }>();
  for (const d of bench?.decode ?? []) {
    if (d.cpuMsPerImage === undefined && d.inFlight < cpus) continue; // wall time says nothing of CPU then
    const ms = d.cpuMsPerImage ?? d.msPerImage * cpus;
    const prev = bySource.get(d.source);
    if (!prev || d.inFlight > prev.inFlight) bySource.set(d.source, { bytes: d.bytes, ms, inFlight: d.inFlight });
  }
  const points = [...bySource.entries()].map(([source, p]) => ({ source, ...p }));
  if (!points.length) return undefined;
  const reference = points.find((p) => p.source.startsWith('1024×768')) ?? points[0];
  const sized = points.filter((p): p is typeof p & { bytes: number } => p.bytes !== undefined);
  if (sized.length < 2) {
    return {
      msFor: () => reference.ms,
      referenceBytes: reference.bytes ?? 0,
      referenceSource: reference.source,
      describe: `${reference.ms.toFixed(1)} CPU-ms per image (${reference.source}, any size)`,
    };
  }
  const mb = sized.map((p) => p.bytes / 1048576),
    ms = sized.map((p) => p.ms);
  const meanX = mb.reduce((a, b) => a + b, 0) / mb.length,
    meanY = ms.reduce((a, b) => a + b, 0) / ms.length;
  const slope = mb.reduce((acc, x, i) => acc + (x - meanX) * (ms[i] - meanY), 0) / mb.reduce((acc, x) => acc + (x - meanX) ** 2, 0);
  const intercept = meanY - slope * meanX;
  const smallest = Math.min(...ms);
  return {
    msFor: (bytes) => Math.max(smallest / 2, intercept + slope * (bytes / 1048576)),
    referenceBytes: reference.bytes ?? sized[0].bytes,
    referenceSource: reference.source,
    describe: `${intercept.toFixed(1)} + ${slope.toFixed(1)} CPU-ms per MB of JPEG (fitted on ${sized.map((p) => p.source.replace(' JPEG', '')).join(', ')})`,
  };
}

export interface CostOptions {
  /** The average compressed size of a tier's images, where known (a backfill dry run); else the reference size. */
  imageBytes?: (tier: string, variant: string) => number | undefined;
  /** Does the stack keep the tag index (default true, as it deploys)? */
  index?: boolean;
  /**
   * What the weights say of a custom model beside ImageNet's (`tiers cost --weights DIR`): whether it
   * is head-only on the variant's weights (one pass), and the base it runs on otherwise. Unknown
   * (undefined): two passes are priced, on the tier's variant.
   */
  customModel?: (model: string, variant: string) => { shared: boolean; variant: string } | undefined;
}

/**
 * Index entries per image when one class is written: the class, its rolled-up tags and the "all"
 * entry, averaged over ImageNet's classes (each further class written adds itself and the
 * ancestors it does not share).
 */
export const INDEX_ENTRIES_PER_IMAGE = 2 + TAG_HIERARCHY.classes.reduce((s, c) => s + c.tags.length, 0) / TAG_HIERARCHY.classes.length;

/**
 * Bytes DynamoDB bills per index item: 282 bytes of attributes on average (measured by
 * `npm run bench -- search`) plus its 100 bytes of per-item overhead.
 */
export const INDEX_ITEM_BYTES = 282 + 100;

/** Index storage per image, KB: its entries and its record. */
export const indexKbPerImage = (entries = INDEX_ENTRIES_PER_IMAGE) => ((entries + 1) * INDEX_ITEM_BYTES) / 1024;

/**
 * The tag index's request charges per million images: each entry and the object's record is one
 * write unit (items stay under 1 KB), the record read before writing is one read unit, and an
 * index-only tier reads the record once more before downloading (its "already tagged" check).
 */
export function indexPerMillion(mode: Tier['writeBack'], entries = INDEX_ENTRIES_PER_IMAGE): number {
  const writes = entries + 1;
  const reads = 1 + (mode === 'index' ? 1 : 0);
  return writes * DYNAMODB_PRICES.perMillionWrites + reads * DYNAMODB_PRICES.perMillionReads;
}

export function estimateCosts(config: TiersFile, bench?: BenchFile, options: CostOptions = {}): CostReport {
  const spotFraction = config.prices.spotFraction ?? DEFAULT_SPOT_FRACTION;
  const benchCpus = bench?.machine?.cpus ?? 2;
  const decode = decodeCost(bench, benchCpus);
  const rows: CostRow[] = [];
  for (const [tierName, tier] of Object.entries(config.tiers)) {
    for (const variant of tier.variants) {
      const row: CostRow = { tier: tierName, compute: '', variant, writeBack: tier.writeBack };
      /** Why a CPU tier has no benchmark figure, where known (a Lite variant the Lite run did not measure). */
      let unmeasured: string | undefined;
      const imageBytes = options.imageBytes?.(tierName, variant) ?? decode?.referenceBytes;
      const decodeMs = decode && imageBytes !== undefined ? decode.msFor(imageBytes) : undefined;
      const decoding =
        decodeMs === undefined
          ? undefined
          : imageBytes
            ? `decoding ${Math.round(imageBytes / 1024)} KB images`
            : `decoding a ${decode?.referenceSource}`;
      // A tier tagging with ImageNet and a custom model: one pass when the custom model is a head on
      // this variant's weights, else a second inference on the custom model's base.
      const custom = tier.model && tier.imagenet ? tier.model : undefined;
      const known = custom ? options.customModel?.(custom, variant) : undefined;
      const secondPass = custom && !known?.shared ? { variant: known?.variant ?? variant } : undefined;
      if (custom) {
        row.models = [variant, custom];
        row.passes = secondPass ? 2 : 1;
        row.passNote = !secondPass
          ? `1 pass: ${custom} is a head on ${variant}'s weights`
          : known
            ? `2 passes: ${custom} is not head-only on ${variant}'s weights (${secondPass.variant} pass of its own)`
            : `2 passes priced: whether ${custom} shares ${variant}'s pass is unchecked (--weights DIR checks it)`;
      }
      const single = tier.throughput?.[variant];
      // Two passes: images/s of both in turn (the second at its base's configured rate, else the same).
      const configured = single && secondPass ? 1 / (1 / single + 1 / (tier.throughput?.[secondPass.variant] ?? single)) : single;
      if (tier.compute.target === 'ecs-gpu') {
        const { instanceType, capacity } = tier.compute;
        const onDemand = config.prices.instances[instanceType] ?? GPU_INSTANCES[instanceType]?.onDemand;
        row.compute = `${instanceType} ${capacity}`;
        row.dollarsPerHour = onDemand === undefined ? undefined : onDemand * (capacity === 'spot' ? spotFraction : 1);
        if (configured) {
          row.imagesPerSecond = configured;
          row.throughputSource = 'configuration';
        }
        // The GPU infers, but the task's vCPUs decode every image: past that rate the GPU waits.
        const vcpus = GPU_INSTANCES[instanceType]?.vcpus;
        const decodeBound = decodeMs && vcpus ? (vcpus * 1000) / decodeMs : undefined;
        if (row.imagesPerSecond && decodeBound && row.imagesPerSecond > decodeBound) {
          row.imagesPerSecond = decodeBound;
          row.throughputSource = `configuration ${configured}/s, capped by ${decoding} on ${vcpus} vCPUs`;
        }
        if (row.dollarsPerHour !== undefined && row.imagesPerSecond) {
          row.dollarsPerMillion = (row.dollarsPerHour / (row.imagesPerSecond * 3600)) * 1e6;
        }
      } else {
        const { memoryMb, architecture } = tier.compute;
        const vcpus = Math.min(6, memoryMb / LAMBDA_MB_PER_VCPU);
        row.compute = `Lambda ${memoryMb} MB ${architecture} (${vcpus.toFixed(2)} vCPU)`;
        if (configured) {
          row.imagesPerSecond = configured;
          row.throughputSource = 'configuration';
        } else {
          // An int8 model (`model: NAME-int8`, effitag weights quantize) runs the float row's network × the measured ratio
          // (beside ImageNet's, the custom model's own pass does); a Lite variant, B0's row × the Lite run's ratio.
          const int8 = !!tier.model?.endsWith('-int8');
          const first = cpuRate(bench, tier.engine, variant, int8 && !custom, tier.batchSize);
          const second = secondPass ? cpuRate(bench, tier.engine, secondPass.variant, int8, tier.batchSize) : undefined;
          const b = first.row;
          if (b && first.speedup && (!secondPass || (second?.row && second.speedup))) {
            // CPU-seconds per image: inference on all the benchmark's cores (each pass), plus decoding.
            const secondSeconds = second?.row && second.speedup ? benchCpus / (second.row.imagesPerSecond * second.speedup) : 0;
            const coreSeconds = benchCpus / (b.imagesPerSecond * first.speedup) + secondSeconds + (decodeMs ?? 0) / 1000;
            row.imagesPerSecond = vcpus / coreSeconds;
            row.throughputSource = `benchmark (${tier.engine}${first.label}, batch ${b.batch}, ${decoding ?? 'decoding not measured'}, ${benchCpus} cores → ${vcpus.toFixed(2)} vCPU)`;
          } else unmeasured = first.unmeasured ?? second?.unmeasured;
        }
        if (row.imagesPerSecond) {
          const price = LAMBDA_PRICES[architecture];
          const perImage =
            (1 / row.imagesPerSecond) * (memoryMb / 1024) * price.perGbSecond + price.perMillionRequests / 1e6 / tier.batchSize;
          row.dollarsPerMillion = perImage * 1e6;
        }
      }
      if (row.dollarsPerMillion !== undefined) {
        row.requestsPerMillion = writeBackRequestsPerMillion(tier.writeBack);
        row.indexPerMillion = options.index === false ? 0 : indexPerMillion(tier.writeBack);
        row.allInPerMillion = row.dollarsPerMillion + row.requestsPerMillion + row.indexPerMillion;
        row.vsRekognition = REKOGNITION_PER_MILLION / row.allInPerMillion;
      } else if (!row.imagesPerSecond)
        row.note = `no throughput${unmeasured ? `, ${unmeasured}` : ''}: set tiers.${tierName}.throughput.${secondPass && secondPass.variant !== variant ? `${variant} and .${secondPass.variant}` : variant}${unmeasured ? '' : ' or run npm run bench (ort)'}`;
      else row.note = 'no price for the instance type';
      rows.push(row);
    }
  }
  return {
    rows,
    vectors: vectorRows(config),
    rekognitionPerMillion: REKOGNITION_PER_MILLION,
    assumptions: [
      `instance prices: ${PRICE_LIST_DATE} list prices unless overridden in prices.instances`,
      `spot = ${Math.round(spotFraction * 100)} % of on-demand (prices.spotFraction); real spot prices move hourly`,
      'GPU tiers: full utilisation while running; nothing while idle (the pools scale to zero; the stack’s own idle cost is listed apart), start-up minutes are not counted',
      ...(decode ? [`GPU tiers: at most as many images/s as the instance's vCPUs decode`] : []),
      `Lambda: ${LAMBDA_PRICES.x86_64.perGbSecond} $/GB-s x86_64, ${LAMBDA_PRICES.arm64.perGbSecond} $/GB-s arm64, $0.20 per 1M requests, one request per batch`,
      `Lambda throughput: benchmark images/s scaled linearly from the benchmark machine's cores to memory/${LAMBDA_MB_PER_VCPU} vCPUs, with each image's decoding added`,
      decode
        ? `decoding: ${decode.describe}; images priced at ${options.imageBytes ? 'the sizes given' : `the benchmark's ${decode.referenceSource}${decode.referenceBytes ? ` (${Math.round(decode.referenceBytes / 1024)} KB)` : ''}`} (the "throughput from" column says which)`
        : 'decoding: not measured (run npm run bench); CPU tiers priced for inference alone',
      `all-in adds the pipeline's own requests per 1M images, by write-back mode: ranged GET + GET ($0.40 each) and 3 SQS requests ($0.40 each) always; metadata: CopyObject ($5.00) → $${writeBackRequestsPerMillion('metadata').toFixed(2)}; tags: GetObjectTagging + PutObjectTagging → $${writeBackRequestsPerMillion('tags').toFixed(2)}; both → $${writeBackRequestsPerMillion('both').toFixed(2)}; index: nothing on S3 → $${writeBackRequestsPerMillion('index').toFixed(2)}; "vs Rekognition" compares all-in`,
      options.index === false
        ? 'no tag index (effitag:index=false): nothing added'
        : `tag index (DynamoDB on demand, $${DYNAMODB_PRICES.perMillionWrites}/1M writes, $${DYNAMODB_PRICES.perMillionReads}/1M reads): ${INDEX_ENTRIES_PER_IMAGE.toFixed(1)} entries + 1 record written and 1 read per image (one class written; each further class adds 1–5 entries) → $${indexPerMillion('metadata').toFixed(2)}, index-only tiers $${indexPerMillion('index').toFixed(2)} (one more read); storage about ${indexKbPerImage().toFixed(1)} KB per image, $${((indexKbPerImage() / 1024 ** 2) * 1e6 * (DYNAMODB_PRICES.storagePerGbMonth + DYNAMODB_PRICES.pitrPerGbMonth)).toFixed(2)} per 1M images per month with point-in-time recovery`,
      ...(rows.some((r) => r.models)
        ? [
            "ImageNet + custom model tiers (imagenet: true): 2 inferences per image unless the custom model is head-only on the variant's weights (then 1, its dense head on the pooled features costs microseconds and is not priced); the index and requests are priced as for one model",
          ]
        : []),
      'not included: data transfer, CloudWatch logs and metrics, versioned-bucket storage of the copies',
      `Amazon Rekognition DetectLabels: $${REKOGNITION_PER_MILLION / 1000} per 1,000 images (first pricing tier)`,
    ],
  };
}

export interface VectorRow {
  tier: string;
  /** The model whose index the vectors go to (one index per model). */
  model: string;
  /** Its pooled-feature width: the vector's. */
  dimension: number;
  /** For 1M images, one vector each: storage a month, the writes once, and each million queries. */
  cost: VectorCost;
  pricesAsOf: string;
}

/**
 * The image embeddings' S3 Vectors cost per 1M images, per tier (with `embeddings` on, the default)
 * and model: a vector of the model's pooled-feature width (1,280 B0 … 2,560 B7; a custom model its
 * base's) per image. Not in all-in: storage is monthly, and queries are per use (`similar`, `dupes`).
 */
export function vectorRows(config: TiersFile, images = 1_000_000): VectorRow[] {
  const rows: VectorRow[] = [];
  for (const [tier, t] of Object.entries(config.tiers)) {
    if (t.embeddings === false) continue;
    for (const variant of t.variants) {
      const spec = decodeVariant(variant);
      // Lite's head stays 1,280 whatever its width (model/plan.ts, fixedStemHead).
      const dimension = spec.fixedStemHead ? 1280 : roundFilters(1280, spec.width, spec.roundFiltersBump);
      rows.push({ tier, model: modelFor(t, variant), dimension, cost: vectorCost(images, dimension), pricesAsOf: S3_VECTORS_PRICES.asOf });
    }
  }
  return rows;
}

/** What the stack keeps while nothing is uploaded: the part of its cost that does not scale to zero. */
export interface IdleResources {
  alarms: number;
  /** Metrics the alarms read: what CloudWatch bills. */
  alarmMetrics: number;
  dashboards: number;
  kmsKeys: number;
  /** GPU capacity providers with managed scaling: ECS adds two alarms each, outside the template. */
  capacityProviders: number;
  /** Lambda SQS event sources, which poll even an empty queue (standard: the intake; FIFO: CPU tiers). */
  standardQueuePollers: number;
  fifoQueuePollers: number;
  /** Where the counts come from. */
  source: string;
}

interface TemplateJson {
  Resources: Record<
    string,
    {
      Type: string;
      Properties?: {
        MetricName?: string;
        Metrics?: { MetricStat?: unknown }[];
        AutoScalingGroupProvider?: { ManagedScaling?: { Status?: string } };
        EventSourceArn?: unknown;
      };
    }
  >;
}

/** Counted in a synthesized template (`npx cdk synth`, then cdk.out/EffiTag.template.json). */
export function idleResourcesOfTemplate(template: TemplateJson, source = 'the synthesized template'): IdleResources {
  const of = (type: string) => Object.values(template.Resources ?? {}).filter((r) => r.Type === type);
  const alarms = of('AWS::CloudWatch::Alarm');
  const pollers = of('AWS::Lambda::EventSourceMapping');
  return {
    alarms: alarms.length,
    // A metric-math alarm is billed per metric it reads, not for its expression.
    alarmMetrics: alarms.reduce(
      (n, a) => n + (a.Properties?.MetricName ? 1 : (a.Properties?.Metrics ?? []).filter((m) => m.MetricStat).length),
      0,
    ),
    dashboards: of('AWS::CloudWatch::Dashboard').length,
    kmsKeys: of('AWS::KMS::Key').length,
    capacityProviders: of('AWS::ECS::CapacityProvider').filter(
      (c) => c.Properties?.AutoScalingGroupProvider?.ManagedScaling?.Status === 'ENABLED',
    ).length,
    // An event source names its queue's ARN; a FIFO queue's ends in .fifo.
    standardQueuePollers: pollers.filter((p) => !fifoSource(template, p)).length,
    fifoQueuePollers: pollers.filter((p) => fifoSource(template, p)).length,
    source,
  };
}

/** Does an event source mapping read a FIFO queue of the template (or a literal .fifo ARN)? */
function fifoSource(template: TemplateJson, mapping: { Properties?: { EventSourceArn?: unknown } }): boolean {
  const arn = mapping.Properties?.EventSourceArn as { 'Fn::GetAtt'?: [string, string] } | string | undefined;
  if (typeof arn === 'string') return arn.endsWith('.fifo');
  const queue = arn?.['Fn::GetAtt'] ? template.Resources[arn['Fn::GetAtt'][0]] : undefined;
  return (queue?.Properties as { FifoQueue?: boolean } | undefined)?.FifoQueue === true;
}

/**
 * What the stack creates for a tiers file, without synthesizing it (test/cdk-operations.test.ts holds
 * it equal to the synthesized template of every shipped tiers file): the intake DLQ's alarm; per tier
 * its DLQ and queue-age alarms; per GPU tier its backlog-scaling alarm (visible + in flight: two
 * metrics); one dashboard; the alarm topic's KMS key.
 */
export function idleResourcesOfTiers(config: TiersFile): IdleResources {
  const tiers = Object.values(config.tiers);
  const gpu = tiers.filter((t) => t.compute.target === 'ecs-gpu').length;
  return {
    alarms: 1 + 2 * tiers.length + gpu,
    alarmMetrics: 1 + 2 * tiers.length + 2 * gpu,
    dashboards: 1,
    kmsKeys: 1,
    capacityProviders: gpu,
    // The router polls the intake queue (standard); each CPU tier's Lambda polls its FIFO queue.
    standardQueuePollers: 1,
    fifoQueuePollers: tiers.filter((t) => t.compute.target === 'lambda-cpu').length,
    source: 'what the stack creates for this tiers file',
  };
}

export interface IdleCost {
  items: { what: string; count: number; dollarsPerMonth: number }[];
  dollarsPerMonth: number;
  source: string;
  notes: string[];
}

/** The idle resources priced (list prices, before CloudWatch's free tier). */
export function idleCost(r: IdleResources): IdleCost {
  const items = [
    { what: 'CloudWatch dashboard', count: r.dashboards, dollarsPerMonth: r.dashboards * IDLE_PRICES.dashboardPerMonth },
    {
      what: `CloudWatch alarms (${r.alarmMetrics} metrics)`,
      count: r.alarms,
      dollarsPerMonth: r.alarmMetrics * IDLE_PRICES.alarmMetricPerMonth,
    },
    { what: 'KMS key (alarm topic)', count: r.kmsKeys, dollarsPerMonth: r.kmsKeys * IDLE_PRICES.kmsKeyPerMonth },
    {
      what: 'ECS managed-scaling alarms (made by ECS, per GPU capacity provider)',
      count: r.capacityProviders * IDLE_PRICES.ecsAlarmsPerCapacityProvider,
      dollarsPerMonth: r.capacityProviders * IDLE_PRICES.ecsAlarmsPerCapacityProvider * IDLE_PRICES.alarmMetricPerMonth,
    },
    {
      what: 'SQS polls of empty queues by Lambda (estimate)',
      count: r.standardQueuePollers + r.fifoQueuePollers,
      dollarsPerMonth:
        (IDLE_PRICES.idlePollsPerMonth / 1e6) *
        (r.standardQueuePollers * IDLE_PRICES.sqsStandardPerMillion + r.fifoQueuePollers * IDLE_PRICES.sqsFifoPerMillion),
    },
  ];
  return {
    items,
    dollarsPerMonth: items.reduce((s, i) => s + i.dollarsPerMonth, 0),
    source: r.source,
    notes: [
      `list prices: $${IDLE_PRICES.dashboardPerMonth.toFixed(2)} per dashboard, $${IDLE_PRICES.alarmMetricPerMonth.toFixed(2)} per alarm metric, $${IDLE_PRICES.kmsKeyPerMonth.toFixed(2)} per KMS key, per month; an account's first 3 dashboards and 10 alarm metrics are free`,
      `Lambda's SQS pollers keep about five 20 s long polls open per queue: ~${(IDLE_PRICES.idlePollsPerMonth / 1e6).toFixed(2)} M requests a month each, inside an account's free million if nothing else uses it`,
      'not counted: the GPU image in the CDK bootstrap ECR repository ($0.10 per GB-month, several GB per image version, kept after cdk destroy; its size is unmeasured here), storage of the index and logs at their size, and Container Insights metrics (expected only while instances run; unverified)',
    ],
  };
}

/**
 * The tiers configuration: which EfficientNet variants, hardware and limits each cost tier uses,
 * and which tier an object goes to. Validated with zod; every error names its path
 * (`tiers.premium.variants[2]: unknown variant "b9"; known: …`).
 */
import { z } from 'zod';
import { decodeVariant, int8Base, isImagenetModel, isVariantName, LIBRARY_VARIANTS } from '../model/spec.ts';
import { GPU_INSTANCES } from './prices.ts';

const tierName = z
  .string()
  .regex(/^[a-z][a-z0-9-]{0,30}$/, 'tier names are lowercase letters, digits and dashes, starting with a letter (at most 31)');

/** A variant: an official name, `phi-X`, `custom-wW-dD-rR`, or an object with φ or (w, d, r) and its weights. */
export const variantSchema = z.union([
  z.string(),
  z.object({ phi: z.number().min(0).max(10), weights: z.string().min(1) }).strict(),
  z
    .object({
      width: z.number().positive(),
      depth: z.number().positive(),
      resolution: z.number().int().min(32).max(1024),
      weights: z.string().min(1),
    })
    .strict(),
]);

const lambdaCompute = z
  .object({
    target: z.literal('lambda-cpu'),
    memoryMb: z.number().int().min(512).max(10240),
    architecture: z.enum(['x86_64', 'arm64']).default('x86_64'),
    /**
     * Most concurrent invocations the tier's queue may drive: the tier's spend ceiling. Set on the SQS
     * event source (its maximum concurrency, 2–1000), not as reserved concurrency, which would throttle
     * received messages into the DLQ and take from the account's pool.
     */
    maxConcurrency: z.number().int().min(2, 'the SQS event source allows 2 to 1000 concurrent invocations').max(1000).default(10),
  })
  .strict();

const gpuCompute = z
  .object({
    target: z.literal('ecs-gpu'),
    instanceType: z.string(),
    capacity: z.enum(['spot', 'on-demand']).default('spot'),
    maxTasks: z.number().int().min(1).max(100),
    /**
     * Spot only: other instance types the group may launch when `instanceType` has no spot capacity.
     * Default: the known single-GPU types with at least its vCPUs and memory, at most twice its price.
     */
    alternativeInstanceTypes: z.array(z.string()).optional(),
  })
  .strict();

export const tierSchema = z
  .object({
    description: z.string().optional(),
    variants: z.array(variantSchema).min(1, 'a tier needs at least one variant'),
    /**
     * A custom model (`effitag train --name NAME`) to tag with instead of the ImageNet classifier:
     * its artifact sits in the weights catalog as NAME/. The tier then lists one variant, the model's base.
     */
    model: z
      .string()
      .regex(/^[a-z][a-z0-9-]{0,39}$/, 'model names are lowercase letters, digits and dashes, starting with a letter (at most 40)')
      .optional(),
    /**
     * With `model`: also tag with the ImageNet classifier of the chosen variant (`variants` then lists
     * ImageNet variants, as a tier without `model` does). Where the custom model is head-only on that
     * variant's very weights, one pass serves both (the head runs on the pass's pooled features); else
     * the tier runs two models. Default: false with `model` (its tags alone), true without.
     */
    imagenet: z.boolean().optional(),
    compute: z.discriminatedUnion('target', [lambdaCompute, gpuCompute]),
    engine: z.enum(['ort', 'tfjs']),
    batchSize: z.number().int().min(1).max(256),
    topK: z.number().int().min(1).max(20).default(5),
    minConfidence: z.number().min(0).max(1).default(0.1),
    limits: z
      .object({
        maxBytes: z
          .number()
          .int()
          .positive()
          .default(50 * 1024 * 1024),
        maxPixels: z.number().int().positive().default(100_000_000),
      })
      .strict()
      .default({ maxBytes: 50 * 1024 * 1024, maxPixels: 100_000_000 }),
    /**
     * Where results go: user metadata (a self-copy), object tags, both, or only the tag index
     * (`index`: the object is never rewritten). The index, where the stack has one, is written in every mode.
     */
    writeBack: z.enum(['metadata', 'tags', 'both', 'index']).default('metadata'),
    /** May objects be sent here by the `x-amz-meta-effitag-tier` override? */
    acceptsOverrides: z.boolean().default(false),
    /**
     * Store each image's embedding (the model's pooled features, from the same inference as its tags)
     * in the vector index, for `effitag similar`. Off: none stored, and an overwrite removes the old one.
     */
    embeddings: z.boolean().default(true),
    /** Images per second per variant on this tier's hardware, for `tiers cost` (else the benchmark JSON). */
    throughput: z.record(z.string(), z.number().positive()).optional(),
  })
  .strict();

const routeTarget = {
  tier: tierName,
  /** Tiers that objects matched here may request with `x-amz-meta-effitag-tier`. */
  allowOverrides: z.array(tierName).default([]),
};

export const ruleSchema = z
  .object({
    bucket: z.string().min(3).max(63).optional(),
    prefix: z.string().min(1, 'use routing.default for the empty prefix'),
    ...routeTarget,
  })
  .strict();

export const tiersFileSchema = z
  .object({
    $schema: z.string().optional(),
    version: z.literal(1),
    tiers: z.record(tierName, tierSchema),
    routing: z
      .object({
        default: z.object(routeTarget).strict(),
        rules: z.array(ruleSchema).default([]),
      })
      .strict(),
    prices: z
      .object({
        /** $ per hour on demand, by instance type (adds or overrides the defaults). */
        instances: z.record(z.string(), z.number().positive()).default({}),
        spotFraction: z.number().gt(0).max(1).optional(),
      })
      .strict()
      .default({ instances: {} }),
    /** How far below a variant's resolution an image's shorter side may be and still get it (0.1 = 10 %). */
    resolutionTolerance: z.number().min(0).max(0.5).default(0.1),
  })
  .strict();

/** What a tiers file says, validated, defaults filled: what the stack serialises for its runtimes. */
export type TiersInput = z.infer<typeof tiersFileSchema>;
export type TierInput = z.infer<typeof tierSchema>;
export type Rule = z.infer<typeof ruleSchema>;
export type VariantEntry = z.infer<typeof variantSchema>;
export type LambdaCompute = z.infer<typeof lambdaCompute>;
export type GpuCompute = z.infer<typeof gpuCompute>;

/**
 * A tier, resolved once by `parseTiers`: variants by canonical name (`b0`, `phi-1`, …), throughput
 * keyed the same way, and the hardware kind as the discriminant (`kind`), so consumers narrow a tier
 * with one `if` instead of re-reading its compute block.
 */
export type Tier = Omit<TierInput, 'variants' | 'throughput' | 'compute'> & {
  readonly name: string;
  /** Canonical variant names, in the file's order. */
  readonly variants: readonly string[];
  /** The models it tags with (weights must be published for each): its variants and/or its custom model. */
  readonly models: readonly string[];
  readonly throughput?: Readonly<Record<string, number>>;
} & ({ readonly kind: 'lambda-cpu'; readonly compute: LambdaCompute } | { readonly kind: 'ecs-gpu'; readonly compute: GpuCompute });

/** A tier of one hardware kind. */
export type TierOf<K extends Tier['kind']> = Extract<Tier, { kind: K }>;

/** A tiers file, validated and resolved: what every consumer receives; nothing downstream re-resolves. */
export interface TiersFile {
  /** The validated file, for serialising (the CDK stack passes it to the runtimes as EFFITAG_TIERS). */
  readonly input: TiersInput;
  readonly tiers: Readonly<Record<string, Tier>>;
  readonly routing: TiersInput['routing'];
  readonly prices: TiersInput['prices'];
  readonly resolutionTolerance: number;
  /** Every variant some tier can choose, canonical, first-listed first. */
  readonly variants: readonly string[];
  /** Every model some tier tags with: its variants, or its custom model's name (what weights must exist for). */
  readonly models: readonly string[];
  /**
   * The tiers that write back to the tag index only (`writeBack: index`): a stack, a worker or a
   * backfill serving them needs an index, since nothing of their results is on the objects.
   */
  readonly indexOnlyTiers: readonly string[];
}

/** Does the tier tag with the ImageNet classifier of its variants? (Without `model` always; with it, when `imagenet: true`.) */
export const tagsWithImagenet = (tier: Pick<Tier, 'model' | 'imagenet'>): boolean => !tier.model || tier.imagenet === true;

/**
 * The models a tier tags an image with, once the variant is chosen, in order: the ImageNet classifier
 * of that variant (unless the tier tags with its custom model alone), then its custom model. The
 * object's marker names them all (pipeline/marker.ts `combinedMarker`).
 */
export function modelsFor(tier: Pick<Tier, 'model' | 'imagenet'>, variant: string): string[] {
  return [...(tagsWithImagenet(tier) ? [variant] : []), ...(tier.model ? [tier.model] : [])];
}

/**
 * The first model a tier tags an image with (`modelsFor(tier, variant)[0]`): the one whose pass gives
 * the image's embedding, so the vector space is keyed by it: the ImageNet classifier where the tier
 * tags with ImageNet, else the custom model. Catalogs and weights are keyed by model.
 */
export function modelFor(tier: Pick<Tier, 'model' | 'imagenet'>, variant: string): string {
  return modelsFor(tier, variant)[0];
}

export interface ConfigIssue {
  path: string;
  message: string;
  severity: 'error' | 'warning';
}

/** `tiers.premium.variants[2]` from zod's path array. */
export function formatPath(path: readonly PropertyKey[]): string {
  return path.reduce<string>((s, p) => (typeof p === 'number' ? `${s}[${p}]` : s ? `${s}.${String(p)}` : String(p)), '');
}

const KNOWN_VARIANTS = `${LIBRARY_VARIANTS.join(', ')}, phi-X, custom-wW-dD-rR`;

/** Canonical variant name of a tier entry. */
function variantName(entry: VariantEntry): string {
  if (typeof entry === 'string') return decodeVariant(entry).variant;
  const { weights: _weights, ...args } = entry;
  return decodeVariant(args).variant;
}

/** Resolve a validated file (semantic checks passed, so every variant decodes). */
function resolveTiers(input: TiersInput): TiersFile {
  const tiers: Record<string, Tier> = {};
  for (const [name, t] of Object.entries(input.tiers)) {
    const variants = [...new Set(t.variants.map(variantName))];
    const throughput = t.throughput && Object.fromEntries(Object.entries(t.throughput).map(([k, v]) => [decodeVariant(k).variant, v]));
    const models = [...(tagsWithImagenet(t) ? variants : []), ...(t.model ? [t.model] : [])];
    const common = { ...t, name, variants, models, ...(throughput ? { throughput } : {}) };
    tiers[name] =
      t.compute.target === 'lambda-cpu'
        ? { ...common, kind: 'lambda-cpu', compute: t.compute }
        : { ...common, kind: 'ecs-gpu', compute: t.compute };
  }
  return {
    input,
    tiers,
    routing: input.routing,
    prices: input.prices,
    resolutionTolerance: input.resolutionTolerance,
    variants: [...new Set(Object.values(tiers).flatMap((t) => t.variants))],
    models: [...new Set(Object.values(tiers).flatMap((t) => t.models))],
    indexOnlyTiers: Object.values(tiers)
      .filter((t) => t.writeBack === 'index')
      .map((t) => t.name),
  };
}

/** Checks beyond the shape: names that must resolve, rules that must not collide. */
function semanticIssues(config: TiersInput): ConfigIssue[] {
  const issues: ConfigIssue[] = [];
  const error = (path: string, message: string) => issues.push({ path, message, severity: 'error' });
  const warn = (path: string, message: string) => issues.push({ path, message, severity: 'warning' });
  const tierNames = Object.keys(config.tiers);
  const known = new Set(tierNames);
  const instancePrices = {
    ...Object.fromEntries(Object.entries(GPU_INSTANCES).map(([k, v]) => [k, v.onDemand])),
    ...config.prices.instances,
  };

  for (const [name, tier] of Object.entries(config.tiers)) {
    const seen = new Set<string>();
    tier.variants.forEach((entry, i) => {
      const path = `tiers.${name}.variants[${i}]`;
      try {
        const v = variantName(entry);
        if (seen.has(v)) warn(path, `variant ${v} is listed twice`);
        seen.add(v);
        // A custom model carries its own weights, whatever its base. The library's named variants
        // (B0–B7, V2, and Lite0–4, whose weights come from `weights import --timm`) are published by name.
        if (typeof entry === 'string' && !LIBRARY_VARIANTS.includes(v) && !tier.model) {
          error(
            path,
            `custom variant "${entry}" needs its weights: write { "phi": X, "weights": "s3://…" } or { "width", "depth", "resolution", "weights" }`,
          );
        }
      } catch {
        // An int8 model is a tier's model, on its float variant: say how to write it.
        const base = typeof entry === 'string' ? int8Base(entry) : undefined;
        if (base !== undefined && isVariantName(base))
          error(path, `"${entry}" is an int8 model, not a variant: write "variants": ["${base}"], "model": "${entry}"`);
        else error(path, `unknown variant ${JSON.stringify(typeof entry === 'string' ? entry : entry)}; known: ${KNOWN_VARIANTS}`);
      }
    });
    if (tier.imagenet === false && !tier.model)
      error(`tiers.${name}.imagenet`, 'a tier without model tags with ImageNet; imagenet: false needs model: NAME (a custom model)');
    if (tier.model && tier.imagenet) {
      // An ImageNet classifier beside ImageNet's (b3, or b0's int8 model b0-int8) would tag twice with the same classes.
      if (isImagenetModel(tier.model))
        error(
          `tiers.${name}.model`,
          `"${tier.model}" is an ImageNet classifier; imagenet: true adds ImageNet's tags to a custom model's (effitag train --name)`,
        );
    } else if (tier.model) {
      if (tier.variants.length !== 1)
        error(`tiers.${name}.variants`, `a tier with model "${tier.model}" lists one variant, the base the model was trained on`);
      if (isVariantName(tier.model))
        error(`tiers.${name}.model`, `"${tier.model}" is a variant name; name custom models otherwise (effitag train --name)`);
    }
    if (tier.compute.target === 'ecs-gpu') {
      const it = tier.compute.instanceType;
      if (!(it in instancePrices)) {
        error(
          `tiers.${name}.compute.instanceType`,
          `unknown instance type "${it}"; known GPU types: ${Object.keys(GPU_INSTANCES).join(', ')} (add others under prices.instances)`,
        );
      }
      for (const [i, alt] of (tier.compute.alternativeInstanceTypes ?? []).entries()) {
        if (!(alt in GPU_INSTANCES))
          error(
            `tiers.${name}.compute.alternativeInstanceTypes[${i}]`,
            `unknown instance type "${alt}"; known GPU types: ${Object.keys(GPU_INSTANCES).join(', ')}`,
          );
      }
      if (tier.compute.alternativeInstanceTypes?.length && tier.compute.capacity !== 'spot') {
        warn(`tiers.${name}.compute.alternativeInstanceTypes`, 'used for spot capacity only; an on-demand tier launches its instanceType');
      }
      if (tier.engine === 'ort')
        warn(
          `tiers.${name}.engine`,
          `'ort' on a GPU tier runs on CPU unless the image installs onnxruntime's CUDA provider; 'tfjs' uses tfjs-node-gpu`,
        );
    } else if (tier.engine === 'tfjs') {
      warn(`tiers.${name}.engine`, `'tfjs' on a CPU tier is ~15× slower than 'ort'`);
    }
    if (tier.throughput) {
      for (const key of Object.keys(tier.throughput)) {
        try {
          const v = decodeVariant(key).variant;
          if (
            !tier.variants.some((e) => {
              try {
                return variantName(e) === v;
              } catch {
                return false;
              }
            })
          )
            warn(`tiers.${name}.throughput.${key}`, `${v} is not one of this tier's variants`);
        } catch {
          error(`tiers.${name}.throughput.${key}`, `unknown variant "${key}"`);
        }
      }
    }
  }

  const checkTarget = (path: string, target: { tier: string; allowOverrides: string[] }) => {
    if (!known.has(target.tier)) error(`${path}.tier`, `unknown tier "${target.tier}"; defined: ${tierNames.join(', ') || '(none)'}`);
    target.allowOverrides.forEach((t, i) => {
      if (!known.has(t)) error(`${path}.allowOverrides[${i}]`, `unknown tier "${t}"; defined: ${tierNames.join(', ')}`);
      else if (!config.tiers[t].acceptsOverrides)
        error(`${path}.allowOverrides[${i}]`, `tier "${t}" does not accept overrides (set tiers.${t}.acceptsOverrides: true)`);
    });
  };
  if (!known.has(config.routing.default.tier)) {
    error(
      'routing.default.tier',
      `missing default tier: "${config.routing.default.tier}" is not defined; defined: ${tierNames.join(', ') || '(none)'}`,
    );
  } else {
    checkTarget('routing.default', config.routing.default);
  }
  config.routing.rules.forEach((rule, i) => {
    const path = `routing.rules[${i}]`;
    checkTarget(path, rule);
    if (rule.prefix.startsWith('/')) warn(`${path}.prefix`, `S3 keys rarely start with '/': "${rule.prefix}" matches only keys that do`);
    // Longest prefix wins, so nested prefixes are fine; the same prefix twice for the same bucket is a conflict.
    config.routing.rules.slice(0, i).forEach((other, j) => {
      const sameScope = (rule.bucket ?? '*') === (other.bucket ?? '*');
      if (sameScope && other.prefix === rule.prefix) {
        error(
          `${path}.prefix`,
          `overlaps routing.rules[${j}]: both match prefix "${rule.prefix}"${rule.bucket ? ` in bucket ${rule.bucket}` : ''}; the later rule is unreachable`,
        );
      }
    });
    // A nested rule that sends objects where its parent already does changes nothing.
    const parent = config.routing.rules
      .filter(
        (o) =>
          o !== rule &&
          (o.bucket === undefined || o.bucket === rule.bucket) &&
          rule.prefix.startsWith(o.prefix) &&
          o.prefix !== rule.prefix,
      )
      .sort((a, b) => b.prefix.length - a.prefix.length)[0];
    const inherited = parent?.tier ?? config.routing.default.tier;
    if (
      inherited === rule.tier &&
      JSON.stringify(parent?.allowOverrides ?? config.routing.default.allowOverrides) === JSON.stringify(rule.allowOverrides)
    ) {
      warn(
        `${path}`,
        `redundant: objects under "${rule.prefix}" already go to tier "${rule.tier}"${parent ? ` by the rule for "${parent.prefix}"` : ' by default'}`,
      );
    }
  });
  return issues;
}

export class TiersConfigError extends Error {
  constructor(
    readonly issues: ConfigIssue[],
    readonly source: string,
  ) {
    super(
      `${source}: invalid tiers configuration:\n${issues
        .filter((i) => i.severity === 'error')
        .map((i) => `  ${i.path}: ${i.message}`)
        .join('\n')}`,
    );
    this.name = 'TiersConfigError';
  }
}

export interface ValidationResult {
  config?: TiersFile;
  issues: ConfigIssue[];
}

/** Validate parsed JSON: shape first, then meaning. Never throws. */
export function validateTiers(raw: unknown): ValidationResult {
  const parsed = tiersFileSchema.safeParse(raw);
  if (!parsed.success) {
    return {
      issues: parsed.error.issues.map((i) => ({ path: formatPath(i.path) || '(root)', message: i.message, severity: 'error' as const })),
    };
  }
  const issues = semanticIssues(parsed.data);
  return { config: issues.some((i) => i.severity === 'error') ? undefined : resolveTiers(parsed.data), issues };
}

/** Validate or throw a TiersConfigError listing every error with its path. */
export function parseTiers(raw: unknown, source = 'tiers'): TiersFile {
  const result = validateTiers(raw);
  if (!result.config) throw new TiersConfigError(result.issues, source);
  return result.config;
}

/**
 * The deployment contract: the environment variables the CDK stack gives every deployed runtime
 * (router and backfill Lambdas, CPU worker Lambdas, GPU containers). The constructs write them with
 * `encodeStackEnv`/`encodeTierEnv`; the runtimes read them with `runtimeConfig`/`workerConfig`.
 * One list of names (`ENV`, base/runtime-names.ts, where every layer can read it), one encoder, one
 * decoder: a variable cannot be written under one name and read under another, and the GPU
 * Dockerfile's defaults are checked against `ENV` by a test.
 */
import { ENV, type EnvName } from '../base/runtime-names.ts';
import type { EngineName } from '../inference/engine.ts';
import { parseTiers, type Tier, type TiersFile } from '../tiers/schema.ts';

/** Lambda environment variables are limited to 4 KB in all; the tiers file gets most of it. */
export const MAX_TIERS_ENV_BYTES = 3000;

/** What every deployed runtime of a stack shares. `queueUrls` is JSON text (in CDK, a token). */
export function encodeStackEnv(values: {
  tiers: TiersFile;
  queueUrlsJson: string;
  weightsLocation: string;
  indexTable?: string;
  vectorBucket?: string;
  logLevel?: string;
}): Record<string, string> {
  const tiersJson = JSON.stringify(values.tiers.input);
  if (tiersJson.length > MAX_TIERS_ENV_BYTES) {
    throw new Error(`the tiers configuration is ${tiersJson.length} bytes; at most ${MAX_TIERS_ENV_BYTES} fit a Lambda environment`);
  }
  return {
    [ENV.tiers]: tiersJson,
    [ENV.queueUrls]: values.queueUrlsJson,
    [ENV.weights]: values.weightsLocation,
    ...(values.indexTable ? { [ENV.indexTable]: values.indexTable } : {}),
    ...(values.vectorBucket ? { [ENV.vectorBucket]: values.vectorBucket } : {}),
    [ENV.logLevel]: values.logLevel ?? 'info',
  };
}

/** What one tier's workers add. */
export function encodeTierEnv(values: {
  tier: string;
  weightsDir?: string;
  cacheDir?: string;
  tfjsBackend?: string;
}): Record<string, string> {
  return {
    [ENV.tier]: values.tier,
    ...(values.weightsDir ? { [ENV.weightsDir]: values.weightsDir } : {}),
    ...(values.cacheDir ? { [ENV.cacheDir]: values.cacheDir } : {}),
    ...(values.tfjsBackend ? { [ENV.tfjsBackend]: values.tfjsBackend } : {}),
  };
}

export interface RuntimeConfig {
  tiers: TiersFile;
  queueUrls: Record<string, string>;
  weightsLocation: string;
  weightsDir: string;
  /** The tag index's table, when the stack has one. */
  indexTable?: string;
  /** The S3 Vectors bucket of the image embeddings, when the stack has one. */
  vectorBucket?: string;
  /** The tier this runtime serves (workers only). */
  tier?: string;
  /** How long a missing model is believed missing before its weights are looked for again. */
  weightsRecheckMs: number;
}

/** What a worker runtime needs beyond the shared configuration: its tier, resolved, and its engine. */
export interface WorkerConfig extends RuntimeConfig {
  tier: string;
  served: Tier;
  /** The tier's engine, unless EFFITAG_ENGINE overrides it. */
  engine: EngineName;
  tfjsBackend?: string;
  leaseSeconds: number;
}

function required(env: NodeJS.ProcessEnv, name: EnvName): string {
  const v = env[name];
  if (!v) throw new Error(`environment variable ${name} is not set (the CDK stack sets it)`);
  return v;
}

function json(env: NodeJS.ProcessEnv, name: EnvName): unknown {
  try {
    return JSON.parse(required(env, name));
  } catch (err) {
    if (err instanceof SyntaxError) throw new Error(`environment variable ${name} is not valid JSON: ${err.message}`);
    throw err;
  }
}

export function runtimeConfig(env: NodeJS.ProcessEnv = process.env): RuntimeConfig {
  const tiers = parseTiers(json(env, ENV.tiers), ENV.tiers);
  const queueUrls = json(env, ENV.queueUrls) as Record<string, string>;
  for (const t of Object.keys(tiers.tiers)) if (!queueUrls[t]) throw new Error(`${ENV.queueUrls} has no queue for tier ${t}`);
  const tier = env[ENV.tier];
  if (tier && !tiers.tiers[tier]) throw new Error(`${ENV.tier}=${tier} is not a configured tier`);
  return {
    tiers,
    queueUrls,
    weightsLocation: required(env, ENV.weights),
    weightsDir: env[ENV.weightsDir] ?? '/tmp/effitag-weights',
    indexTable: env[ENV.indexTable] || undefined,
    vectorBucket: env[ENV.vectorBucket] || undefined,
    tier,
    weightsRecheckMs: weightsRecheckMs(env),
  };
}

/** The recheck interval for weights not published yet (EFFITAG_WEIGHTS_RECHECK_SECONDS, default 60 s). */
export function weightsRecheckMs(env: NodeJS.ProcessEnv = process.env): number {
  const raw = env[ENV.weightsRecheckSeconds];
  if (raw === undefined || raw === '') return 60_000;
  const seconds = Number(raw);
  if (!(seconds > 0 && seconds <= 3600)) throw new Error(`${ENV.weightsRecheckSeconds}=${raw}: a number of seconds in (0, 3600]`);
  return seconds * 1000;
}

export function workerConfig(env: NodeJS.ProcessEnv = process.env): WorkerConfig {
  const config = runtimeConfig(env);
  const tier = required(env, ENV.tier);
  const served = config.tiers.tiers[tier];
  const engine = env[ENV.engine] ?? served.engine;
  if (engine !== 'ort' && engine !== 'tfjs') throw new Error(`${ENV.engine}=${engine}: choose ort or tfjs`);
  const leaseSeconds = Number(env[ENV.leaseSeconds] ?? 60);
  if (!(leaseSeconds > 0 && leaseSeconds <= 43_200))
    throw new Error(`${ENV.leaseSeconds}=${env[ENV.leaseSeconds]}: a number of seconds in (0, 43200]`);
  return { ...config, tier, served, engine, tfjsBackend: env[ENV.tfjsBackend], leaseSeconds };
}

/** The variants a set of tiers can choose (one tier's with `only`). */
export function variantsOf(tiers: TiersFile, only?: string): string[] {
  return only ? [...tiers.tiers[only].variants] : [...tiers.variants];
}

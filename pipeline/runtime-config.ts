/**
 * Deployed configuration, read from the environment the CDK stack sets:
 * - EFFITAG_TIERS: the validated tiers configuration (JSON), baked in at synth time;
 * - EFFITAG_QUEUE_URLS: tier name → task queue URL (JSON);
 * - EFFITAG_WEIGHTS: s3://bucket/prefix of the published weights;
 * - EFFITAG_TIER: the tier this worker serves (workers only);
 * - EFFITAG_WEIGHTS_DIR: local catalog directory (default /tmp/effitag-weights).
 */
import { parseTiers, variantName, type TiersFile } from '../tiers/schema.ts';

export interface RuntimeConfig {
  tiers: TiersFile;
  queueUrls: Record<string, string>;
  weightsLocation: string;
  weightsDir: string;
  tier?: string;
}

function required(env: NodeJS.ProcessEnv, name: string): string {
  const v = env[name];
  if (!v) throw new Error(`environment variable ${name} is not set (the CDK stack sets it)`);
  return v;
}

export function runtimeConfig(env: NodeJS.ProcessEnv = process.env): RuntimeConfig {
  const tiers = parseTiers(JSON.parse(required(env, 'EFFITAG_TIERS')), 'EFFITAG_TIERS');
  const queueUrls = JSON.parse(required(env, 'EFFITAG_QUEUE_URLS')) as Record<string, string>;
  for (const t of Object.keys(tiers.tiers)) if (!queueUrls[t]) throw new Error(`EFFITAG_QUEUE_URLS has no queue for tier ${t}`);
  const tier = env.EFFITAG_TIER;
  if (tier && !tiers.tiers[tier]) throw new Error(`EFFITAG_TIER=${tier} is not a configured tier`);
  return { tiers, queueUrls, weightsLocation: required(env, 'EFFITAG_WEIGHTS'), weightsDir: env.EFFITAG_WEIGHTS_DIR ?? '/tmp/effitag-weights', tier };
}

/** The variants a set of tiers can choose. */
export function variantsOf(tiers: TiersFile, only?: string): string[] {
  const names = only ? [only] : Object.keys(tiers.tiers);
  return [...new Set(names.flatMap((n) => tiers.tiers[n].variants.map(variantName)))];
}

/**
 * The embedded stack's names and defaults (ports, queue names, index table, tiers, weights folder,
 * credentials), the weights check at start, and a deployed runtime's wiring. Which stack a command
 * or runtime talks to, and its clients and ports, are pipeline/aws/stack-handle.ts's.
 */
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { cacheDir } from '../../model/cache-dir.ts';
import type { TiersFile } from '../../tiers/schema.ts';
import { MissingWeightsError, type Markers, weightsFix } from '../models.ts';
import type { Logger } from '../log.ts';
import { runtimeConfig, type RuntimeConfig } from '../runtime-config.ts';
import { type EmbeddedCredentials, readEmbeddedCredentials } from './local-credentials.ts';
import { handleFromEnvironment, type OpenStack, openStack } from './stack-handle.ts';

/**
 * The embedded stack's credentials: a random pair per data directory, kept in it owner-only; the
 * stand-ins accept requests signed with nothing else (pipeline/aws/local-credentials.ts).
 */
export { defaultDataDir, ensureEmbeddedCredentials, readEmbeddedCredentials, type EmbeddedCredentials } from './local-credentials.ts';

/**
 * The credentials of the embedded stack of EFFITAG_DATA_DIR (else .effitag/data), read from its data
 * directory each time they are used: what `effitag` commands sign with, and what tests get once their
 * stack is started (test/support/local-stack.ts points EFFITAG_DATA_DIR at it).
 */
export const EMBEDDED_CREDENTIALS: EmbeddedCredentials = {
  // Not frozen: the SDK notes on a credentials object where it came from ($source).
  get accessKeyId() {
    return readEmbeddedCredentials().accessKeyId;
  },
  get secretAccessKey() {
    return readEmbeddedCredentials().secretAccessKey;
  },
};

/**
 * The embedded stack's default ports (`effitag local` takes EFFITAG_S3_PORT / EFFITAG_SQS_PORT /
 * EFFITAG_DYNAMODB_PORT / EFFITAG_GALLERY_PORT instead); commands find the ports it runs on in its handle.
 */
export const EMBEDDED_PORTS = { s3: 4568, sqs: 4566, dynamodb: 4569, gallery: 4570, s3vectors: 4571 } as const;

/** The embedded stack's tag index table (a deployed stack's comes from its output IndexTable). */
export const INDEX_TABLE = 'effitag-index';

/** The embedded stack's tiers: B0 on the CPU engine. */
export const LOCAL_TIERS_FILE = fileURLToPath(new URL('../../tiers/local.json', import.meta.url));

/** Queue names the embedded stack creates (a deployed stack's names come from CloudFormation). */
export const QUEUE_NAMES = {
  intake: 'effitag-intake',
  intakeDeadLetters: 'effitag-intake-dlq',
  tier: (tier: string) => `effitag-${tier}.fifo`,
  tierDeadLetters: (tier: string) => `effitag-${tier}-dlq.fifo`,
} as const;

/** The weights catalog of the embedded stack and the CLI: the cache's `weights/` folder. */
export const defaultWeightsDir = (): string => join(cacheDir(), 'weights');

/** Which model is current for each variant: all the router and backfills need of the weights. */
export type { Markers };

/** The models' current markers from a weights location (pipeline/aws/stack-handle.ts). */
export { currentMarkers } from './stack-handle.ts';

/**
 * Which models the tiers can tag with lack weights. None at all: nothing could ever be tagged, an
 * error now (the embedded stack's first run fetches B0 on it). Some: logged, and their objects wait.
 */
export function checkWeights(tiers: TiersFile, models: Markers, log?: Logger): string[] {
  const missing: string[] = [];
  const lines: string[] = [];
  for (const [name, tier] of Object.entries(tiers.tiers)) {
    for (const m of tier.models) {
      try {
        models.marker(m);
      } catch (err) {
        if (!missing.includes(m)) missing.push(m);
        // With what to run: `weights fetch` for a Keras variant, `weights import --timm` for Lite, quantize for int8.
        lines.push(`${name}: ${(err as Error).message}; to provide it: ${weightsFix(models.location, m)}`);
      }
    }
  }
  if (missing.length && missing.length === tiers.models.length)
    throw new MissingWeightsError(`weights missing for the configured tiers:\n  ${lines.join('\n  ')}`);
  for (const line of lines)
    log?.log('warn', 'weights missing: objects of this model wait until they are in place', {
      detail: line,
      location: models.location,
    });
  return missing;
}

/** What every deployed entry point (Lambda handlers, GPU container) wires from its environment. */
export interface Deployed extends OpenStack {
  config: RuntimeConfig;
}

/** A deployed runtime's stack (pipeline/aws/stack-handle.ts `handleFromEnvironment`), opened. */
export function deployed<C extends RuntimeConfig>(
  env: NodeJS.ProcessEnv = process.env,
  config: C = runtimeConfig(env) as C,
): Deployed & { config: C } {
  return { ...openStack(handleFromEnvironment(env, config)), config };
}

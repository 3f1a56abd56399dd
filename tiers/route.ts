/**
 * Which tier an object goes to: the longest matching prefix rule (bucket-specific rules first among
 * equals), else the default; then the per-object override `x-amz-meta-effitag-tier`, honoured only
 * when the matched route lists that tier in `allowOverrides` and the tier accepts overrides.
 */
import type { Rule, TiersFile } from './schema.ts';

/** User-metadata key of the override (S3 returns it without the `x-amz-meta-` prefix, lowercased). */
export const OVERRIDE_METADATA_KEY = 'effitag-tier';

export interface RouteDecision {
  tier: string;
  /** The rule that matched, or `default`. */
  matched: string;
  rule?: Rule;
  override?: { requested: string; honoured: boolean; reason: string };
}

export function routeObject(
  config: TiersFile,
  object: { bucket?: string; key: string; metadata?: Record<string, string | undefined> },
): RouteDecision {
  let best: { rule: Rule; index: number } | undefined;
  config.routing.rules.forEach((rule, index) => {
    if (rule.bucket !== undefined && rule.bucket !== object.bucket) return;
    if (!object.key.startsWith(rule.prefix)) return;
    const better =
      !best ||
      rule.prefix.length > best.rule.prefix.length ||
      (rule.prefix.length === best.rule.prefix.length && rule.bucket !== undefined && best.rule.bucket === undefined);
    if (better) best = { rule, index };
  });
  const target = best?.rule ?? config.routing.default;
  const matched = best
    ? `routing.rules[${best.index}] (prefix "${best.rule.prefix}"${best.rule.bucket ? `, bucket ${best.rule.bucket}` : ''})`
    : 'routing.default';
  const decision: RouteDecision = { tier: target.tier, matched, rule: best?.rule };

  const requested = lookupMetadata(object.metadata, OVERRIDE_METADATA_KEY)?.trim().toLowerCase();
  if (requested && requested !== target.tier) {
    if (!(requested in config.tiers)) {
      decision.override = { requested, honoured: false, reason: `no tier named "${requested}"` };
    } else if (!target.allowOverrides.includes(requested)) {
      decision.override = { requested, honoured: false, reason: `${matched} does not allow overrides to "${requested}"` };
    } else if (!config.tiers[requested].acceptsOverrides) {
      decision.override = { requested, honoured: false, reason: `tier "${requested}" does not accept overrides` };
    } else {
      decision.override = { requested, honoured: true, reason: `allowed by ${matched}` };
      decision.tier = requested;
    }
  }
  return decision;
}

/** Metadata lookup that tolerates the `x-amz-meta-` prefix and any case. */
function lookupMetadata(metadata: Record<string, string | undefined> | undefined, key: string): string | undefined {
  if (!metadata) return undefined;
  for (const [k, v] of Object.entries(metadata)) {
    const name = k.toLowerCase().replace(/^x-amz-meta-/, '');
    if (name === key) return v;
  }
  return undefined;
}

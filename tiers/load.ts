/**
 * Where the tiers file comes from, first match wins: an explicit path (CLI `--tiers`, CDK `-c
 * effitag:tiersFile=…`), `EFFITAG_TIERS_FILE`, the `effitag:tiersFile` context in cdk.json, then the
 * shipped `tiers/defaults.json`.
 */
import { fileProblem, messageOf } from '../base/errors.ts';
import { readFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseTiers, type TiersFile } from './schema.ts';

export const SHIPPED_DEFAULTS = join(dirname(fileURLToPath(import.meta.url)), 'defaults.json');

export function resolveTiersPath(explicit?: string, env: NodeJS.ProcessEnv = process.env, cwd = process.cwd()): string {
  if (explicit) return resolve(cwd, explicit);
  if (env.EFFITAG_TIERS_FILE) return resolve(cwd, env.EFFITAG_TIERS_FILE);
  try {
    const cdk = JSON.parse(readFileSync(join(cwd, 'cdk.json'), 'utf8')) as { context?: Record<string, unknown> };
    const fromContext = cdk.context?.['effitag:tiersFile'];
    if (typeof fromContext === 'string') return resolve(cwd, fromContext);
  } catch {
    // no cdk.json here: fall through to the shipped defaults
  }
  return SHIPPED_DEFAULTS;
}

export function readTiersJson(path: string): unknown {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (err) {
    throw new Error(`cannot read tiers file ${path}: ${fileProblem(err)}`);
  }
  try {
    return JSON.parse(text);
  } catch (err) {
    throw new Error(`${path}: not valid JSON (${messageOf(err)})`);
  }
}

export function loadTiers(explicit?: string): { path: string; config: TiersFile } {
  const path = resolveTiersPath(explicit);
  return { path, config: parseTiers(readTiersJson(path), path) };
}

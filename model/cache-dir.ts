/** Where EffiTag caches downloads, converted weights and ONNX exports: `$EFFITAG_CACHE_DIR`, else `$XDG_CACHE_HOME/effitag`, else `~/.cache/effitag`. */
import { ENV } from '../base/runtime-names.ts';
import { homedir } from 'node:os';
import { join } from 'node:path';

export function cacheDir(env: NodeJS.ProcessEnv = process.env): string {
  const configured = env[ENV.cacheDir];
  if (configured) return configured;
  return join(env.XDG_CACHE_HOME || join(homedir(), '.cache'), 'effitag');
}

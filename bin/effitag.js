#!/usr/bin/env node
// Runs the TypeScript CLI through tsx's loader, so `npx effitag` works right after `npm ci`
// with no build step. Deployed code (Lambda, container) is bundled by esbuild instead.
import { register } from 'tsx/esm/api';

// The AWS SDK is pinned to releases that support Node 20 (see README); its notice that later
// releases need Node 22 is known and would otherwise print on every run.
const emitWarning = process.emitWarning.bind(process);
process.emitWarning = (warning, ...rest) => {
  if (String(warning?.message ?? warning).startsWith('NodeVersionSupportWarning')) return;
  emitWarning(warning, ...rest);
};

register();
await import('../cli/main.ts');

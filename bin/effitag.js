#!/usr/bin/env node
// Runs the TypeScript CLI through tsx's loader, so `npx effitag` works right after `npm ci`
// with no build step. Deployed code (Lambda, container) is bundled by esbuild instead.
import { register } from 'tsx/esm/api';
import './hide-node-notice.js';

register();
await import('../cli/main.ts');

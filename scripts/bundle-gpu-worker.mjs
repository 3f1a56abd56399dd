#!/usr/bin/env node
// Bundles the GPU worker (containers/gpu-worker/main.ts) with esbuild into <outDir>/worker.mjs, and
// `effitag train` (containers/gpu-worker/train.ts) into <outDir>/train.mjs, plus the onnxruntime
// thread script beside them. Used by the Dockerfile, the deploy rehearsal and the image test.
//   node scripts/bundle-gpu-worker.mjs <outDir>
import { copyFileSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { build } from 'esbuild';

const out = process.argv[2] ?? 'dist';
mkdirSync(out, { recursive: true });
await build({
  entryPoints: { worker: 'containers/gpu-worker/main.ts', train: 'containers/gpu-worker/train.ts' },
  bundle: true,
  platform: 'node',
  target: 'node22',
  format: 'esm',
  sourcemap: true,
  outdir: out,
  outExtension: { '.js': '.mjs' },
  logLevel: 'warning',
  // Installed in the image (native, or too large to bundle usefully).
  external: [
    '@tensorflow/tfjs-node-gpu',
    '@tensorflow/tfjs-node',
    '@tensorflow/tfjs',
    '@tensorflow/tfjs-backend-wasm',
    'onnxruntime-node',
    'sharp',
    'h5wasm',
  ],
  // CommonJS dependencies call require() (the AWS SDK) or read __dirname (libheif's WebAssembly
  // loader): give the ES module bundle both.
  banner: {
    js: [
      "import { createRequire as __effitagCreateRequire } from 'node:module';",
      "import { fileURLToPath as __effitagFileURLToPath } from 'node:url';",
      "import { dirname as __effitagDirname } from 'node:path';",
      'const require = __effitagCreateRequire(import.meta.url);',
      'const __filename = __effitagFileURLToPath(import.meta.url);',
      'const __dirname = __effitagDirname(__filename);',
    ].join(' '),
  },
});
copyFileSync('inference/ort-session-thread.mjs', join(out, 'ort-session-thread.mjs'));
console.log(`GPU worker and train bundles in ${out}`);

/**
 * esbuild options for the Lambda functions (NodejsFunction bundles with the local esbuild, no Docker).
 * CommonJS output, because the native modules come from a layer (/opt/nodejs/node_modules), which
 * Lambda resolves for require() through NODE_PATH but not for ES module imports. `import.meta.url`
 * is rewritten to the bundle's own file URL, and the onnxruntime thread script is copied beside it.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import * as lambda from 'aws-cdk-lib/aws-lambda';
import { NodejsFunction, OutputFormat, type BundlingOptions, type NodejsFunctionProps } from 'aws-cdk-lib/aws-lambda-nodejs';
import * as logs from 'aws-cdk-lib/aws-logs';
import type { Construct } from 'constructs';

export const REPO_ROOT = join(import.meta.dirname, '..', '..');

export const GPU_WORKER_DOCKERFILE = 'containers/gpu-worker/Dockerfile';

/** The GPU image's build-context rules (.dockerignore syntax), from the file beside its Dockerfile. */
export function gpuWorkerContextRules(): string[] {
  return readFileSync(join(REPO_ROOT, `${GPU_WORKER_DOCKERFILE}.dockerignore`), 'utf8')
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l && !l.startsWith('#'));
}

/** Provided by the CPU runtime layer, built for the function's architecture. */
export const LAYER_MODULES = ['onnxruntime-node', 'sharp'];

export function functionBundling(extra: { copyOrtThread?: boolean } = {}): BundlingOptions {
  return {
    format: OutputFormat.CJS,
    target: 'node24',
    minify: true,
    sourceMap: true,
    externalModules: [...LAYER_MODULES, '@tensorflow/tfjs-node', '@tensorflow/tfjs-node-gpu'],
    // The SDK goes into the bundle, pinned by our lockfile: the copy the Lambda runtime provides
    // changes without notice, and what the rehearsal runs must be what AWS runs.
    bundleAwsSDK: true,
    define: { 'import.meta.url': '__effitag_import_meta_url' },
    banner: "const __effitag_import_meta_url = require('url').pathToFileURL(__filename).href;",
    loader: { '.json': 'json' },
    commandHooks: {
      beforeBundling: () => [],
      beforeInstall: () => [],
      afterBundling: (inputDir: string, outputDir: string) =>
        extra.copyOrtThread ? [`cp "${join(inputDir, 'inference', 'ort-session-thread.mjs')}" "${outputDir}/ort-session-thread.mjs"`] : [],
    },
  };
}

/** An EffiTag Lambda: a file under functions/, bundled as above, Node 24, a month of logs. */
export function effitagFunction(
  scope: Construct,
  id: string,
  props: Omit<NodejsFunctionProps, 'entry' | 'bundling'> & { handlerFile: string; copyOrtThread?: boolean },
): NodejsFunction {
  const { handlerFile, copyOrtThread, ...rest } = props;
  return new NodejsFunction(scope, id, {
    entry: join(REPO_ROOT, 'functions', handlerFile),
    projectRoot: REPO_ROOT,
    depsLockFilePath: join(REPO_ROOT, 'package-lock.json'),
    runtime: lambda.Runtime.NODEJS_24_X,
    bundling: functionBundling({ copyOrtThread }),
    logGroup: new logs.LogGroup(scope, `${id}Logs`, { retention: logs.RetentionDays.ONE_MONTH }),
    ...rest,
  });
}

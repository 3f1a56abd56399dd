/**
 * A CPU tier: the worker as a Lambda function (bundled by esbuild), fed by the tier queue with
 * partial batch failure reporting. onnxruntime-node and sharp come from a layer built for the
 * function's architecture by layers/build.mjs during synth (local bundling, no Docker).
 */
import { AssetHashType, DockerImage, Duration, Size } from 'aws-cdk-lib';
import * as lambda from 'aws-cdk-lib/aws-lambda';
import { SqsEventSource } from 'aws-cdk-lib/aws-lambda-event-sources';
import type { NodejsFunction } from 'aws-cdk-lib/aws-lambda-nodejs';
import type * as sqs from 'aws-cdk-lib/aws-sqs';
import { Construct } from 'constructs';
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { encodeTierEnv } from '../../pipeline/runtime-config.ts';
import type { Tier, TierOf } from '../../tiers/schema.ts';
import { effitagFunction, REPO_ROOT } from './bundling.ts';
import { grantWorker, type WorkerResources } from './worker-permissions.ts';

/** Lambda timeout for one batch: cold start with weight download, then ~2 s per image, 60–900 s. */
export function lambdaBatchTimeout(tier: Tier): Duration {
  return Duration.seconds(Math.min(900, Math.max(60, 45 + 2 * Math.min(10, tier.batchSize))));
}

export class CpuRuntimeLayer extends Construct {
  readonly layer: lambda.LayerVersion;
  constructor(scope: Construct, id: string, props: { architecture: lambda.Architecture }) {
    super(scope, id);
    const arch = props.architecture.name; // x86_64 | arm64
    const source = join(REPO_ROOT, 'layers', 'cpu-runtime');
    const hash = createHash('sha256')
      .update(readFileSync(join(source, 'package.json')))
      .update(readFileSync(join(REPO_ROOT, 'layers', 'build.mjs')))
      .update(arch)
      .digest('hex');
    this.layer = new lambda.LayerVersion(this, 'Layer', {
      description: `EffiTag CPU runtime: onnxruntime-node + sharp for linux/${arch}`,
      compatibleRuntimes: [lambda.Runtime.NODEJS_24_X],
      compatibleArchitectures: [props.architecture],
      code: lambda.Code.fromAsset(source, {
        assetHash: hash,
        assetHashType: AssetHashType.CUSTOM,
        exclude: ['build'],
        bundling: {
          // Only used where local bundling is impossible; the local path needs just Node and npm.
          image: DockerImage.fromRegistry('public.ecr.aws/sam/build-nodejs22.x'),
          command: ['bash', '-c', `echo "build the layer locally: node layers/build.mjs ${arch} <dir>" && exit 1`],
          local: {
            tryBundle(outputDir: string) {
              execFileSync(process.execPath, [join(REPO_ROOT, 'layers', 'build.mjs'), arch, outputDir], { stdio: 'inherit' });
              return true;
            },
          },
        },
      }),
    });
  }
}

/** Properties of a {@link CpuTier}. */
export interface CpuTierProps extends WorkerResources {
  /** The tier's name in the tiers file. */
  readonly tierName: string;
  /** The tier, as `parseTiers` resolved it. */
  readonly tier: TierOf<'lambda-cpu'>;
  /** The tier's task queue (the function's event source). */
  readonly queue: sqs.IQueue;
  /** The runtime contract's environment (pipeline/runtime-config.ts `encodeStackEnv`). */
  readonly environment: Record<string, string>;
  /** The onnxruntime/sharp layer for the function's architecture. */
  readonly layer: lambda.ILayerVersion;
}

export class CpuTier extends Construct {
  readonly fn: NodejsFunction;
  constructor(scope: Construct, id: string, props: CpuTierProps) {
    super(scope, id);
    const { tier } = props;
    const architecture = tier.compute.architecture === 'arm64' ? lambda.Architecture.ARM_64 : lambda.Architecture.X86_64;
    this.fn = effitagFunction(this, 'Worker', {
      handlerFile: 'worker.ts',
      copyOrtThread: true,
      architecture,
      memorySize: tier.compute.memoryMb,
      timeout: lambdaBatchTimeout(tier),
      // Weights and the exported ONNX graph live in /tmp (B7: ~270 MB each).
      ephemeralStorageSize: Size.mebibytes(2048),
      environment: {
        ...props.environment,
        ...encodeTierEnv({ tier: props.tierName, weightsDir: '/tmp/effitag-weights', cacheDir: '/tmp/effitag-cache' }),
      },
      layers: [props.layer],
      description: `EffiTag ${props.tierName} tier worker (CPU, onnxruntime)`,
    });
    // The spend ceiling is the event source's maximum concurrency, not reserved concurrency: with
    // reserved concurrency the poller keeps receiving while invocations are throttled, each throttle
    // burns a receive, and messages reach the DLQ without ever running (and reserving takes from the
    // account's pool, which a new account's quota of 10 cannot give).
    this.fn.addEventSource(
      new SqsEventSource(props.queue, {
        batchSize: Math.min(10, tier.batchSize),
        reportBatchItemFailures: true,
        maxConcurrency: tier.compute.maxConcurrency,
      }),
    );
    grantWorker(this.fn, { ...props, index: props.index });
  }
}
